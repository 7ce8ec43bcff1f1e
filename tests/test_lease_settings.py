"""A singleton's lease connects the way its agent's backend does (TLS, SASL), through that backend's layer.

Nothing here connects: the leases are built, not started.
"""
from __future__ import annotations

import ssl
from typing import Any

import pytest

from microagent import MicroAgent, periodic
from microagent.lease import Lease
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus
from microagent.tools.kafka import KafkaBroker
from microagent.tools.nats import NATSBroker, NATSSignalBus
from microagent.tools.redis import RedisBroker


class Worker(MicroAgent):
    @periodic(period=10, timeout=1, singleton=True)
    async def tick(self) -> None:
        """Never runs here."""


def lease_of(**backends: Any) -> Lease:
    agent = Worker(**backends)
    lease = agent.schedules[0].lease
    assert lease is not None
    return lease


async def test_kafka_lease_keeps_sasl_and_ssl() -> None:
    context = ssl.create_default_context()
    broker = KafkaBroker('kafka://app:s3cret@127.0.0.1:9092', sasl_mechanism='SCRAM-SHA-256', ssl_context=context)
    lease = lease_of(broker=broker)
    client = lease.settings.client()  # type: ignore[attr-defined]
    assert client['bootstrap_servers'] == '127.0.0.1:9092'
    assert client['sasl_mechanism'] == 'SCRAM-SHA-256' and client['ssl_context'] is context
    assert client['sasl_plain_username'] == 'app' and client['sasl_plain_password'] == 's3cret'
    assert {k: client[k] for k in broker.settings.security} == broker.settings.security
    assert 's3cret' not in lease.masked(RuntimeError('auth failed for s3cret'))


async def test_kafka_lease_options_from_settings_win() -> None:
    broker = KafkaBroker('kafka://127.0.0.1:9092')
    agent = Worker(broker=broker, settings={'lease_options': {'session_timeout': 9.0,
                                                              'security': {'security_protocol': 'SSL'}}})
    lease = agent.schedules[0].lease
    assert lease is not None
    assert lease.session_timeout == 9.0  # type: ignore[attr-defined]
    assert lease.settings.client()['security_protocol'] == 'SSL'  # type: ignore[attr-defined]


@pytest.mark.parametrize(('kind', 'make', 'layer'), [
    ('broker', lambda c: AMQPBroker('amqps://u:p@mq:5671/', ssl_context=c), 'connection'),
    ('bus', lambda c: AMQPSignalBus('amqps://u:p@mq:5671/', ssl_context=c), 'connection'),
    ('broker', lambda c: NATSBroker('tls://h1:4443', ssl_context=c), 'nats'),
    ('bus', lambda c: NATSSignalBus('tls://h1:4443', ssl_context=c), 'nats'),
])
async def test_lease_honours_the_backends_ssl_context(kind: str, make: Any, layer: str) -> None:
    context = ssl.create_default_context()
    lease = lease_of(**{kind: make(context)})
    assert getattr(lease, layer).ssl_context is context  # the backend's own connection layer
    if layer == 'connection':
        assert not lease.connection.fast_lane  # type: ignore[attr-defined]


async def test_redis_lease_uses_the_backend_connector() -> None:
    lease = lease_of(broker=RedisBroker('rediss://u:p@cache:6380/2'))
    assert lease.redis.options['ssl_check_hostname'] is True  # type: ignore[attr-defined]
    assert lease.redis.options['protocol'] == 2  # type: ignore[attr-defined]
