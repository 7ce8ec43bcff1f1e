"""AMQP-specific behaviour of AMQPBroker / AMQPSignalBus (the shared contract is in tests/contract)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiormq
import aiormq.abc
import pytest

from microagent import BackendError, Catalog, ConfigurationError, DeliveryError, MicroAgent, Queue, consumer
from microagent.tools.amqp import AMQPBroker, AMQPMessage, AMQPSignalBus
from microagent.tools.amqp._topology import RETRY_QUEUE_EXPIRES, retry_queue

from .amqp_support import DSN, require_rabbit
from .helpers import Collector, eventually, recording_agent


@pytest.fixture
async def brokers(catalog: Catalog) -> AsyncIterator[list[AMQPBroker]]:
    require_rabbit()
    made: list[AMQPBroker] = []
    yield made
    for broker in made:
        await broker.close()


def make(brokers: list[AMQPBroker], catalog: Catalog, dsn: str = DSN, **options: Any) -> AMQPBroker:
    broker = AMQPBroker(dsn, catalog=catalog, queue_expires=120, **options)
    brokers.append(broker)
    return broker


@asynccontextmanager
async def raw_channel() -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A channel on a connection of its own (aiormq 6 has no ``async with aiormq.connect()``)."""
    connection = await aiormq.connect(DSN)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def raw_queue(name: str, passive: bool = True) -> Any:
    async with raw_channel() as channel:
        return await channel.queue_declare(name, passive=passive)


def test_construct_without_loop_and_bad_dsn() -> None:
    broker = AMQPBroker('amqp://guest:secret@localhost/')
    assert 'secret' not in repr(broker)
    bus = AMQPSignalBus('amqps://guest:secret@localhost/')
    assert 'secret' not in repr(bus)
    with pytest.raises(ConfigurationError):
        AMQPBroker('redis://localhost/')


def test_retry_queue_names_and_delay_bound() -> None:
    assert retry_queue('mailer', 1) == 'mailer.retry.1'
    # Copies must expire (to their queue) long before their retry queue does.
    with pytest.raises(ConfigurationError):
        AMQPBroker(DSN, max_retry_delay=RETRY_QUEUE_EXPIRES)


