from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from microagent import Catalog

from . import redis_cluster
from .backends import BackendSpec, all_backends

BACKENDS = all_backends()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--slow', action='store_true', help='run long soak and fault tests')
    parser.addoption('--backend', action='append', default=[], help='run the contract suite on these only')
    parser.addoption('--install', action='store_true',
                     help='run the install tests (tests/test_install.py) even where a pass is cached')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption('--slow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --slow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if 'backend' in metafunc.fixturenames:
        chosen = metafunc.config.getoption('--backend')
        specs = [b for b in BACKENDS if not chosen or b.name in chosen]
        metafunc.parametrize('backend', specs, ids=[b.name for b in specs], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> BackendSpec:
    spec: BackendSpec = request.param
    spec.prepare()
    if spec.patch is not None:
        spec.patch(monkeypatch)
    return spec


@pytest.fixture(scope='session', autouse=True)
def redis_cluster_cleanup() -> Iterator[None]:
    """Stop the session's Redis Cluster (started on first use by the redis_cluster backend) at the end."""
    try:
        yield
    finally:
        redis_cluster.stop_shared()


@pytest.fixture
def catalog() -> Catalog:
    return Catalog()


@pytest.fixture
def uid() -> str:
    """A short unique suffix for names on shared servers."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """A list the test appends things to; each is closed (``await x.close()``) after it, newest first."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        await item.close()
