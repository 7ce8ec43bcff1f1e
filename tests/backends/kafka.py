"""Kafka (tansu on loopback) in the shared contract suite; Kafka has no signal bus."""
from __future__ import annotations

from typing import Any

from microagent import AbstractQueueBroker, Catalog

from ..kafka_server import require_kafka
from ..services import require_port
from . import BackendSpec

# tansu completes a group join after session_timeout / 2 (>= 1 s): a short session keeps tests quick.
SESSION_TIMEOUT = 2.0


def _prepare() -> None:
    host, _, port = require_kafka().rpartition(':')
    require_port('kafka', int(port), host)


def make_broker(catalog: Catalog, **options: Any) -> AbstractQueueBroker:
    # Imported here: collecting the suite must not need aiokafka.
    from microagent.tools.kafka import KafkaBroker
    options.setdefault('session_timeout', SESSION_TIMEOUT)
    options.setdefault('fetch_max_wait_ms', 100)  # tansu holds an idle fetch that long: keeps tests quick
    return KafkaBroker(f'kafka://{require_kafka()}', catalog=catalog, **options)


BACKEND = BackendSpec(
    name='kafka',
    prepare=_prepare,
    make_broker=make_broker,
    make_bus=None,
    slow_factor=3.0,
)
