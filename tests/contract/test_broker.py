"""The queue broker contract: one test body, every backend."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from microagent import DeliveryError, MicroAgent, Queue, QueueNotFound, SerializingError, consumer
from microagent.delivery import current_delivery
from microagent.exceptions import MicroAgentError, UnsupportedOption

from ..helpers import Collector, eventually, recording_agent


def make_agent(queue: Queue, handler: Any, **options: Any) -> type[MicroAgent]:
    class Agent(MicroAgent):
        @consumer(queue, **options)
        async def handle(self, **kwargs: Any) -> None:
            await handler(**kwargs)
    return Agent


async def test_roundtrip_every_message_once(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(**kwargs):
        seen.add(kwargs['n'])
    broker = harness.broker()
    await harness.start(make_agent(queue, handler)(broker=broker))
    for n in range(30):
        await broker.send(queue.name, queue.serialize({'n': n}))
    await seen.wait(30, harness.wait(20))
    assert sorted(seen.items) == list(range(30))


async def test_bound_queue_send_alias_and_batch(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(n):
        seen.add(n)
    broker = harness.broker()
    await getattr(broker, queue.name)({'n': 0})
    await getattr(broker, queue.name).send({'n': 1})
    await getattr(broker, queue.name).send_many([{'n': i} for i in range(2, 10)])
    await harness.start(make_agent(queue, handler)(broker=broker))
    await seen.wait(10, harness.wait(20))
    assert sorted(seen.items) == list(range(10))


async def test_queue_length(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = harness.broker()
    bound = getattr(broker, queue.name)
    assert await bound.length() == 0
    for n in range(3):
        await bound.send({'n': n})
    await eventually(lambda: _eq(bound.length(), 3), harness.wait(10))
    seen = Collector()

    async def handler(n):
        seen.add(n)
    await harness.start(make_agent(queue, handler)(broker=broker))
    await seen.wait(3, harness.wait(20))
    await eventually(lambda: _eq(bound.length(), 0), harness.wait(10))


async def _eq(coro, value):
    return await coro == value


async def test_fifo_with_one_in_flight(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(n):
        seen.add(n)
    broker = harness.broker()
    for n in range(20):
        await getattr(broker, queue.name).send({'n': n})
    await harness.start(make_agent(queue, handler, max_inflight=1)(broker=broker))
    await seen.wait(20, harness.wait(20))
    assert seen.items == list(range(20))


async def test_retry_then_success(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    calls = Collector()

    async def handler(n):
        calls.add(n)
        if len([c for c in calls.items if c == n]) < 3:
            raise RuntimeError('not yet')
    broker = harness.broker(retry_delay=0.05)
    await harness.start(make_agent(queue, handler, max_attempts=5)(broker=broker))
    await getattr(broker, queue.name).send({'n': 7})
    await calls.wait(3, harness.wait(20))
    await eventually(lambda: _eq(getattr(broker, queue.name).length(), 0), harness.wait(10))
    assert await broker.dead_letters(queue.name) == []
    assert calls.items == [7, 7, 7]


async def test_dead_letter_after_max_attempts_others_flow(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(n):
        if n == 0:
            raise ValueError('poison')
        seen.add(n)
    broker = harness.broker(retry_delay=0.05)
    await harness.start(make_agent(queue, handler, max_attempts=3)(broker=broker))
    for n in range(10):
        await getattr(broker, queue.name).send({'n': n})
    await seen.wait(9, harness.wait(20))
    letters = await eventually(lambda: broker.dead_letters(queue.name), harness.wait(20))
    assert len(letters) == 1
    assert letters[0].attempts == 3
    assert 'poison' in letters[0].error
    assert queue.deserialize(letters[0].body) == {'n': 0}


async def test_timeout_counts_as_failure(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)

    async def handler(n):
        await asyncio.sleep(10)
    broker = harness.broker(retry_delay=0.01)
    await harness.start(make_agent(queue, handler, timeout=0.05, max_attempts=2)(broker=broker))
    await getattr(broker, queue.name).send({'n': 1})
    letters = await eventually(lambda: broker.dead_letters(queue.name), harness.wait(20))
    assert letters[0].attempts == 2
    assert 'TimeoutError' in letters[0].error


async def test_undecodable_and_unacceptable_go_to_dlq(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(n):
        seen.add(n)

    class Agent(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            await handler(n)
    broker = harness.broker()
    await harness.start(Agent(broker=broker))
    await broker.send(queue.name, '{not json')
    await broker.send(queue.name, '[1, 2]')
    await getattr(broker, queue.name).send({'unexpected': 1})
    await getattr(broker, queue.name).send({'n': 5})
    await seen.wait(1, harness.wait(20))
    letters = await eventually(lambda: _at_least(broker.dead_letters(queue.name), 3), harness.wait(20))
    errors = ' | '.join(letter.error for letter in letters)
    assert 'deserialize' in errors
    assert 'JSON object' in errors
    assert "cannot accept keys ['unexpected']" in errors
    assert all(letter.attempts == 1 for letter in letters)


async def _at_least(coro, n):
    items = await coro
    return items if len(items) >= n else None


async def test_oversized_message_dead_lettered_before_parsing(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(**kwargs):
        seen.add(kwargs)
    broker = harness.broker(max_message_size=1000)
    await harness.start(make_agent(queue, handler)(broker=broker))
    await getattr(broker, queue.name).send({'blob': 'x' * 5000})
    await getattr(broker, queue.name).send({'ok': 1})
    await seen.wait(1, harness.wait(20))
    letters = await eventually(lambda: broker.dead_letters(queue.name), harness.wait(20))
    assert 'exceeds 1000' in letters[0].error


@dataclasses.dataclass
class UserDTO:
    user_id: int


async def test_dto_class_and_dto_failure(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, dto_class=UserDTO, dto_name='obj')
        async def handle(self, obj: UserDTO, **kwargs: Any) -> None:
            seen.add((obj, kwargs))
    broker = harness.broker()
    await harness.start(Agent(broker=broker))
    await getattr(broker, queue.name).send({'user_id': 1})
    await getattr(broker, queue.name).send({'user': 2})
    await seen.wait(1, harness.wait(20))
    assert seen.items[0] == (UserDTO(1), {'user_id': 1})
    letters = await eventually(lambda: broker.dead_letters(queue.name), harness.wait(20))
    assert 'UserDTO rejected the message' in letters[0].error


async def test_inflight_limit(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    running = 0
    peak = 0
    release = asyncio.Event()
    done = Collector()

    async def handler(n):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        done.add(n)
    broker = harness.broker()
    await harness.start(make_agent(queue, handler, max_inflight=3)(broker=broker))
    for n in range(10):
        await getattr(broker, queue.name).send({'n': n})
    await eventually(lambda: running == 3, harness.wait(20))
    release.set()
    await done.wait(10, harness.wait(20))
    assert peak == 3


async def test_prefetched_extras_never_exceed_max_inflight_and_go_back_at_once_on_stop(harness, catalog, uid):
    # A runner holds prefetched messages beside its max_inflight handlers (issue 17: a freed slot is
    # refilled without a read round trip); they must never run beyond the limit, and a stop must give
    # them back at once, not after the running handlers finish.
    queue = Queue(f'q_{uid}', catalog=catalog)
    running, peak = 0, 0
    gate = asyncio.Event()
    first_seen = Collector()
    second_seen = Collector()

    async def blocked(n):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        first_seen.add(n)
        await gate.wait()
        running -= 1

    async def fast(n):
        second_seen.add(n)
    first = harness.broker()
    agent = await harness.start(make_agent(queue, blocked, max_inflight=3, prefetch=3, timeout=120)(broker=first))
    await getattr(first, queue.name).send_many([{'n': n} for n in range(10)])
    runner = first.runner(queue.name)
    await eventually(lambda: running == 3 and runner.inflight == 6, harness.wait(20))
    assert peak == 3 and sorted(first_seen.items) == [0, 1, 2]
    stopping = asyncio.create_task(agent.stop(timeout=harness.wait(60)))
    try:
        await harness.start(make_agent(queue, fast)(broker=harness.broker()))
        if harness.backend.name != 'kafka':
            # Handed to the other consumer while the first one's handlers still run.
            await second_seen.wait(7, harness.wait(20))
            assert not stopping.done() and sorted(second_seen.items) == list(range(3, 10))
        # Kafka: the partition (and so its uncommitted extras) goes to the other member once this one left.
    finally:
        gate.set()
        await stopping
    await eventually(lambda: set(range(10)) <= {*first_seen.items, *second_seen.items}, harness.wait(30))
    assert peak == 3


async def test_stop_mid_handler_redelivers(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    started = Collector()
    finished = Collector()

    async def slow(n):
        started.add(n)
        await asyncio.sleep(30)

    async def fast(n):
        finished.add(n)
    first = harness.broker()
    agent = await harness.start(make_agent(queue, slow)(broker=first))
    await getattr(first, queue.name).send({'n': 42})
    await started.wait(1, harness.wait(20))
    await agent.stop(timeout=0.1)
    second = harness.broker()
    await harness.start(make_agent(queue, fast)(broker=second))
    assert await finished.wait(1, harness.wait(30)) == [42]


async def test_stop_lets_inflight_finish(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    started = Collector()
    finished = Collector()

    async def handler(n):
        started.add(n)
        await asyncio.sleep(0.2)
        finished.add(n)
    broker = harness.broker()
    agent = await harness.start(make_agent(queue, handler)(broker=broker))
    await getattr(broker, queue.name).send({'n': 1})
    await started.wait(1, harness.wait(20))
    await agent.stop(timeout=harness.wait(5))
    assert finished.items == [1]


async def test_competing_consumers_share_work(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(n):
        seen.add(n)
    sender = harness.broker()
    for _ in range(2):
        await harness.start(make_agent(queue, handler)(broker=harness.broker()))
    for n in range(40):
        await getattr(sender, queue.name).send({'n': n})
    await seen.wait(40, harness.wait(30))
    await asyncio.sleep(0.2 * harness.backend.slow_factor)
    assert sorted(seen.items) == list(range(40))


async def test_fanout_exchange(harness, catalog, uid):
    first = Queue(f'a_{uid}', exchange=f'ex_{uid}', catalog=catalog)
    second = Queue(f'b_{uid}', exchange=f'ex_{uid}', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(first)
        async def on_first(self, n: int) -> None:
            seen.add(('a', n))

        @consumer(second)
        async def on_second(self, n: int) -> None:
            seen.add(('b', n))
    broker = harness.broker()
    await harness.start(Agent(broker=broker))
    await getattr(broker, f'ex_{uid}').send({'n': 1})
    await seen.wait(2, harness.wait(20))
    assert sorted(seen.items) == [('a', 1), ('b', 1)]


async def test_topic_routing(harness, catalog, uid):
    exchange = f'push_{uid}'
    ios = Queue(f'ios_{uid}', exchange=exchange, topics=['push.ios'], catalog=catalog)
    star = Queue(f'star_{uid}', exchange=exchange, topics=['push.*'], catalog=catalog)
    hash_ = Queue(f'hash_{uid}', exchange=exchange, topics=['push.#'], catalog=catalog)
    every = Queue(f'all_{uid}', exchange=exchange, catalog=catalog)
    Queue(f'lonely_{uid}', exchange=f'only_{uid}', topics=['only.this'], catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(ios)
        async def on_ios(self, t: str) -> None:
            seen.add(('ios', t))

        @consumer(star)
        async def on_star(self, t: str) -> None:
            seen.add(('star', t))

        @consumer(hash_)
        async def on_hash(self, t: str) -> None:
            seen.add(('hash', t))

        @consumer(every)
        async def on_every(self, t: str) -> None:
            seen.add(('all', t))
    broker = harness.broker()
    await harness.start(Agent(broker=broker))
    bound = getattr(broker, exchange)
    await bound.send({'t': 'push.ios'}, topic='push.ios')
    await bound.send({'t': 'push.a.b'}, topic='push.a.b')
    await bound.send({'t': 'push'}, topic='push')
    expected = {('ios', 'push.ios'), ('star', 'push.ios'), ('hash', 'push.ios'), ('all', 'push.ios'),
                ('hash', 'push.a.b'), ('all', 'push.a.b'), ('hash', 'push'), ('all', 'push')}
    await seen.wait(len(expected), harness.wait(20))
    await asyncio.sleep(0.2 * harness.backend.slow_factor)
    assert set(seen.items) == expected
    assert len(seen.items) == len(expected)
    with pytest.raises(DeliveryError, match='no bound queue accepts'):
        await getattr(broker, f'only_{uid}').send({'t': 'x'}, topic='other.topic')


async def test_bad_input_is_a_clear_error(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = harness.broker()
    bound = getattr(broker, queue.name)
    with pytest.raises(SerializingError):
        await bound.send({'x': object()})
    with pytest.raises(SerializingError):
        await bound.send(['not', 'a', 'dict'])
    assert await bound.length() == 0
    assert not hasattr(broker, 'no_such_queue')
    with pytest.raises(QueueNotFound, match='no_such_queue'):
        broker.no_such_queue


# -- message ids and headers: given at send, kept across retries, into the DLQ and through exchanges --------


async def test_headers_and_message_id_reach_the_handler(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()
    broker = harness.broker()
    bound = getattr(broker, queue.name)
    await bound.send({'n': 1}, headers={'traceparent': '00-abc-01', 'tenant': 'acme'}, message_id=f'm1-{uid}')
    await bound.send({'n': 2})
    await bound.send_many([{'n': 3}, {'n': 4}], headers={'batch': 'yes'}, message_ids=[f'm3-{uid}', f'm4-{uid}'])
    await bound.send_many([{'n': 5}, {'n': 6}])
    await harness.start(recording_agent(queue, seen)(broker=broker))
    by_n = {n: (mid, headers) for n, _, mid, headers in await seen.wait(6, harness.wait(20))}
    assert by_n[1] == (f'm1-{uid}', {'traceparent': '00-abc-01', 'tenant': 'acme'})
    assert by_n[3] == (f'm3-{uid}', {'batch': 'yes'})
    assert by_n[4] == (f'm4-{uid}', {'batch': 'yes'})
    for n in (2, 5, 6):
        assert len(by_n[n][0]) == 32 and int(by_n[n][0], 16) >= 0
        assert by_n[n][1] == {}
    assert len({by_n[n][0] for n in by_n}) == 6


async def test_headers_and_message_id_survive_retries_and_dead_lettering(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()
    broker = harness.broker(retry_delay=0.05)
    await harness.start(recording_agent(queue, seen, lambda n, attempt: True, max_attempts=3)(broker=broker))
    await getattr(broker, queue.name).send({'n': 1}, headers={'k': 'v'}, message_id=f'keep-{uid}')
    items = await seen.wait(3, harness.wait(30))
    assert [(mid, headers, attempt) for _, attempt, mid, headers in items] == [
        (f'keep-{uid}', {'k': 'v'}, 1), (f'keep-{uid}', {'k': 'v'}, 2), (f'keep-{uid}', {'k': 'v'}, 3)]
    letters = await eventually(lambda: broker.dead_letters(queue.name), harness.wait(20))
    assert (letters[0].message_id, dict(letters[0].headers), letters[0].attempts) == (f'keep-{uid}', {'k': 'v'}, 3)


async def test_undecodable_dead_letter_keeps_id_and_headers(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = harness.broker()
    await harness.start(recording_agent(queue, Collector())(broker=broker))
    await broker.send(queue.name, '{not json', headers={'k': 'v'}, message_id=f'bad-{uid}')
    letters = await eventually(lambda: broker.dead_letters(queue.name), harness.wait(20))
    assert (letters[0].message_id, dict(letters[0].headers)) == (f'bad-{uid}', {'k': 'v'})


async def test_exchange_fanout_keeps_headers_and_message_id(harness, catalog, uid):
    exchange = f'ex_{uid}'
    first = Queue(f'a_{uid}', exchange=exchange, catalog=catalog)
    second = Queue(f'b_{uid}', exchange=exchange, topics=['t.#'], catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(first)
        async def on_first(self, n: int) -> None:
            delivery = current_delivery()
            seen.add(('a', delivery.message_id, dict(delivery.headers)))

        @consumer(second)
        async def on_second(self, n: int) -> None:
            delivery = current_delivery()
            seen.add(('b', delivery.message_id, dict(delivery.headers)))
    broker = harness.broker()
    await harness.start(Agent(broker=broker))
    await getattr(broker, exchange).send({'n': 1}, topic='t.x', headers={'k': 'v'}, message_id=f'fan-{uid}')
    await getattr(broker, exchange).send({'n': 2}, topic='t.y')
    items = await seen.wait(4, harness.wait(20))
    assert ('a', f'fan-{uid}', {'k': 'v'}) in items
    assert ('b', f'fan-{uid}', {'k': 'v'}) in items
    generated = [mid for _, mid, headers in items if mid != f'fan-{uid}']
    assert len(generated) == 2 and generated[0] == generated[1]


async def test_send_options_are_checked(harness, catalog, uid):
    queue = Queue(f'q_{uid}', catalog=catalog)
    Queue(f'e_{uid}', exchange=f'ex_{uid}', catalog=catalog)
    broker = harness.broker()
    bound = getattr(broker, queue.name)
    with pytest.raises(UnsupportedOption, match=rf"{type(broker).__name__}\.send: unsupported option 'nope'"):
        await bound.send({'n': 1}, nope=1)
    with pytest.raises(UnsupportedOption, match='send_many'):
        await bound.send_many([{'n': 1}], nope=1)
    with pytest.raises(UnsupportedOption, match='publish'):
        await getattr(broker, f'ex_{uid}').send({'n': 1}, nope=1)
    with pytest.raises(SerializingError, match='value must be a str'):
        await bound.send({'n': 1}, headers={'k': 1})
    with pytest.raises(SerializingError, match='reserved'):
        await bound.send({'n': 1}, headers={'x-attempt': '3'})
    with pytest.raises(SerializingError, match='message_id'):
        await bound.send({'n': 1}, message_id='')
    with pytest.raises(SerializingError, match='one id per message'):
        await bound.send_many([{'n': 1}, {'n': 2}], message_ids=['only-one'])
    assert await bound.length() == 0


async def test_backend_methods_refuse_options_they_do_not_take(harness, catalog, uid):
    """The raw backend interface too: an option is taken, or refused naming backend and option."""
    queue = Queue(f'q_{uid}', catalog=catalog)
    Queue(f'e_{uid}', exchange=f'ex_{uid}', catalog=catalog)
    broker = harness.broker()
    name = type(broker).__name__
    calls = {'send': lambda **kw: broker.send(queue.name, '{}', **kw),
             'send_many': lambda **kw: broker.send_many(queue.name, ['{}'], **kw),
             'publish': lambda **kw: broker.publish(f'ex_{uid}', '{}', 't', **kw)}
    # Options other backends take (AMQP/NATS timeout, Kafka key) are no exception where unknown.
    refused = sorted({'nope', 'key', 'timeout', 'priority', 'expiration'} - broker.send_options)
    for method, call in calls.items():
        for option in refused:
            with pytest.raises(UnsupportedOption, match=rf"{name}\.{method}: unsupported option '{option}'") as err:
                await call(**{option: 1})
            assert isinstance(err.value, MicroAgentError)
    assert await getattr(broker, queue.name).length() == 0
