"""The AMQP fast lane: frame splitting, confirms, deliveries, and its edges against the real RabbitMQ."""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiormq
import pamqp.frame
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.commands import Queue as QueueMethods
from pamqp.header import ContentHeader

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus
from microagent.tools.amqp import _wire as wire
from microagent.tools.amqp._confirms import Confirms
from microagent.tools.amqp._deliveries import Deliveries, Incoming
from microagent.tools.amqp._lane import Lane

from .amqp_support import DSN, require_lane
from .helpers import Collector, eventually

log = logging.getLogger('test.lane')
HEARTBEAT = b'\x08\x00\x00\x00\x00\x00\x00\xce'


def method(frame: Any, number: int = 1) -> bytes:
    return pamqp.frame.marshal(frame, number)


def content(body: bytes, number: int = 1, **properties: Any) -> bytes:
    header = pamqp.frame.marshal(ContentHeader(0, len(body), Basic.Properties(**properties)), number)
    return header + (pamqp.frame.marshal(ContentBody(body), number) if body else b'')


class Recorder:
    """A sink that takes method frames of one kind and records them."""

    def __init__(self, method_id: int) -> None:
        self.method_id = method_id
        self.taken: list[bytes] = []

    def take(self, kind: int, payload: bytes) -> bool:
        if kind == wire.METHOD and wire.method_id(payload) == self.method_id:
            self.taken.append(payload)
            return True
        return False


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


class FakeWriter:
    async def drain(self) -> None:
        return None


class FakeChannel:
    def __init__(self, number: int = 1) -> None:
        self.number = number
        self.closing: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @property
    def is_closed(self) -> bool:
        return self.closing.done()

    async def basic_ack(self, tag: int, wait: bool = True) -> None:
        self.settled = ('ack', tag)

    async def basic_nack(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        self.settled = ('nack', tag, requeue)


def wired_lane() -> tuple[Lane, FakeTransport, asyncio.Queue[Any]]:
    lane = Lane(log)
    transport = FakeTransport()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=10)
    lane.connected(transport, FakeWriter())  # type: ignore[arg-type]
    lane._queue = queue
    return lane, transport, queue


# -- wire --------------------------------------------------------------------------------


def test_wire_reads_what_pamqp_writes() -> None:
    payload = wire.payload_of(method(Basic.Deliver('c' * 200, 2 ** 40, True, 'ex.1', 'a.é.c')))
    assert wire.method_id(payload) == wire.DELIVER
    assert wire.deliver(payload) == ('c' * 200, 2 ** 40, True, 'ex.1', 'a.é.c')
    assert wire.ack(wire.payload_of(method(Basic.Nack(delivery_tag=5, multiple=True)))) == (5, True)
    assert wire.ack_frame(3, 77) == method(Basic.Ack(delivery_tag=77), 3)
    returned = wire.method(wire.payload_of(method(Basic.Return(312, 'NO_ROUTE', 'ex', 'k'))))
    assert (returned.reply_code, returned.reply_text) == (312, 'NO_ROUTE')


# -- lane: splitting ------------------------------------------------------------------------


def test_frames_split_anywhere_reach_sink_or_aiormq_in_order() -> None:
    lane = Lane(log)
    sink = Recorder(wire.ACK)
    lane.attach(1, sink)
    frames = [method(Basic.Ack(delivery_tag=1)), method(QueueMethods.DeclareOk('q', 0, 0)),
              method(Basic.Ack(delivery_tag=2)), method(Basic.Ack(delivery_tag=3), number=2),
              *[method(Basic.Ack(delivery_tag=n)) for n in range(4, 50)], method(Basic.Qos(prefetch_count=3))]
    stream = b''.join(frames)
    passed: list[bytes] = []
    rng = random.Random(7)
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 40)
        lane.receive(stream[pos:pos + step], passed.append)
        pos += step
    expected = [frames[1], frames[3], frames[-1]]
    # (Keep-alive heartbeats for aiormq may come in between: they are calls of their own.)
    assert b''.join(p for p in passed if p != HEARTBEAT) == b''.join(expected)
    assert [wire.ack(p)[0] for p in sink.taken] == [1, 2, *range(4, 50)]


