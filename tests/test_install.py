"""A user's install: ``pip install .`` / ``pip install '.[redis]'``... into a fresh virtualenv (not the dev one),
then the README's agent example, as written but for its backend's import and DSN, on the matching backend.

Each extra takes its own venv and a network install (~10-20 s), so a pass is remembered per source state
(``.cache/install/``, keyed by pyproject.toml, README.md and the package's files): locally an unchanged
tree is not installed again. Under ``CI=true``, or with ``--install``, every case runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .services import IN_CI, port_open, require_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / '.cache' / 'install'
# The names the example declares: made unique per run, so that the shared servers see only our own.
NAMES = ('statistic_collector', 'check_something', 'rpc_comments_count', 'user_updated', 'user_deleted', 'mailer')
README_IMPORT = 'from microagent.tools.redis import RedisSignalBus, RedisBroker'
README_BUS = "bus = RedisSignalBus('redis://localhost/7')"
README_BROKER = "broker = RedisBroker('redis://localhost/7')"

# extra -> (service port or None, import line, bus line, broker line)
CASES: dict[str, tuple[int | None, str, str, str]] = {
    '': (None, 'from microagent.tools.memory import MemorySignalBus, MemoryBroker',
         "bus = MemorySignalBus('memory://')", "broker = MemoryBroker('memory://')"),
    'redis': (6379, README_IMPORT, README_BUS, README_BROKER),
    'amqp': (5672, 'from microagent.tools.amqp import AMQPSignalBus, AMQPBroker',
             "bus = AMQPSignalBus('amqp://guest:guest@localhost:5672/')",
             # Its queues expire on the shared server a minute after the example.
             "broker = AMQPBroker('amqp://guest:guest@localhost:5672/', queue_expires=60)"),
    'kafka': (9092, 'from microagent.tools.memory import MemorySignalBus\n'
                    'from microagent.tools.kafka import KafkaBroker',
              "bus = MemorySignalBus('memory://')", "broker = KafkaBroker('kafka://127.0.0.1:9092')"),
    'nats': (4222, 'from microagent.tools.nats import NATSSignalBus, NATSBroker',
             "bus = NATSSignalBus('nats://127.0.0.1:4222')",
             "broker = NATSBroker('nats://127.0.0.1:4222', prefix='microagenttest')"),
    'postgres': (None, 'from microagent.tools.memory import MemorySignalBus, MemoryBroker\nimport asyncpg',
                 "bus = MemorySignalBus('memory://')", "broker = MemoryBroker('memory://')"),
    'metrics': (None, 'from microagent.tools.memory import MemorySignalBus, MemoryBroker\nimport prometheus_client',
                "bus = MemorySignalBus('memory://')", "broker = MemoryBroker('memory://')"),
    'docs': (None, 'from microagent.tools.memory import MemorySignalBus, MemoryBroker\nimport graphviz, yaml',
             "bus = MemorySignalBus('memory://')", "broker = MemoryBroker('memory://')"),
    'otel': (None, 'from microagent.tools.memory import MemorySignalBus, MemoryBroker\nimport opentelemetry.trace',
             "bus = MemorySignalBus('memory://')", "broker = MemoryBroker('memory://')"),
    'otel-export': (None, 'from microagent.tools.memory import MemorySignalBus, MemoryBroker\n'
                          'import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter',
                    "bus = MemorySignalBus('memory://')", "broker = MemoryBroker('memory://')"),
}


def readme_blocks() -> tuple[str, dict[str, list[dict[str, object]]]]:
    """The agent example and its declarations, from the README."""
    text = (ROOT / 'README.md').read_text()
    code = next(b for b in re.findall(r'```python\n(.*?)```', text, re.S) if 'class Agent(MicroAgent)' in b)
    declarations = next(b for b in re.findall(r'```json\n(.*?)```', text, re.S) if '"signals"' in b)
    return code, json.loads(declarations)


def fingerprint(extra: str) -> str:
    digest = hashlib.sha256(f'{extra}|{sys.version_info[:2]}'.encode())
    files = [ROOT / 'pyproject.toml', ROOT / 'README.md', *sorted((ROOT / 'microagent').rglob('*.py'))]
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b'\0' + path.read_bytes())
    return digest.hexdigest()[:24]


def example_for(extra: str, uid: str) -> tuple[str, str, str]:
    """The README example on *extra*'s backend with unique names; (code, signals.json, queues.json)."""
    _, imports, bus, broker = CASES[extra]
    code, declarations = readme_blocks()
    for needle in (README_IMPORT, README_BUS, README_BROKER):
        assert needle in code, f'the README example changed: {needle!r} is gone (update tests/test_install.py)'
    code = code.replace(README_IMPORT, imports).replace(README_BUS, bus).replace(README_BROKER, broker)
    signals = json.dumps({'signals': declarations['signals']})
    queues = json.dumps({'queues': declarations['queues']})
    for name in NAMES:
        pattern = re.compile(rf'\b{name}\b')
        code, signals, queues = (pattern.sub(f'{name}_{uid}', text) for text in (code, signals, queues))
    return code, signals, queues


