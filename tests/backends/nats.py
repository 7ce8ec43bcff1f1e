"""NATS (core NATS for the bus, JetStream for the broker) in the shared contract suite."""
from __future__ import annotations

from typing import Any

from microagent import AbstractQueueBroker, AbstractSignalBus, Catalog

from ..nats_server import require_nats
from . import BackendSpec

PREFIX = 'microagenttest'


def _prepare() -> None:
    require_nats()


def make_broker(catalog: Catalog, **options: Any) -> AbstractQueueBroker:
    # Imported here: collecting the suite must not need nats-py.
    from microagent.tools.nats import NATSBroker
    # A short ack_wait: a test that stops a consumer mid-handler sees a lost message again quickly.
    options.setdefault('ack_wait', 3.0)
    return NATSBroker(require_nats(), catalog=catalog, prefix=PREFIX, **options)


def make_bus(catalog: Catalog, prefix: str) -> AbstractSignalBus:
    from microagent.tools.nats import NATSSignalBus
    return NATSSignalBus(require_nats(), catalog=catalog, prefix=prefix)


BACKEND = BackendSpec(name='nats', prepare=_prepare, make_broker=make_broker, make_bus=make_bus)
