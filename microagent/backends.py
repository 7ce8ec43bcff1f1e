"""Pick a backend class from a DSN scheme: one table for buses, brokers and singleton leases.

>>> bus_class('memory://').__name__
'MemorySignalBus'
>>> make_broker('memory://')
<MemoryBroker memory://>
>>> lease_class('memory://').__name__
'MemoryLease'
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._dsn import scheme_of
from .exceptions import BackendNotInstalled, ConfigurationError

if TYPE_CHECKING:
    from .broker import AbstractQueueBroker
    from .bus import AbstractSignalBus
    from .lease import Lease

__all__ = ['SCHEMES', 'Backend', 'broker_class', 'bus_class', 'import_backend', 'lease_class', 'make_broker',
           'make_bus']


@dataclass(frozen=True)
class Backend:
    """Where a DSN scheme's classes live: ``module`` holds the bus (None: none), broker and lease classes."""

    module: str
    bus: str | None
    broker: str
    lease: str
    extra: str = ''


_MEMORY = Backend('microagent.tools.memory', 'MemorySignalBus', 'MemoryBroker', 'MemoryLease')
_REDIS = Backend('microagent.tools.redis', 'RedisSignalBus', 'RedisBroker', 'RedisLease', 'redis')
_AMQP = Backend('microagent.tools.amqp', 'AMQPSignalBus', 'AMQPBroker', 'AMQPLease', 'amqp')
_KAFKA = Backend('microagent.tools.kafka', None, 'KafkaBroker', 'KafkaLease', 'kafka')
_NATS = Backend('microagent.tools.nats', 'NATSSignalBus', 'NATSBroker', 'NATSLease', 'nats')

SCHEMES: dict[str, Backend] = {
    'memory': _MEMORY,
    'redis': _REDIS,
    'rediss': _REDIS,
    'redis+cluster': _REDIS,   # Redis Cluster: the same classes, routing by key (microagent.tools.redis._cluster)
    'rediss+cluster': _REDIS,
    'amqp': _AMQP,
    'amqps': _AMQP,
    'kafka': _KAFKA,
    'nats': _NATS,
    'tls': _NATS,
}


def import_backend(path: str) -> Any:
    """Import ``package.module.Class``; a missing client library names the pip extra."""
    module_name, _, attr = path.rpartition('.')
    if not module_name:
        raise ConfigurationError(f'backend {path!r} must be a dotted path module.Class')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = next((b.extra for b in SCHEMES.values() if module_name.startswith(b.module) and b.extra), None)
        if extra and exc.name is not None and not module_name.startswith(exc.name):
            raise BackendNotInstalled(f'{path} needs {exc.name!r}: pip install "microagent[{extra}]"') from exc
        raise ConfigurationError(f'backend {path!r}: cannot import {module_name!r} ({exc})') from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f'backend {path!r}: {module_name!r} has no {attr!r}') from None


def _entry(dsn: str) -> Backend:
    scheme = scheme_of(dsn)
    if scheme not in SCHEMES:
        raise ConfigurationError(f'unknown DSN scheme {scheme!r}, expected one of {sorted(SCHEMES)}')
    return SCHEMES[scheme]


def bus_class(dsn: str) -> type[AbstractSignalBus]:
    """The signal bus class serving *dsn*."""
    entry = _entry(dsn)
    if entry.bus is None:
        buses = sorted({s for s, b in SCHEMES.items() if b.bus})
        raise ConfigurationError(f'no signal bus for {scheme_of(dsn)}:// (use one of {buses})')
    cls: type[AbstractSignalBus] = import_backend(f'{entry.module}.{entry.bus}')
    return cls


def broker_class(dsn: str) -> type[AbstractQueueBroker]:
    """The queue broker class serving *dsn*."""
    entry = _entry(dsn)
    cls: type[AbstractQueueBroker] = import_backend(f'{entry.module}.{entry.broker}')
    return cls


def lease_class(dsn: str) -> type[Lease]:
    """The singleton lease class serving *dsn* (see :mod:`microagent.lease`)."""
    scheme = scheme_of(dsn)
    if scheme not in SCHEMES:
        raise ConfigurationError(f'singleton schedules: no lease for {scheme}:// backends')
    entry = SCHEMES[scheme]
    cls: type[Lease] = import_backend(f'{entry.module}.{entry.lease}')
    return cls


def make_bus(dsn: str, **options: Any) -> AbstractSignalBus:
    """A signal bus for *dsn*: ``make_bus('redis://localhost/7', prefix='APP')``."""
    return bus_class(dsn)(dsn, **options)


def make_broker(dsn: str, **options: Any) -> AbstractQueueBroker:
    """A queue broker for *dsn*: ``make_broker('amqp://guest:guest@localhost/')``."""
    return broker_class(dsn)(dsn, **options)
