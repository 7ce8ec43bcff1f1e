from __future__ import annotations

import sys

import pytest

from microagent import BackendNotInstalled, ConfigurationError
from microagent._dsn import mask_dsn, mask_text
from microagent.backends import import_backend, make_broker, make_bus
from microagent.tools.memory import MemoryBroker, MemorySignalBus


def test_memory_by_scheme():
    assert isinstance(make_broker('memory://'), MemoryBroker)
    assert isinstance(make_bus('memory://x'), MemorySignalBus)


def test_unknown_scheme_and_paths():
    with pytest.raises(ConfigurationError, match="unknown DSN scheme 'mqtt'"):
        make_broker('mqtt://localhost')
    with pytest.raises(ConfigurationError, match='no signal bus'):
        make_bus('kafka://localhost:9092')
    with pytest.raises(ConfigurationError, match='dotted path'):
        import_backend('Broker')
    with pytest.raises(ConfigurationError, match='has no'):
        import_backend('microagent.tools.memory.Nope')
    with pytest.raises(ConfigurationError, match='cannot import'):
        import_backend('no_such_pkg.Broker')


def test_missing_client_library_names_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'redis', None)
    monkeypatch.setitem(sys.modules, 'redis.asyncio', None)
    monkeypatch.delitem(sys.modules, 'microagent.tools.redis', raising=False)
    for name in [m for m in sys.modules if m.startswith('microagent.tools.redis')]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(BackendNotInstalled, match=r'pip install "microagent\[redis\]"'):
        make_broker('redis://localhost/7')


def test_memory_needs_memory_dsn():
    with pytest.raises(ConfigurationError):
        MemoryBroker('redis://localhost')


def test_masking():
    assert mask_dsn('redis://:s3cret@localhost:6379/7') == 'redis://:***@localhost:6379/7'
    assert mask_dsn('amqp://guest:guest@h/') == 'amqp://guest:***@h/'
    assert mask_dsn('kafka://h1:9092,h2:9092') == 'kafka://h1:9092,h2:9092'
    assert mask_text('failed for s3cret at redis://:s3cret@h', 's3cret') == 'failed for *** at redis://:***@h'
    assert 's3cret' not in repr(MemoryBroker('memory://user:s3cret@x'))