def source_copy(target: Path) -> Path:
    """What a checkout holds for ``pip install .``: an in-tree build of the worktree itself would leave a
    ``build/`` behind whose stale modules a later build may pick up."""
    target.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / 'microagent', target / 'microagent', ignore=shutil.ignore_patterns('__pycache__'))
    return target


def run(args: list[str], cwd: Path, timeout: float) -> str:
    # Only the machine's environment: nothing of the dev venv (VIRTUAL_ENV, PATH entries) leaks in.
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME')}
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep) if '.venv' not in p)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f'{" ".join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}'
    return done.stdout


def forget_redis_keys(uid: str) -> None:
    import redis

    client = redis.Redis.from_url('redis://127.0.0.1:6379/7', socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f'*{uid}*', count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def wanted(extra: str, config: pytest.Config) -> bool:
    """Whether *extra*'s case runs: its service is up (else it skips or, under CI, fails) and no pass is cached."""
    port = CASES[extra][0]
    if port is not None and not port_open(port):
        return False
    return IN_CI or bool(config.getoption('--install')) or not (CACHE / fingerprint(extra)).exists()


def install(extra: str, where: Path) -> Path:
    """A fresh venv in *where* with ``pip install .[extra]`` run in a copy of the checkout; its python."""
    system_python = os.environ.get('MICROAGENT_TEST_PYTHON', 'python3')
    venv = where / 'venv'
    run([system_python, '-m', 'venv', str(venv)], where, 120)
    target = f'.[{extra}]' if extra else '.'
    pip = [str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
    run([*pip, target], source_copy(where / 'checkout'), 480)
    return venv / 'bin' / 'python'


@pytest.fixture(scope='module')
def installs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every selected case's install, started at once (mostly waiting on the network: side by side they take
    about as long as the slowest); each test waits for its own."""
    selected = {item.callspec.params['extra'] for item in request.session.items
                if getattr(item, 'originalname', '') == 'test_pip_install_then_the_readme_example'}
    extras = [extra for extra in CASES if extra in selected and wanted(extra, request.config)]
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix='pip-install') as pool:
        yield {extra: pool.submit(install, extra, tmp_path_factory.mktemp(f'install-{extra or "core"}'))
               for extra in extras}


@pytest.mark.install
@pytest.mark.timeout(900)
@pytest.mark.parametrize('extra', list(CASES), ids=[e or 'core' for e in CASES])
def test_pip_install_then_the_readme_example(extra: str, tmp_path: Path, request: pytest.FixtureRequest,
                                            installs: dict[str, Any]) -> None:
    port = CASES[extra][0]
    if port is not None:
        require_port(extra, port)
    if extra not in installs:
        pytest.skip('passed before on these sources (cached in .cache/install; --install or CI=true runs it)')
    python = installs[extra].result()
    uid = uuid.uuid4().hex[:8]
    code, signals, queues = example_for(extra, uid)
    work = tmp_path / 'example'
    work.mkdir()
    (work / 'example.py').write_text(code)
    (work / 'signals.json').write_text(signals)
    (work / 'queues.json').write_text(queues)
    try:
        out = run([str(python), 'example.py'], work, 120)
    finally:
        if extra == 'redis':
            forget_redis_keys(uid)
    assert "{'Agent.count': 42}" in out
    where = run([str(python), '-c', 'import microagent; print(microagent.__file__)'], work, 60)
    assert str(python.parent.parent) in where, f'microagent came from {where.strip()}, not the fresh venv'
    stamp = CACHE / fingerprint(extra)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f'{extra or "core"} passed\n')
