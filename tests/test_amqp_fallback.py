"""The AMQP fast lane's fallback: the shape check of aiormq, one warning, and plain aiormq doing the work.

The whole contract suite also runs on plain aiormq (``tests/backends/amqp_plain.py``); here: the decision.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections.abc import Iterator
from typing import Any

import aiormq
import aiormq.abc
import pytest

from microagent import Catalog, MicroAgent, Queue, Signal, consumer, receiver
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus, _compat, _wire
from microagent.tools.amqp._lane import Lane

from .amqp_support import DSN, require_rabbit
from .helpers import Collector

WARNING = 'AMQP fast lane off'


@pytest.fixture(autouse=True)
def fresh_verdict() -> Iterator[None]:
    """Each test judges the (maybe faked) aiormq afresh, and later tests see the real one again."""
    _compat.forget()
    yield
    _compat.forget()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


@dataclasses.dataclass(frozen=True)
class OtherFrame:
    payload: bytes


class ConnectionWithoutQueue:
    """Takes a transport factory and watches for stuck connections, but declares no write queue."""

    def __init__(self, url: str, *, transport_factory: Any = None) -> None:
        self.url = url

    @property
    def is_connection_was_stuck(self) -> bool:
        return False


class NotAFactory:
    def create(self) -> None:  # not a coroutine function
        pass


def test_the_locked_aiormq_fits_the_lane() -> None:
    major = int(importlib.metadata.version('aiormq').split('.')[0])
    if major < 7:
        pytest.skip('the lane was written for aiormq 7; older ones may or may not fit')
    assert _compat.lane_problem() is None


@pytest.mark.parametrize(('change', 'reason'), [
    (lambda m: m.delattr(aiormq, 'TransportFactory'), 'TransportFactory'),
    (lambda m: m.setattr(aiormq, 'TransportFactory', NotAFactory), 'TransportFactory'),
    (lambda m: m.delattr(aiormq.Connection, 'is_connection_was_stuck'), 'is_connection_was_stuck'),
    (lambda m: m.setattr(aiormq.abc, 'ChannelFrame', OtherFrame), 'ChannelFrame'),
    (lambda m: m.setattr(aiormq, 'Connection', ConnectionWithoutQueue), 'write_queue'),
    (lambda m: m.setattr(_wire, 'ack_frame', lambda number, tag: b''), 'basic.ack'),
    (lambda m: m.setattr(_wire, 'DELIVER', 0), 'basic.deliver'),
    (lambda m: m.setattr(_wire, 'header', lambda payload: None), 'pamqp frames differ'),
], ids=['no-factory', 'sync-factory', 'no-stuck-watch', 'frame-class', 'no-write-queue', 'ack-layout',
        'deliver-id', 'header'])
def test_a_changed_aiormq_turns_the_lane_off_with_one_warning(monkeypatch: pytest.MonkeyPatch, caplog: Any,
                                                               change: Any, reason: str) -> None:
    if _compat.lane_problem() is not None:
        pytest.skip(f'the installed aiormq does not fit the lane anyway: {_compat.lane_problem()}')
    _compat.forget()
    change(monkeypatch)
    with caplog.at_level(logging.WARNING, logger='microagent.amqp'):
        problem = _compat.lane_problem()
        assert problem is not None and reason in problem
        _compat.report('again')  # one warning per process, whoever reports
    assert len(warnings_of(caplog)) == 1
    assert reason in warnings_of(caplog)[0]


async def test_a_connection_the_lane_cannot_bind_to_is_replaced_by_a_plain_one(monkeypatch, caplog) -> None:
    require_rabbit()
    if _compat.lane_problem() is not None:
        pytest.skip(f'the installed aiormq does not fit the lane anyway: {_compat.lane_problem()}')
    monkeypatch.setattr(Lane, 'bind', lambda self, connection: False)
    broker = AMQPBroker(DSN, catalog=Catalog(), queue_expires=120)
    try:
        with caplog.at_level(logging.WARNING, logger='microagent.amqp'):
            channel, lane = await broker.connection.channel(10)
        assert lane is None and not channel.is_closed
        assert len(warnings_of(caplog)) == 1
        assert not broker.connection.fast_lane
    finally:
        await broker.close()


async def roundtrip(uid: str, **options: Any) -> list[tuple[AMQPBroker, AMQPSignalBus]]:
    """Queues, signals and RPC through brokers and buses made with *options*; they are returned closed."""
    catalog = Catalog()
    queue = Queue(f'fb_{uid}', catalog=catalog)
    ping = Signal(f'ping_{uid}', ['n'], catalog=catalog)
    got = Collector()

    class Agent(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            got.add(('queue', n))

        @receiver(ping)
        async def pong(self, signal: Any, sender: str, n: int) -> int:
            got.add(('signal', n))
            return n * 2

    made = [(AMQPBroker(DSN, catalog=catalog, queue_expires=120, **options),
             AMQPSignalBus(DSN, catalog=catalog, prefix=f'FB{uid}', **options)) for _ in range(2)]
    agent = Agent(broker=made[0][0], bus=made[0][1])
    await agent.start()
    try:
        broker, bus = made[1]
        await getattr(broker, queue.name).send({'n': 1})
        await broker.send_many(queue.name, ['{"n": 2}', '{"n": 3}'])
        assert await getattr(bus, ping.name).call('test', n=21, timeout=10) == {'Agent.pong': 42}
        await got.wait(4, 20)
        assert set(got.items) >= {('queue', 1), ('queue', 2), ('queue', 3), ('signal', 21)}
        for broker, _ in made:
            assert (await broker.connection.channel(10))[1] is None
    finally:
        await agent.stop(timeout=2)
        for broker, bus in made:
            await broker.close()
            await bus.close()
    return made


async def test_without_transport_factory_everything_runs_on_plain_aiormq(monkeypatch, caplog, uid) -> None:
    require_rabbit()
    monkeypatch.delattr(aiormq, 'TransportFactory', raising=False)  # none before aiormq 6.9.1 anyway
    with caplog.at_level(logging.WARNING, logger='microagent.amqp'):
        await roundtrip(uid)
    warned = warnings_of(caplog)
    assert len(warned) == 1 and 'TransportFactory' in warned[0]


async def test_fast_lane_false_is_plain_aiormq_without_a_warning(caplog, uid) -> None:
    require_rabbit()
    with caplog.at_level(logging.WARNING, logger='microagent.amqp'):
        await roundtrip(uid, fast_lane=False)
    assert warnings_of(caplog) == []