def test_taken_frames_keep_aiormq_heartbeat_clock_fresh() -> None:
    lane = Lane(log)
    lane.attach(1, Recorder(wire.ACK))
    passed: list[bytes] = []
    lane._passed = 0.0  # nothing reached aiormq for a long time
    lane.receive(method(Basic.Ack(delivery_tag=1)), passed.append)
    assert passed == [HEARTBEAT]
    lane.receive(method(Basic.Ack(delivery_tag=2)), passed.append)
    assert len(passed) == 1  # at most one a second


def test_unknown_framing_goes_to_aiormq_untouched() -> None:
    lane = Lane(log)
    lane.attach(0, Recorder(wire.ACK))
    passed: list[bytes] = []
    lane.receive(b'AMQP\x00\x00\x09\x01', passed.append)
    lane.receive(method(Basic.Ack(delivery_tag=1), 0), passed.append)
    assert b''.join(passed) == b'AMQP\x00\x00\x09\x01' + method(Basic.Ack(delivery_tag=1), 0)


async def test_a_failing_sink_drops_the_connection() -> None:
    lane, transport, _ = wired_lane()

    class Broken:
        def take(self, kind: int, payload: bytes) -> bool:
            raise RuntimeError('bug')
    lane.attach(1, Broken())
    passed: list[bytes] = []
    lane.receive(method(Basic.Ack(delivery_tag=1)) + method(Basic.Qos(prefetch_count=1), 2), passed.append)
    assert transport.aborted
    lane.receive(method(Basic.Qos(prefetch_count=1), 2), passed.append)
    assert passed == []  # the connection is going: nothing more reaches anyone


async def test_writes_never_overtake_aiormq_queued_frames() -> None:
    lane, transport, queue = wired_lane()
    assert lane.write_now(b'first')
    queue.put_nowait('aiormq frame')
    assert not lane.write_now(b'second')
    await lane.write(b'second')
    assert transport.written == [b'first']
    assert [queue.get_nowait(), queue.get_nowait().payload] == ['aiormq frame', b'second']
    transport.aborted = True
    with pytest.raises(aiormq.ChannelInvalidStateError):
        await lane.write(b'third')


# -- confirms --------------------------------------------------------------------------------


def props(message_id: str) -> Basic.Properties:
    return Basic.Properties(delivery_mode=2, message_id=message_id)


async def test_confirms_ack_multiple_nack_and_return() -> None:
    lane, transport, _ = wired_lane()
    channel = FakeChannel()
    confirms = Confirms(channel, lane)  # type: ignore[arg-type]
    futures = [asyncio.ensure_future(confirms.publish('', 'q', b'{}', props(f'm{n}'))) for n in range(1, 6)]
    await asyncio.sleep(0)  # each task writes its publish at once (the lane's fast path), in order
    assert len(transport.written) == 5
    take = confirms.take
    assert take(wire.METHOD, wire.payload_of(method(Basic.Ack(delivery_tag=2, multiple=True))))
    await asyncio.sleep(0)
    assert [f.done() for f in futures] == [True, True, False, False, False]
    # A basic.return comes before the confirm of the same publish.
    assert take(wire.METHOD, wire.payload_of(method(Basic.Return(312, 'NO_ROUTE', '', 'q'))))
    header = ContentHeader(0, 2, props('m4'))
    assert take(wire.HEADER, wire.payload_of(pamqp.frame.marshal(header, 1)))
    assert take(wire.BODY, b'{}')
    assert take(wire.METHOD, wire.payload_of(method(Basic.Nack(delivery_tag=3))))
    assert take(wire.METHOD, wire.payload_of(method(Basic.Ack(delivery_tag=4))))
    await asyncio.gather(*futures[:4])
    assert [f.result() for f in futures[:4]] == [None, None, 'nack', 'returned: NO_ROUTE']
    assert not take(wire.METHOD, wire.payload_of(method(Basic.QosOk())))
    channel.closing.set_exception(aiormq.ChannelClosed(None, None))
    with pytest.raises(aiormq.ChannelClosed):
        await futures[4]
    assert 1 not in lane.sinks
    with pytest.raises(aiormq.ChannelInvalidStateError):
        await confirms.publish('', 'q', b'{}', props('m6'))


