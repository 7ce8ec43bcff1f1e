"""Pick a backend class from a DSN scheme.

>>> bus_class('redis://localhost/7').__name__        # doctest: +SKIP
'RedisSignalBus'
>>> broker = make_broker('memory://')                # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import Any

from ._dsn import scheme_of
from .broker import AbstractQueueBroker
from .bus import AbstractSignalBus
from .exceptions import BackendNotInstalled, ConfigurationError

__all__ = ['broker_class', 'bus_class', 'import_backend', 'make_broker', 'make_bus']

# scheme -> (module, bus class or None, broker class, pip extra)
SCHEMES: dict[str, tuple[str, str | None, str, str]] = {
    'memory': ('microagent.tools.memory', 'MemorySignalBus', 'MemoryBroker', ''),
    'redis': ('microagent.tools.redis', 'RedisSignalBus', 'RedisBroker', 'redis'),
    'rediss': ('microagent.tools.redis', 'RedisSignalBus', 'RedisBroker', 'redis'),
    'amqp': ('microagent.tools.amqp', 'AMQPSignalBus', 'AMQPBroker', 'amqp'),
    'amqps': ('microagent.tools.amqp', 'AMQPSignalBus', 'AMQPBroker', 'amqp'),
    'kafka': ('microagent.tools.kafka', None, 'KafkaBroker', 'kafka'),
}


def import_backend(path: str) -> Any:
    """Import ``package.module.Class``; a missing client library names the pip extra."""
    module_name, _, attr = path.rpartition('.')
    if not module_name:
        raise ConfigurationError(f'backend {path!r} must be a dotted path module.Class')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = next((e for m, _, _, e in SCHEMES.values() if m == module_name and e), None)
        if extra and exc.name != module_name:
            raise BackendNotInstalled(f'{path} needs {exc.name!r}: pip install "microagent[{extra}]"') from exc
        raise ConfigurationError(f'backend {path!r}: cannot import {module_name!r} ({exc})') from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f'backend {path!r}: {module_name!r} has no {attr!r}') from None


def _entry(dsn: str) -> tuple[str, str | None, str, str]:
    scheme = scheme_of(dsn)
    if scheme not in SCHEMES:
        raise ConfigurationError(f'unknown DSN scheme {scheme!r}, expected one of {sorted(SCHEMES)}')
    return SCHEMES[scheme]


def bus_class(dsn: str) -> type[AbstractSignalBus]:
    """The signal bus class serving *dsn*."""
    module, bus, _, _ = _entry(dsn)
    if bus is None:
        raise ConfigurationError(f'no signal bus for {scheme_of(dsn)}:// (use redis, amqp or memory)')
    cls: type[AbstractSignalBus] = import_backend(f'{module}.{bus}')
    return cls


def broker_class(dsn: str) -> type[AbstractQueueBroker]:
    """The queue broker class serving *dsn*."""
    module, _, broker, _ = _entry(dsn)
    cls: type[AbstractQueueBroker] = import_backend(f'{module}.{broker}')
    return cls


def make_bus(dsn: str, **options: Any) -> AbstractSignalBus:
    """A signal bus for *dsn*: ``make_bus('redis://localhost/7', prefix='APP')``."""
    return bus_class(dsn)(dsn, **options)


def make_broker(dsn: str, **options: Any) -> AbstractQueueBroker:
    """A queue broker for *dsn*: ``make_broker('amqp://guest:guest@localhost/')``."""
    return broker_class(dsn)(dsn, **options)
