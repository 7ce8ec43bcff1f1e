"""Backends the shared contract suite runs over.

Each module here defines ``BACKEND = BackendSpec(...)``; conftest collects
them all. A backend joins the contract suite by adding its module.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from microagent import AbstractQueueBroker, AbstractSignalBus, Catalog


@dataclass(frozen=True)
class BackendSpec:
    """How to build a backend for a test.

    ``prepare()`` skips or fails the test when the service is not there.
    ``make_broker(catalog, **options)`` / ``make_bus(catalog, prefix)`` build
    objects bound to that catalog; ``None`` when the backend has no such part.
    ``slow_factor`` scales waits for backends with slower redelivery.
    ``patch(monkeypatch)``, when given, runs before each test (e.g. to take a fallback path).
    """

    name: str
    prepare: Callable[[], None]
    make_broker: Callable[..., AbstractQueueBroker] | None
    make_bus: Callable[[Catalog, str], AbstractSignalBus] | None
    slow_factor: float = 1.0
    extra: dict[str, Any] | None = None
    patch: Callable[[Any], None] | None = None


def all_backends() -> list[BackendSpec]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f'{__name__}.{info.name}')
        spec = getattr(module, 'BACKEND', None)
        if spec is not None:
            found.append(spec)
    order = ['memory', 'redis', 'redis_public', 'redis_cluster', 'amqp', 'amqp_plain', 'kafka', 'nats']
    return sorted(found, key=lambda s: order.index(s.name) if s.name in order else len(order))