async def test_persistent_durable_and_dlq_declared(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = make(brokers, catalog)
    await getattr(broker, queue.name).send({'n': 1})
    ok = await raw_queue(queue.name)
    assert ok.message_count == 1
    assert (await raw_queue(f'{queue.name}.dlq')).message_count == 0
    async with raw_channel() as channel:
        message = await channel.basic_get(queue.name, no_ack=True)
    assert message.header.properties.delivery_mode == 2
    assert await broker.queue_length(queue.name) == 0
    assert await broker.queue_length(f'never_{uid}') == 0


async def test_unroutable_exchange_message_is_an_error(brokers, catalog, uid):
    Queue(f'ios_{uid}', exchange=f'push_{uid}', topics=['push.ios'], catalog=catalog)
    broker = make(brokers, catalog)
    bound = getattr(broker, f'push_{uid}')
    await bound.send({'n': 1}, topic='push.ios')
    with pytest.raises(DeliveryError, match=f'push_{uid}'):
        await bound.send({'n': 2}, topic='push.android')
    # Below the catalog check, RabbitMQ's own basic.return (mandatory) is an error too.
    with pytest.raises(DeliveryError, match=f'exchange:push_{uid}'):
        await broker.publish(f'push_{uid}', '{"n": 2}', topic='push.android')
    await bound.send({'n': 3}, topic='push.ios')  # the channel survived the return
    assert await broker.queue_length(f'ios_{uid}') == 2


async def test_retry_waits_in_a_delay_queue_with_attempt_header(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    calls = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=3)
        async def handle(self, n: int) -> None:
            calls.add(time.monotonic())
            if len(calls) < 2:
                raise RuntimeError('once')
    broker = make(brokers, catalog, retry_delay=0.4)
    agent = Agent(broker=broker)
    await agent.start()
    await getattr(broker, queue.name).send({'n': 1})
    await calls.wait(2, 20)
    # The copy waited for its expiration in <queue>.retry.1: not a hot requeue loop.
    assert calls.items[1] - calls.items[0] >= 0.3
    assert broker.runner(queue.name).stats.retried == 1
    await agent.stop(timeout=1)


async def test_autoack_false_handler_acks_itself(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, autoack=False)
        async def handle(self, amqp: AMQPMessage, **data: Any) -> None:
            seen.add((data, amqp.redelivered))
            if data['n'] == 1:
                await amqp.ack()
            else:
                await self.broker.putout(amqp)
    broker = make(brokers, catalog)
    agent = Agent(broker=broker)
    await agent.start()
    await getattr(broker, queue.name).send({'n': 1})
    await getattr(broker, queue.name).send({'n': 2})
    await seen.wait(2, 20)
    await agent.stop(timeout=1)
    assert sorted(d['n'] for d, _ in seen.items) == [1, 2]
    await eventually(lambda: _length_is(broker, queue.name, 0), 10)


async def test_autoack_false_without_ack_is_redelivered(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    class Lazy(MicroAgent):
        @consumer(queue, autoack=False)
        async def handle(self, amqp: AMQPMessage, n: int) -> None:
            seen.add(('lazy', n, amqp.redelivered))

    class Eager(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            seen.add(('eager', n))
    first = Lazy(broker=make(brokers, catalog))
    await first.start()
    await getattr(first.broker, queue.name).send({'n': 5})
    await seen.wait(1, 20)
    await first.stop(timeout=1)
    second = Eager(broker=make(brokers, catalog))
    await second.start()
    await seen.wait(2, 20)
    assert seen.items == [('lazy', 5, False), ('eager', 5)]
    await second.stop(timeout=1)


async def test_publisher_fails_at_once_without_a_broker(catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = AMQPBroker('amqp://guest:guest@127.0.0.1:1/', catalog=catalog, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendError, match='connection refused'):
        await getattr(broker, queue.name).send({'n': 1}, timeout=1.0)
    assert time.monotonic() - started < 10
    await broker.close()


async def test_closed_broker_reopens_lazily(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = make(brokers, catalog)
    await getattr(broker, queue.name).send({'n': 1})
    await broker.close()
    await getattr(broker, queue.name).send({'n': 2})
    assert await broker.queue_length(queue.name) == 2


async def test_send_many_pipelined(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = make(brokers, catalog)
    await getattr(broker, queue.name).send_many([{'n': n} for n in range(200)])
    assert await broker.queue_length(queue.name) == 200


async def _length_is(broker: AMQPBroker, name: str, value: int) -> bool:
    return await broker.queue_length(name) == value


async def test_bus_buses_share_one_connection(catalog, uid):
    require_rabbit()
    first = AMQPSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    second = AMQPSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    await first.bind(first.channel('x'))
    await second.bind(second.channel('y'))
    assert first.connection is second.connection
    await first.close()
    assert second.connection.is_open
    await second.close()


async def test_poison_lands_in_a_real_dlq_with_its_error(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=2)
        async def handle(self, n: int) -> None:
            if n == 0:
                raise ValueError('poison pill')
            seen.add(n)
    broker = make(brokers, catalog, retry_delay=0.05)
    agent = Agent(broker=broker)
    await agent.start()
    for n in range(5):
        await getattr(broker, queue.name).send({'n': n})
    await seen.wait(4, 20)
    await eventually(lambda: broker.dead_letters(queue.name), 20)
    await agent.stop(timeout=1)
    async with raw_channel() as channel:
        message = await channel.basic_get(f'{queue.name}.dlq', no_ack=False)
        headers = message.header.properties.headers or {}
        await channel.basic_nack(message.delivery_tag, requeue=True)
    assert 'poison pill' in str(headers['x-error'])
    assert headers['x-attempts'] == 2
    assert len(await broker.dead_letters(queue.name)) == 1  # reading does not consume


async def test_failed_retry_publish_gives_the_message_back(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    calls = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=3)
        async def handle(self, n: int) -> None:
            calls.add(n)
            if len(calls) == 1:
                raise RuntimeError('first call fails')
    broker = make(brokers, catalog, retry_delay=0.05)
    real = broker.publish_retry
    failures = []

    async def broken_once(*args: Any, **kwargs: Any) -> None:
        if not failures:
            failures.append(args)
            raise BackendError('publish connection down')
        await real(*args, **kwargs)
    broker.publish_retry = broken_once  # type: ignore[method-assign]
    agent = Agent(broker=broker)
    await agent.start()
    await getattr(broker, queue.name).send({'n': 9})
    # Not stuck unacked on the consumer channel: nacked back and handled again.
    assert await calls.wait(2, 20) == [9, 9]
    await agent.stop(timeout=1)


async def test_queue_length_counts_copies_waiting_for_a_retry(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=5)
        async def handle(self, n: int) -> None:
            raise RuntimeError('always')
    broker = make(brokers, catalog, retry_delay=60)
    agent = Agent(broker=broker)
    await agent.start()
    await getattr(broker, queue.name).send({'n': 1})
    await getattr(broker, queue.name).send({'n': 2})
    await eventually(lambda: broker.runner(queue.name).stats.retried >= 2, 20)
    await agent.stop(timeout=1)
    # Both wait in <queue>.retry.1 for a minute: still waiting, as memory and Redis count them.
    await eventually(lambda: _length_is(broker, queue.name, 2), 10)
    assert (await raw_queue(f'{queue.name}.retry.1')).message_count == 2
    # A copy for a later attempt waits one retry queue further; every one is counted.
    await broker.publish_retry(queue.name, b'{"n": 3}', 3, 60, 'RuntimeError: always', message_id='m3', headers={})
    await getattr(broker, queue.name).send({'n': 4})
    assert await broker.queue_length(queue.name) == 4
    assert await broker.queue_length(f'missing_{uid}') == 0


async def test_stop_gives_messages_back_unflagged_and_uncounted(brokers, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    started = Collector()
    seen = Collector()

    class Slow(MicroAgent):
        @consumer(queue, max_inflight=2)
        async def handle(self, n: int) -> None:
            started.add(n)
            await asyncio.Event().wait()  # cut by the stop

    class Watching(MicroAgent):
        @consumer(queue, autoack=False)
        async def handle(self, amqp: AMQPMessage, n: int) -> None:
            seen.add((n, amqp.redelivered, (amqp.headers or {}).get('x-attempt', 1)))
            await amqp.ack()
    first = make(brokers, catalog)
    slow = Slow(broker=first)
    await slow.start()
    for n in range(4):
        await getattr(first, queue.name).send({'n': n})
    await started.wait(2, 20)
    await slow.stop(timeout=0.1)
    # Given back on purpose: not flagged redelivered, so no attempt is counted for them.
    watching = Watching(broker=make(brokers, catalog))
    await watching.start()
    assert sorted(await seen.wait(4, 20)) == [(n, False, 1) for n in range(4)]
    await watching.stop(timeout=1)


async def test_messages_published_before_ids_and_headers_still_decode(brokers, catalog, uid):
    """A message without a message-id property (another client, an older version) is handled; its id is stable."""
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()
    Agent = recording_agent(queue, seen, lambda n, attempt: attempt == 1)
    broker = make(brokers, catalog, retry_delay=0.01)
    agent = Agent(broker=broker)
    await agent.start()
    async with raw_channel() as channel:
        await channel.basic_publish(b'{"n": 1}', routing_key=queue.name,
                                    properties=aiormq.spec.Basic.Properties(delivery_mode=2))
        await channel.basic_publish(b'{"n": 2}', routing_key=queue.name, properties=aiormq.spec.Basic.Properties(
            delivery_mode=2, message_id='older.7', headers={'x-attempt': 2, 'other': 5, 'k': 'v'}))
    items = await seen.wait(3, 20)
    await agent.stop(timeout=1)
    by_key = {(n, attempt): (mid, headers) for n, attempt, mid, headers in items}
    assert by_key[(1, 1)][0] == by_key[(1, 2)][0] != ''   # the first copy's id, carried by its retry
    assert by_key[(2, 2)] == ('older.7', {'k': 'v'})


async def test_one_message_id_twice_in_flight_each_publish_gets_its_own_outcome(brokers, catalog, uid):
    """A basic.return names its message by id: publishes sharing an id are confirmed one after the other."""
    queue = Queue(f'q_{uid}', exchange=f'ex_{uid}', topics=['only.this'], catalog=catalog)
    broker = make(brokers, catalog)
    await getattr(broker, queue.name).send({'n': 0})  # declares the queue, its exchange and binding
    for _ in range(3):
        results = await asyncio.gather(
            broker.publish(f'ex_{uid}', '{"n": 1}', topic='no.match', message_id=f'twin-{uid}'),
            broker.send(queue.name, '{"n": 2}', message_id=f'twin-{uid}'),
            broker.send_many(queue.name, ['{"n": 3}', '{"n": 4}'], message_ids=[f'twin-{uid}'] * 2),
            return_exceptions=True)
        assert isinstance(results[0], DeliveryError) and results[1:] == [None, None]
    assert await broker.queue_length(queue.name) == 10