async def test_confirm_numbers_follow_wire_order_when_writes_queue() -> None:
    lane, _, queue = wired_lane()
    confirms = Confirms(FakeChannel(), lane)  # type: ignore[arg-type]
    for n in range(10):
        queue.put_nowait(n)  # aiormq's queue is full: publishes wait for room, in order
    waiting = [asyncio.ensure_future(confirms.publish('', 'q', b'{}', props(f'm{n}'))) for n in range(3)]
    await asyncio.sleep(0)
    for _ in range(10):
        queue.get_nowait()
    await eventually(lambda: queue.qsize() == 3)
    queued = [pamqp.frame.unmarshal(queue.get_nowait().payload[len(method(Basic.Publish(
        exchange='', routing_key='q', mandatory=True))):])[2].properties.message_id for _ in range(3)]
    assert queued == ['m0', 'm1', 'm2']
    confirms.take(wire.METHOD, wire.payload_of(method(Basic.Ack(delivery_tag=2))))
    await asyncio.sleep(0)
    assert [f.done() for f in waiting] == [False, True, False]
    for task in waiting:
        task.cancel()


async def test_a_cancelled_queued_publish_gives_its_number_back() -> None:
    lane, _, queue = wired_lane()
    confirms = Confirms(FakeChannel(), lane)  # type: ignore[arg-type]
    for n in range(10):
        queue.put_nowait(n)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await confirms.publish('', 'q', b'{}', props('lost'))
    while not queue.empty():
        queue.get_nowait()
    future = asyncio.ensure_future(confirms.publish('', 'q', b'{}', props('next')))
    await asyncio.sleep(0)
    confirms.take(wire.METHOD, wire.payload_of(method(Basic.Ack(delivery_tag=1))))
    assert await future is None


# -- deliveries ------------------------------------------------------------------------------


async def test_deliveries_assemble_bodies_and_leave_other_consumers_to_aiormq() -> None:
    lane = Lane(log)
    channel = FakeChannel(4)
    deliveries = Deliveries(channel, lane)  # type: ignore[arg-type]
    got: list[Incoming] = []
    deliveries.consumers['mine'] = got.append
    body = bytes(range(256)) * 3
    ours = method(Basic.Deliver('mine', 9, True, 'ex', 'key'), 4)
    ours += pamqp.frame.marshal(ContentHeader(0, len(body), Basic.Properties(headers={'x-attempt': 2})), 4)
    ours += b''.join(pamqp.frame.marshal(ContentBody(body[i:i + 100]), 4) for i in range(0, len(body), 100))
    theirs = method(Basic.Deliver('other', 10, False, '', 'q'), 4) + content(b'{}', 4)
    empty = method(Basic.Deliver('mine', 11, False, '', 'q'), 4) + content(b'', 4)
    passed: list[bytes] = []
    lane.receive(ours + theirs + empty, passed.append)
    assert b''.join(passed) == theirs
    assert [(m.delivery_tag, m.redelivered, m.routing_key, m.body) for m in got] == [
        (9, True, 'key', body), (11, False, 'q', b'')]
    assert got[0].headers == {'x-attempt': 2}
    channel.closing.set_result(None)
    await asyncio.sleep(0)  # done callbacks run on the next loop round
    assert 4 not in lane.sinks
    with pytest.raises(aiormq.ChannelInvalidStateError):
        await got[0].ack()


