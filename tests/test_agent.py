from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from microagent import (
    ConfigurationError,
    MicroAgent,
    Queue,
    ServerInterrupt,
    Signal,
    consumer,
    cron,
    on,
    periodic,
    receiver,
)
from microagent.tools.memory import MemoryBroker, MemorySignalBus
from microagent.tools.mocks import BrokerMock, BusMock

from .helpers import Collector


@pytest.fixture
def decl(catalog, uid):
    return {
        'catalog': catalog,
        'queue': Queue(f'q_{uid}', catalog=catalog),
        'other': Queue(f'o_{uid}', catalog=catalog),
        'signal': Signal(f's_{uid}', ['n'], catalog=catalog),
    }


def test_handlers_collected_per_class_with_inheritance(decl):
    class Base(MicroAgent):
        @consumer(decl['queue'])
        async def handle(self, **kwargs: Any) -> None: ...

        @periodic(5)
        async def tick(self) -> None: ...

    class Child(Base):
        async def tick(self) -> None:  # overridden without decorator: no schedule
            ...

        @receiver(decl['signal'])
        async def on_signal(self, **kwargs: Any) -> None: ...

    base, child = Base(broker=BrokerMock()), Child(bus=BusMock(), broker=BrokerMock())
    assert [s.name for s in base.schedules] == ['Base.tick']
    assert child.schedules == []
    assert [c.queue.name for c in child.consumers] == [decl['queue'].name]
    assert [r.signal.name for r in child.receivers] == [decl['signal'].name]
    assert base.receivers == []


def test_construction_errors(decl):
    class WithConsumer(MicroAgent):
        @consumer(decl['queue'])
        async def handle(self, **kwargs: Any) -> None: ...

    class WithReceiver(MicroAgent):
        @receiver(decl['signal'])
        async def handle(self, **kwargs: Any) -> None: ...

    with pytest.raises(ConfigurationError, match='consumers but no broker'):
        WithConsumer()
    with pytest.raises(ConfigurationError, match='receivers but no bus'):
        WithReceiver()
    with pytest.raises(ConfigurationError, match='more than one consumer'):
        class Twice(MicroAgent):
            @consumer(decl['queue'])
            async def one(self, **kwargs: Any) -> None: ...

            @consumer(decl['queue'])
            async def two(self, **kwargs: Any) -> None: ...


@pytest.mark.parametrize(('factory', 'message'), [
    (lambda d: on('boot'), 'unknown event'),
    (lambda d: periodic(0), 'period must be a positive number'),
    (lambda d: periodic(1, timeout=-1), 'timeout must be a positive number'),
    (lambda d: periodic(1, start_after=-1), 'start_after'),
    (lambda d: cron('61 * * * *'), 'bad minute field'),
    (lambda d: cron('* * * *'), 'expected 5 fields'),
    (lambda d: cron('* * * * *', timezone='Mars/Base'), 'unknown time zone'),
    (lambda d: receiver(), 'expected Signal'),
    (lambda d: receiver('user_created'), 'expected Signal'),
    (lambda d: consumer('mailer'), 'expected a Queue'),
    (lambda d: consumer(d['queue'], timeout=0), 'timeout must be'),
    (lambda d: consumer(d['queue'], dto_name='not valid'), 'dto_name'),
    (lambda d: consumer(d['queue'], dto_class=3), 'dto_class'),
    (lambda d: consumer(d['queue'], max_inflight=0), 'max_inflight'),
])
def test_bad_decorator_arguments(decl, factory, message):
    with pytest.raises(ValueError, match=message):
        factory(decl)


def test_handlers_must_be_async(decl):
    with pytest.raises(ConfigurationError, match='must be an async function'):
        @consumer(decl['queue'])
        def handle(self: Any) -> None: ...


async def test_lifecycle_order_and_sync_hooks(decl):
    events: list[str] = []

    class Agent(MicroAgent):
        @on('pre_start')
        def setup(self) -> None:
            events.append('pre_start')

        @on('post_start')
        async def ready(self) -> None:
            events.append('post_start')

        @on('pre_stop')
        async def teardown(self) -> None:
            events.append('pre_stop')

        @consumer(decl['queue'])
        async def handle(self, **kwargs: Any) -> None:
            events.append('handled')
            handled.add(1)

    handled = Collector()
    broker = MemoryBroker(catalog=decl['catalog'])
    agent = Agent(broker=broker)
    await agent.start()
    assert events == ['pre_start', 'post_start']
    await getattr(broker, decl['queue'].name).send({})
    await handled.wait(1)
    await agent.stop()
    assert events == ['pre_start', 'post_start', 'handled', 'pre_stop']


async def test_start_flags_disable_parts(decl):
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(decl['queue'])
        async def handle(self, **kwargs: Any) -> None:
            seen.add('consumed')

        @receiver(decl['signal'])
        async def on_signal(self, **kwargs: Any) -> None:
            seen.add('received')

        @periodic(0.01)
        async def tick(self) -> None:
            seen.add('tick')

    bus, broker = BusMock(), BrokerMock()
    agent = Agent(bus=bus, broker=broker)
    await agent.start(enable_periodic_tasks=False, enable_receiving_signals=False,
                      enable_consuming_messages=False)
    bus.bind_receiver.assert_not_called()
    broker.bind_consumer.assert_not_called()
    await asyncio.sleep(0.05)
    assert seen.items == []
    await agent.stop()


async def test_servers_run_until_interrupted(decl):
    events: list[str] = []

    class Agent(MicroAgent):
        @on('server')
        async def http(self) -> None:
            events.append('http')
            raise ServerInterrupt

        @on('server')
        async def broken(self) -> None:
            events.append('broken')
            raise RuntimeError('boom')

    agent = Agent()
    await asyncio.wait_for(agent.start(), 5)
    assert sorted(events) == ['broken', 'http']


