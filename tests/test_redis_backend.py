"""Redis-specific behaviour beyond the shared contract suite."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from microagent import Catalog, ConfigurationError, MicroAgent, Queue, Signal, consumer, receiver
from microagent.backends import make_broker, make_bus
from microagent.tools.redis import RedisBroker, RedisSignalBus

from . import redis_helpers
from .helpers import Collector, eventually, recording_agent
from .redis_helpers import DSN, client_ids
from .services import require_port

admin = redis_helpers.admin      # fixtures shared by the Redis tests
prefix = redis_helpers.prefix


def test_construction_needs_no_loop_and_opens_nothing():
    broker = RedisBroker('redis://localhost/7')
    bus = RedisSignalBus('redis://localhost/7')
    assert broker.redis._client is None and bus.redis._client is None
    assert isinstance(make_broker('rediss://:pw@localhost:6380/1'), RedisBroker)
    assert isinstance(make_bus('redis://localhost/7'), RedisSignalBus)


def test_bad_dsn_is_a_configuration_error_without_password():
    with pytest.raises(ConfigurationError) as info:
        RedisBroker('redis://:Secret1@localhost:port/1')
    assert 'Secret1' not in str(info.value)
    with pytest.raises(ConfigurationError):
        RedisSignalBus('amqp://localhost/')
    with pytest.raises(ConfigurationError):
        RedisBroker('redis://localhost/7', heartbeat_interval=5, heartbeat_ttl=6)


async def test_rediss_verifies_certificates_by_default():
    broker = RedisBroker('rediss://:pw@localhost:6380/1')
    conn = broker.redis.client().connection_pool.make_connection()
    assert 'SSL' in type(conn).__name__
    assert conn.ssl_context.cert_reqs == ssl.CERT_REQUIRED
    assert conn.ssl_context.check_hostname is True
    await broker.close()


def test_usable_across_event_loops_and_after_close():
    require_port('redis', 6379)
    catalog = Catalog()
    queue = Queue('reuse_q', catalog=catalog)
    broker = RedisBroker(DSN, catalog=catalog, prefix='matest-reuse')

    async def use(close: bool) -> int:
        await getattr(broker, queue.name).send({'n': 1})
        length = await broker.queue_length(queue.name)
        if close:
            await broker.close()
        return length

    first = asyncio.run(use(close=False))
    second = asyncio.run(use(close=True))
    assert second == first + 1
    assert asyncio.run(use(close=True)) == second + 1

    async def clean() -> None:
        await broker.redis.client().delete(broker.stream(queue.name))
        await broker.close()
    asyncio.run(clean())


async def test_live_consumer_keeps_its_long_running_message(admin, prefix, uid):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    started, finished, stolen = Collector(), Collector(), Collector()
    release = asyncio.Event()

    class Slow(MicroAgent):
        @consumer(queue, timeout=60)
        async def handle(self, n: int) -> None:
            started.add(n)
            await release.wait()
            finished.add(n)

    class Thief(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            stolen.add(n)
    options = {'catalog': catalog, 'prefix': prefix, 'heartbeat_interval': 0.1, 'heartbeat_ttl': 0.5}
    slow = Slow(broker=RedisBroker(DSN, **options))
    await slow.start()
    await getattr(slow.broker, queue.name).send({'n': 1})
    await started.wait(1, 10)
    thief = Thief(broker=RedisBroker(DSN, **options))
    await thief.start()
    try:
        # Several heartbeat TTLs pass while the handler runs, and the thief looks for dead peers each round.
        rounds = thief.broker.upkeep_rounds
        await eventually(lambda: thief.broker.upkeep_rounds >= rounds + 15, 20)
        release.set()
        await finished.wait(1, 10)
        await eventually(lambda: _length_is(slow.broker, queue.name, 0), 10)
        assert stolen.items == []
    finally:
        await slow.stop(timeout=2)
        await thief.stop(timeout=2)


async def _length_is(broker: RedisBroker, name: str, value: int) -> bool:
    return await broker.queue_length(name) == value


async def test_queue_length_counts_waiting_retries_not_in_flight(admin, prefix, uid):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    calls = Collector()
    release = asyncio.Event()

    class Agent(MicroAgent):
        @consumer(queue, max_inflight=1, prefetch=0)  # nothing read ahead: n=2 waits in the stream
        async def handle(self, n: int) -> None:
            calls.add(n)
            if n == 0:
                raise RuntimeError('later')
            await release.wait()
    broker = RedisBroker(DSN, catalog=catalog, prefix=prefix, retry_delay=30)
    agent = Agent(broker=broker)
    await agent.start()
    try:
        await getattr(broker, queue.name).send({'n': 0})
        await calls.wait(1, 10)
        await getattr(broker, queue.name).send({'n': 1})
        await getattr(broker, queue.name).send({'n': 2})
        await calls.wait(2, 10)
        # n=0 waits 30 s in the delayed set, n=1 is in flight, n=2 waits in the stream.
        await eventually(lambda: _length_is(broker, queue.name, 2), 10)
        assert await admin.zcard(f'{prefix}:{queue.name}.delayed') == 1
        release.set()
    finally:
        await agent.stop(timeout=2)


async def test_stop_gives_messages_back_at_once(admin, prefix, uid):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    started, handled = Collector(), Collector()

    class Slow(MicroAgent):
        @consumer(queue, max_inflight=2)
        async def handle(self, n: int) -> None:
            started.add(n)
            await asyncio.sleep(60)

    class Fast(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            handled.add(n)
    slow = Slow(broker=RedisBroker(DSN, catalog=catalog, prefix=prefix))
    await slow.start()
    await getattr(slow.broker, queue.name).send_many([{'n': n} for n in range(5)])
    await started.wait(2, 10)
    await slow.stop(timeout=0.1)
    assert await admin.exists(f'{prefix}:consumer:{slow.broker.uid}') == 0
    # Default heartbeats (10 s TTL): only an immediate give-back lets this pass quickly.
    fast = Fast(broker=RedisBroker(DSN, catalog=catalog, prefix=prefix))
    await fast.start()
    try:
        assert sorted(await handled.wait(5, 8)) == list(range(5))
    finally:
        await fast.stop(timeout=2)


async def test_exchange_publish_reaches_bound_queues_in_one_transaction(admin, prefix, uid):
    catalog = Catalog()
    exchange = f'ex_{uid}'
    Queue(f'a_{uid}', exchange=exchange, topics=['msg.*'], catalog=catalog)
    Queue(f'b_{uid}', exchange=exchange, topics=['msg.#'], catalog=catalog)
    broker = RedisBroker(DSN, catalog=catalog, prefix=prefix)
    await getattr(broker, exchange).send({'x': 1}, topic='msg.ios')
    await getattr(broker, exchange).send({'x': 2}, topic='msg.ios.v2')
    assert await admin.xlen(f'{prefix}:a_{uid}') == 1
    assert await admin.xlen(f'{prefix}:b_{uid}') == 2
    await broker.close()


async def _rpc_rounds(uid: str, calls: int) -> None:
    require_port('redis', 6379)
    catalog = Catalog()
    sig = Signal(f'echo_{uid}', ['n'], catalog=catalog)

    class Echo(MicroAgent):
        @receiver(sig)
        async def echo(self, signal: Signal, sender: str, n: int) -> int:
            return n
    agent = Echo(bus=RedisSignalBus(DSN, catalog=catalog, prefix=f'T{uid}'))
    await agent.start()
    caller = RedisSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    try:
        assert await getattr(caller, sig.name).call('api', n=-1, timeout=10) == {'Echo.echo': -1}
        tasks_before = len(asyncio.all_tasks())
        for n in range(calls):
            assert await getattr(caller, sig.name).call('api', n=n, timeout=10) == {'Echo.echo': n}
        await asyncio.sleep(0.05)
        assert caller.pending_calls == {}
        assert len(asyncio.all_tasks()) <= tasks_before
        assert caller._channels == {f'T{uid}:response:{caller.uid}'}
        async with asyncio.timeout(5):
            subscribed = await caller.redis.client().pubsub_numsub(f'T{uid}:response:{caller.uid}')
        assert subscribed[0][1] == 1
        assert len(agent._receiver_tasks) == 0
    finally:
        await agent.stop(timeout=2)
        await caller.close()


async def test_many_rpc_calls_leave_nothing_behind(uid):
    await _rpc_rounds(uid, 1000)


@pytest.mark.slow
async def test_ten_thousand_rpc_calls_leave_nothing_behind(uid):
    await _rpc_rounds(uid, 10_000)


async def test_closed_bus_and_broker_open_no_connections_until_used(admin, uid):
    bus = RedisSignalBus(DSN, catalog=Catalog())
    await bus.close()
    assert await client_ids(admin, f'microagent.bus.{bus.uid}') == []


def test_bus_usable_in_a_second_event_loop_without_close(uid):
    require_port('redis', 6379)
    catalog = Catalog()
    sig = Signal(f'loop_{uid}', ['n'], catalog=catalog)
    bus = RedisSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')

    async def call_self() -> dict:
        class Echo(MicroAgent):
            @receiver(sig)
            async def echo(self, signal: Signal, sender: str, n: int) -> int:
                return n
        agent = Echo(bus=bus)
        await agent.start()
        try:
            return await getattr(bus, sig.name).call('t', n=3, timeout=10)
        finally:
            await agent.stop(timeout=1, close=False)
            bus.receivers.clear()

    assert asyncio.run(call_self()) == {'Echo.echo': 3}
    assert asyncio.run(call_self()) == {'Echo.echo': 3}
    asyncio.run(bus.close())


async def test_settling_scripts_run_twice_change_nothing(admin, prefix):
    """After a reply lost to a connection reset the settle runs again: no second retry copy or dead letter."""
    from microagent.tools.redis._scripts import DEAD_LETTER, RETRY
    stream, delayed, dlq = f'{prefix}:s', f'{prefix}:s.delayed', f'{prefix}:s.dlq'
    await admin.xgroup_create(stream, 'g', id='0', mkstream=True)
    first = await admin.xadd(stream, {'b': 'one'})
    second = await admin.xadd(stream, {'b': 'two'})
    await admin.xreadgroup('g', 'c', {stream: '>'}, count=2)
    for _ in range(2):
        await RETRY.run(admin.execute_command, [stream, delayed], ['g', first, 1000, b'2:' + first + b':one'])
        await DEAD_LETTER.run(admin.execute_command, [stream, dlq], ['g', second, 'two', 'boom', 3, 'mid', ''])
    assert await admin.zcard(delayed) == 1
    assert await admin.xlen(dlq) == 1
    assert await admin.xlen(stream) == 0


async def test_entries_written_before_ids_and_headers_still_decode(admin, prefix, uid):
    """Entries, delayed retries and dead letters of the older layout (no ``i``/``h``) go through unchanged."""
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    stream = f'{prefix}:{queue.name}'
    await admin.xgroup_create(stream, queue.name, id='0', mkstream=True)
    plain = (await admin.xadd(stream, {'b': '{"n": 1}'})).decode()
    await admin.xadd(stream, {'b': '{"n": 2}', 'a': '2'})
    await admin.zadd(f'{stream}.delayed', {b'2:1-1:{"n": 3}': 0})  # an older retry member, due
    await admin.xadd(f'{stream}.dlq', {'b': '{"n": 9}', 'e': 'old', 'a': '5'})
    seen = Collector()
    Agent = recording_agent(queue, seen, lambda n, attempt: n == 1 and attempt == 1, max_attempts=5)
    broker = RedisBroker(DSN, catalog=catalog, prefix=prefix, retry_delay=0.01)
    agent = Agent(broker=broker)
    await agent.start()
    try:
        items = await seen.wait(4, 20)
    finally:
        await agent.stop(timeout=1)
    by_n = {(n, attempt): (mid, headers) for n, attempt, mid, headers in items}
    # The first copy's entry id is the message's id from then on: its retry carries it.
    assert by_n[(1, 1)] == (plain, {}) and by_n[(1, 2)] == (plain, {})
    assert by_n[(2, 2)][1] == {} and by_n[(3, 2)] == ('1-1', {})
    letters = await broker.dead_letters(queue.name)
    assert (letters[0].body, letters[0].error, letters[0].attempts, letters[0].message_id) == ('{"n": 9}', 'old', 5, '')