async def test_a_delivery_aiormq_made_settles_through_aiormq() -> None:
    channel = FakeChannel()
    header = ContentHeader(0, 2, Basic.Properties(headers={'x-attempt': 2}))
    message = DeliveredMessage(delivery=Basic.Deliver('t', 3, True, 'ex', 'rk'), header=header, body=b'{}',
                               channel=channel)  # type: ignore[arg-type]
    incoming = Incoming.of(message)
    assert (incoming.delivery_tag, incoming.redelivered, incoming.routing_key, incoming.headers) == (
        3, True, 'rk', {'x-attempt': 2})
    await incoming.ack()
    assert channel.settled == ('ack', 3)
    await incoming.nack(requeue=False)
    assert channel.settled == ('nack', 3, False)


# -- against RabbitMQ ---------------------------------------------------------------------------


@asynccontextmanager
async def consuming(catalog: Catalog, queue: Queue, dsn: str = DSN, *, max_attempts: int = 5,
                    **options: Any) -> AsyncIterator[tuple[AMQPBroker, Collector]]:
    """A broker with an agent consuming *queue*; yields it and the collected messages."""
    require_lane()
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=max_attempts)
        async def handle(self, **message: Any) -> None:
            seen.add(message)
    broker = AMQPBroker(dsn, catalog=catalog, queue_expires=120, **options)
    agent = Agent(broker=broker)
    await agent.start()
    try:
        yield broker, seen
    finally:
        await agent.stop(timeout=1)
        await broker.close()


async def test_messages_larger_than_a_frame_cross_intact(catalog, uid):
    queue = Queue(f'big_{uid}', catalog=catalog)
    async with consuming(catalog, queue) as (broker, seen):
        texts = [''.join(random.choice('abcdefgh') for _ in range(size)) for size in (300_000, 131_064, 10)]
        await getattr(broker, queue.name).send({'text': texts[0]})
        await broker.send_many(queue.name, [queue.serialize({'text': t}) for t in texts[1:]])
        await seen.wait(3, 20)
        assert sorted(m['text'] for m in seen.items) == sorted(texts)


async def test_a_failing_frame_handler_costs_a_reconnect_not_a_message(catalog, uid, monkeypatch):
    queue = Queue(f'q_{uid}', catalog=catalog)
    original = Deliveries._complete
    failures = iter([True])

    def once_broken(self: Deliveries) -> None:
        if next(failures, False):
            raise RuntimeError('a bug in a frame handler')
        original(self)
    monkeypatch.setattr(Deliveries, '_complete', once_broken)
    async with consuming(catalog, queue, max_attempts=3, retry_delay=0.05) as (broker, seen):
        await getattr(broker, queue.name).send({'n': 1})
        await seen.wait(1, 20)
        assert broker.consume_connection.connects == 2


async def test_aiormq_heartbeat_watch_survives_a_lane_that_takes_every_frame(catalog, uid):
    """aiormq drops a connection it reads nothing from for 3 heartbeats; the lane keeps it reading."""
    queue = Queue(f'q_{uid}', catalog=catalog)
    async with consuming(catalog, queue, f'{DSN}?heartbeat=1') as (broker, seen):
        bound = getattr(broker, queue.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 7  # more than aiormq's 6 s grace at heartbeat=1
        n = 0
        while loop.time() < deadline:
            await bound.send({'n': n})
            n += 1
        await seen.wait(n, 20)
        assert broker.connection.connects == 1
        assert broker.consume_connection.connects == 1


async def test_signals_and_rpc_through_the_lane(catalog, uid):
    require_lane()
    from microagent import Signal, receiver
    signal = Signal(f'ping_{uid}', providing_args=['n'], catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @receiver(signal)
        async def on_ping(self, signal: Any, sender: str, n: int) -> int:
            seen.add(n)
            return n * 2
    bus = AMQPSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    caller = AMQPSignalBus(f'{DSN}?name=caller', catalog=catalog, prefix=f'T{uid}')
    agent = Agent(bus=bus)
    await agent.start()
    try:
        answer = await getattr(caller, signal.name).call('test', n=21, timeout=10)
        assert list(answer.values()) == [42]
        for n in range(100):
            await getattr(caller, signal.name).send('test', n=n)
        await seen.wait(101, 10)
    finally:
        await agent.stop(timeout=1)
        await caller.close()
