"""Kafka broker specifics beyond the shared contract (tansu on loopback)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

pytest.importorskip('aiokafka')

from microagent import Catalog, ConfigurationError, DeliveryError, MicroAgent, Queue, consumer
from microagent.tools.kafka._client import parse_dsn
from microagent.tools.kafka._offsets import PartitionOffsets

from .backends.kafka import BACKEND, make_broker
from .helpers import Collector, eventually, recording_agent

SLOW = BACKEND.slow_factor


# -- no broker needed ------------------------------------------------------------

def test_parse_dsn_hosts_and_sasl():
    assert parse_dsn('kafka://h1:9092,h2:9093') == ('h1:9092,h2:9093', {})
    hosts, options = parse_dsn('kafka://app:s%40cret@h1:9092/')
    assert hosts == 'h1:9092'
    assert options['sasl_plain_username'] == 'app'
    assert options['sasl_plain_password'] == 's@cret'
    assert options['security_protocol'] == 'SASL_PLAINTEXT'
    with pytest.raises(ConfigurationError):
        parse_dsn('redis://localhost')
    with pytest.raises(ConfigurationError):
        parse_dsn('kafka://')


def test_password_never_shown():
    from microagent.tools.kafka import KafkaBroker
    broker = KafkaBroker('kafka://app:topsecret@127.0.0.1:9092', catalog=Catalog())
    assert 'topsecret' not in repr(broker)
    assert 'topsecret' not in str(broker)
    assert broker.settings.mask('failed with topsecret') == 'failed with ***'


def test_explicit_security_settings_pass_through():
    from microagent.tools.kafka import KafkaBroker
    broker = KafkaBroker('kafka://127.0.0.1:9092', catalog=Catalog(), sasl_mechanism='SCRAM-SHA-256',
                         sasl_plain_username='u', sasl_plain_password='p', client_options={'client_id': 'x'})
    client = broker.settings.client()
    assert client['sasl_mechanism'] == 'SCRAM-SHA-256'
    assert client['security_protocol'] == 'SASL_PLAINTEXT'
    assert client['client_id'] == 'x'


def test_bad_options():
    from microagent.tools.kafka import KafkaBroker
    with pytest.raises(ConfigurationError):
        KafkaBroker('kafka://127.0.0.1:9092', partitions=0)


def test_offsets_commit_only_a_settled_prefix():
    part = PartitionOffsets()
    for offset in (5, 6, 7):
        part.take(offset)
    assert not part.settle(6)
    assert part.position is None
    assert part.settle(5)
    assert part.position == 7
    part.release()            # 7 given back at shutdown: never committed past it
    part.take(8)
    assert not part.settle(8)
    assert part.position == 7
    assert part.busy == 0
    part.committed = 7
    assert not part.dirty


def test_garbled_headers_fall_back_to_defaults():
    from microagent.tools.kafka._wire import RecordHeaders
    older = RecordHeaders([('attempt', b'x7'), ('not_before', None), ('topic', b'push.ios')])
    assert older.number('x-attempt', 2) == 2
    assert older.number('x-not-before', 0) == 0
    assert RecordHeaders(None).number('x-attempt', 1) == 1
    assert older.text('x-topic') == 'push.ios'
    newer = RecordHeaders([('x-message-id', b'id1'), ('x-attempt', b'x7'), ('topic', b'mine'), ('k', None)])
    assert newer.number('x-attempt', 2) == 2
    assert (newer.message_id, newer.text('x-topic'), dict(newer.headers)) == ('id1', '', {'topic': 'mine', 'k': ''})


# -- against tansu -----------------------------------------------------------------

@pytest.fixture
def kafka() -> None:
    BACKEND.prepare()


@pytest.fixture
async def brokers(kafka: None) -> Any:
    made: list[Any] = []
    agents: list[MicroAgent] = []

    def build(catalog: Catalog, **options: Any) -> Any:
        broker = make_broker(catalog, **options)
        made.append(broker)
        return broker
    build.agents = agents  # type: ignore[attr-defined]
    yield build
    for agent in agents:
        if agent.started:
            await agent.stop(timeout=1)
    for broker in made:
        await broker.close()


def agent_for(queue: Queue, handler: Any, **options: Any) -> type[MicroAgent]:
    class Agent(MicroAgent):
        @consumer(queue, **options)
        async def handle(self, **kwargs: Any) -> None:
            await handler(**kwargs)
    return Agent


async def start(brokers: Any, agent: MicroAgent) -> MicroAgent:
    brokers.agents.append(agent)
    await agent.start()
    return agent


async def test_group_override_and_lag(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'kq_{uid}', catalog=catalog)
    broker = brokers(catalog)
    await getattr(broker, queue.name).send_many([{'n': n} for n in range(5)])
    assert await broker.queue_length(queue.name) == 5
    seen = Collector()

    async def handler(n):
        seen.add(n)
    await start(brokers, agent_for(queue, handler, group=f'other_{uid}')(broker=broker))
    await seen.wait(5, 20 * SLOW)
    await eventually(lambda: _eq(broker.queue_length(queue.name, group=f'other_{uid}'), 0), 10 * SLOW)
    # The default group (the queue's name) never read: its lag is still everything.
    assert await broker.queue_length(queue.name, group=queue.name) == 5


async def _eq(coro, value):
    return await coro == value


async def test_direct_send_reaches_exchange_bound_queue(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'kd_{uid}', exchange=f'kx_{uid}', topics=['only.this'], catalog=catalog)
    broker = brokers(catalog)
    seen = Collector()

    async def handler(n):
        seen.add(n)
    await start(brokers, agent_for(queue, handler)(broker=broker))
    await getattr(broker, queue.name).send({'n': 1})
    with pytest.raises(DeliveryError, match='no bound queue accepts'):
        await getattr(broker, f'kx_{uid}').send({'n': 2}, topic='other.topic')
    await broker.publish(f'kx_{uid}', queue.serialize({'n': 2}), topic='other.topic')  # filtered out
    await getattr(broker, f'kx_{uid}').send({'n': 3}, topic='only.this')
    await seen.wait(2, 20 * SLOW)
    await eventually(lambda: _eq(broker.queue_length(queue.name), 0), 10 * SLOW)
    assert sorted(seen.items) == [1, 3]


async def test_retry_waits_without_blocking_the_partition(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'kr_{uid}', catalog=catalog)
    broker = brokers(catalog, retry_delay=1.0)
    calls = Collector()

    async def handler(n):
        calls.add(n)
        if n == 0 and calls.items.count(0) == 1:
            raise RuntimeError('first try fails')
    await start(brokers, agent_for(queue, handler, max_inflight=1)(broker=broker))
    await getattr(broker, queue.name).send_many([{'n': n} for n in range(6)])
    await calls.wait(7, 20 * SLOW)
    # The retry of 0 came after everything behind it: the partition did not wait for its delay.
    assert calls.items[:6] == [0, 1, 2, 3, 4, 5]
    assert calls.items[6] == 0
    assert await broker.dead_letters(queue.name) == []


async def test_replicas_share_partitions_without_duplicates(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'ks_{uid}', catalog=catalog)
    seen: dict[str, Collector] = {'a': Collector(), 'b': Collector()}
    everything = Collector()

    def handler_for(name):
        async def handler(n):
            seen[name].add(n)
            everything.add(n)
        return handler
    for name in ('a', 'b'):
        await start(brokers, agent_for(queue, handler_for(name))(broker=brokers(catalog, partitions=2)))
    sender = brokers(catalog, partitions=2)
    await getattr(sender, queue.name).send_many([{'n': n} for n in range(60)])
    await everything.wait(60, 30 * SLOW)
    await eventually(lambda: _eq(sender.queue_length(queue.name), 0), 10 * SLOW)
    assert sorted(everything.items) == list(range(60))
    assert seen['a'].items and seen['b'].items


async def test_rebalance_commits_in_flight_work(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'kb_{uid}', catalog=catalog)
    everything = Collector()

    async def slow(n):
        await asyncio.sleep(0.2)
        everything.add(n)
    first = brokers(catalog, partitions=2)
    await start(brokers, agent_for(queue, slow, max_inflight=4)(broker=first))
    await getattr(first, queue.name).send_many([{'n': n} for n in range(40)])
    await everything.wait(4, 20 * SLOW)
    # A second replica joins mid-stream: the first commits what it finished before giving partitions up.
    await start(brokers, agent_for(queue, slow, max_inflight=4)(broker=brokers(catalog, partitions=2)))
    await everything.wait(40, 60 * SLOW)
    await eventually(lambda: _eq(first.queue_length(queue.name), 0), 20 * SLOW)
    assert sorted(set(everything.items)) == list(range(40))
    assert len(everything.items) <= 40 + 8, 'at most the in-flight window may run twice'


async def test_handled_but_uncommitted_messages_stay_within_the_commit_window(brokers, uid):
    """While commits do not land, a consumer handles at most its window: what a crash would make run again."""
    catalog = Catalog()
    queue = Queue(f'kw_{uid}', catalog=catalog)
    handled = Collector()

    async def fast(n):
        handled.add(n)
    broker = brokers(catalog, commit_window=6)
    await start(brokers, agent_for(queue, fast, max_inflight=2)(broker=broker))
    reader = broker._queue_readers[queue.name][0]  # the reader of the queue's own topic
    real_commit, gate = reader.consumer.commit, asyncio.Event()

    async def held_commit(offsets: Any) -> None:
        await gate.wait()  # the coordinator is slow: nothing commits until the test opens the gate
        await real_commit(offsets)
    reader.consumer.commit = held_commit
    await getattr(broker, queue.name).send_many([{'n': n} for n in range(30)])
    await handled.wait(6, 20 * SLOW)
    with pytest.raises(TimeoutError):
        await handled.wait(7, 1.0)  # a full window waits for its commit
    gate.set()
    await handled.wait(30, 20 * SLOW)
    assert sorted(handled.items) == list(range(30))


async def test_idempotence_required_but_refused_is_a_clear_error(brokers, uid, caplog):
    catalog = Catalog()
    queue = Queue(f'ki_{uid}', catalog=catalog)
    auto = brokers(catalog)
    with caplog.at_level(logging.WARNING, logger='microagent.kafka'):
        await getattr(auto, queue.name).send({'n': 1})
    if auto.idempotent:
        pytest.skip('this Kafka broker supports idempotent producers')
    assert 'without idempotence' in caplog.text
    strict = brokers(catalog, idempotent=True)
    with pytest.raises(DeliveryError, match=queue.name):
        await getattr(strict, queue.name).send({'n': 2})


async def test_closed_broker_reopens(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'ko_{uid}', catalog=catalog)
    broker = brokers(catalog)
    await getattr(broker, queue.name).send({'n': 1})
    await broker.close()
    await getattr(broker, queue.name).send({'n': 2})
    assert await broker.queue_length(queue.name) == 2


async def test_key_keeps_order_across_partitions(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'kk_{uid}', catalog=catalog)
    broker = brokers(catalog, partitions=3)
    seen = Collector()

    async def handler(user, n):
        seen.add((user, n))
    await start(brokers, agent_for(queue, handler, max_inflight=1)(broker=broker))
    for n in range(10):
        for user in ('a', 'b', 'c'):
            await getattr(broker, queue.name).send({'user': user, 'n': n}, key=user)
    await seen.wait(30, 20 * SLOW)
    for user in ('a', 'b', 'c'):
        assert [n for u, n in seen.items if u == user] == list(range(10))
    with pytest.raises(ConfigurationError):
        await getattr(broker, queue.name).send({'n': 1}, key=5)


async def test_records_written_before_ids_and_headers_still_decode(brokers, uid):
    """Records of the older layout (no x-message-id, unprefixed headers) are handled; their id is stable."""
    from microagent.tools.kafka._consumer import retry_topic
    catalog = Catalog()
    queue = Queue(f'kq_{uid}', catalog=catalog)
    broker = brokers(catalog, retry_delay=0.01)
    seen = Collector()
    Agent = recording_agent(queue, seen, lambda n, attempt: n == 1 and attempt == 1, max_attempts=5)
    from aiokafka import AIOKafkaProducer

    from .kafka_server import require_kafka
    await broker.queue_length(queue.name)  # creates the queue's topics
    producer = AIOKafkaProducer(bootstrap_servers=require_kafka())
    await producer.start()
    try:
        await producer.send_and_wait(queue.name, b'{"n": 1}')
        await producer.send_and_wait(retry_topic(queue.name), b'{"n": 2}', headers=[
            ('attempt', b'3'), ('not_before', b'0'), ('error', b'older')])
    finally:
        await producer.stop()
    await start(brokers, Agent(broker=broker))
    items = await seen.wait(3, 20 * SLOW)
    by_key = {(n, attempt): (mid, headers) for n, attempt, mid, headers in items}
    assert by_key[(1, 1)] == (f'{queue.name}/0/0', {}) == by_key[(1, 2)]  # the first copy's id, carried on
    assert by_key[(2, 3)] == (f'{retry_topic(queue.name)}/0/0', {})


async def test_a_settle_on_a_revoked_partition_still_clears_its_crash_suspect() -> None:
    # A suspect (a record that was running when a process died) runs alone and holds its queue until its
    # offset leaves the book; when a rebalance revoked its partition meanwhile, that settle used to be
    # ignored and the queue stalled for ever (the reliability smoke: hundreds of messages owed).
    from types import SimpleNamespace

    from microagent.tools.kafka._attempts import PartitionAttempts, Snapshot
    from microagent.tools.kafka._client import KafkaClients, KafkaSettings
    from microagent.tools.kafka._consumer import KafkaQueueReader

    runner: Any = SimpleNamespace(max_inflight=4, queue=SimpleNamespace(name='suspects_q', exchange=None))
    reader = KafkaQueueReader(KafkaClients(KafkaSettings('127.0.0.1:9')), runner, group='suspects_q')
    for settle in (reader.settle, reader.release):
        part = PartitionOffsets()
        book = part.attempts = PartitionAttempts(Snapshot(), 0)
        part.take(5)
        book.start(5, 2)
        part.revoked = True
        settle(part, 5)
        assert 5 not in book.started