async def test_stop_cancels_running_server(decl):
    started = asyncio.Event()
    events: list[str] = []

    class Agent(MicroAgent):
        @on('server')
        async def forever(self) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                events.append('server closed')

        @on('pre_stop')
        def bye(self) -> None:
            events.append('pre_stop')

    agent = Agent()
    running = asyncio.create_task(agent.start())
    await started.wait()
    await agent.stop(timeout=0.1)
    await asyncio.wait_for(running, 5)
    assert events == ['server closed', 'pre_stop']


async def test_handler_error_is_logged_and_agent_goes_on(decl, caplog):
    seen = Collector()

    class Agent(MicroAgent):
        @receiver(decl['signal'])
        async def on_signal(self, signal: Signal, sender: str, n: int) -> None:
            if n == 0:
                raise RuntimeError('bad signal')
            seen.add(n)

    bus = MemorySignalBus('memory://', catalog=decl['catalog'])
    agent = Agent(bus=bus)
    await agent.start()
    with caplog.at_level(logging.ERROR):
        await bus.send(bus.channel(decl['signal'].name), decl['signal'].serialize({'s': 't', 'a': {'n': 0}}))
        await bus.send(bus.channel(decl['signal'].name), decl['signal'].serialize({'s': 't', 'a': {'n': 1}}))
        await seen.wait(1)
    assert 'Agent.on_signal' in caplog.text
    assert 'bad signal' in caplog.text
    await agent.stop()


async def test_receiver_timeout_enforced(decl, caplog):
    class Agent(MicroAgent):
        @receiver(decl['signal'], timeout=0.05)
        async def slow(self, **kwargs: Any) -> None:
            await asyncio.sleep(10)

    bus = MemorySignalBus()
    agent = Agent(bus=bus)
    await agent.start()
    with caplog.at_level(logging.ERROR):
        await bus.send(bus.channel(decl['signal'].name), decl['signal'].serialize({'s': 't', 'a': {'n': 0}}))
        for _ in range(100):
            if 'TimeoutError' in caplog.text:
                break
            await asyncio.sleep(0.02)
    assert 'TimeoutError' in caplog.text
    await agent.stop(timeout=0.1)


async def test_periodic_runs_and_timeout_cancels(decl, caplog):
    ticks = Collector()

    class Agent(MicroAgent):
        @periodic(0.02, timeout=0.01)
        async def tick(self) -> None:
            ticks.add(1)
            await asyncio.sleep(1)

    agent = Agent()
    with caplog.at_level(logging.ERROR):
        await agent.start()
        await ticks.wait(3)
        await agent.stop(timeout=0.1)
    assert 'cancelled after timeout' in caplog.text


def test_info_is_json_serialisable(decl):
    class Agent(MicroAgent):
        @on('pre_start')
        def setup(self) -> None: ...

        @periodic(5, timeout=2)
        async def tick(self) -> None: ...

        @cron('0 */4 * * *', timezone='Europe/Berlin')
        async def report(self) -> None: ...

        @receiver(decl['signal'])
        async def on_signal(self, **kwargs: Any) -> None: ...

        @consumer(decl['queue'], timeout=3, max_inflight=4)
        async def handle(self, **kwargs: Any) -> None: ...

    info = json.loads(json.dumps(Agent(bus=BusMock(), broker=BrokerMock()).info()))
    assert info['name'] == 'Agent'
    assert info['hooks'] == {'pre_start': ['setup']}
    assert info['consumers'][0]['options'] == {'max_inflight': 4}
    schedules = {s['handler']: s for s in info['schedules']}
    assert schedules['Agent.report']['cron'] == '0 */4 * * *'
    assert schedules['Agent.tick']['period'] == 5
    assert all('next_run' in s for s in info['schedules'])


async def test_shared_broker_stays_open_for_other_agents(decl):
    seen = Collector()

    class One(MicroAgent):
        @consumer(decl['queue'])
        async def handle(self, **kwargs: Any) -> None:
            seen.add('one')

    class Two(MicroAgent):
        @consumer(decl['other'])
        async def handle(self, **kwargs: Any) -> None:
            seen.add('two')

    broker = MemoryBroker(catalog=decl['catalog'])
    one, two = One(broker=broker), Two(broker=broker)
    await one.start()
    await two.start()
    await one.stop()
    await getattr(broker, decl['other'].name).send({})
    await seen.wait(1)
    await two.stop()


async def test_pydantic_and_callable_dto(decl):
    import pydantic

    class User(pydantic.BaseModel):
        user_id: int

    seen = Collector()

    class Agent(MicroAgent):
        @consumer(decl['queue'], dto_class=User)
        async def handle(self, dto: User, **kwargs: Any) -> None:
            seen.add(dto)

        @consumer(decl['other'], dto_class=lambda **kw: sorted(kw), dto_name='keys')
        async def other(self, keys: list[str], **kwargs: Any) -> None:
            seen.add(keys)

    broker = MemoryBroker(catalog=decl['catalog'])
    agent = Agent(broker=broker)
    await agent.start()
    await getattr(broker, decl['queue'].name).send({'user_id': 'x'})
    await getattr(broker, decl['queue'].name).send({'user_id': '7'})
    await getattr(broker, decl['other'].name).send({'b': 1, 'a': 2})
    await seen.wait(2)
    assert User(user_id=7) in seen.items
    assert ['a', 'b'] in seen.items
    letters = await broker.dead_letters(decl['queue'].name)
    assert 'User rejected the message' in letters[0].error
    await agent.stop()
