"""microagent 1.9's documented API on our design: one test (or more) per documented name."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import microagent
from microagent import (
    AbstractQueueBroker,
    BackendError,
    Catalog,
    ConfigurationError,
    DoubleLoadError,
    MicroAgent,
    MissConfig,
    Queue,
    Signal,
    configure,
    consumer,
    cron,
    load_stuff,
    periodic,
    receiver,
)
from microagent.delivery import ConsumerRunner, Delivery
from microagent.tools.memory import MemoryBroker, MemorySignalBus
from microagent.tools.mocks import BrokerMock, BusMock

from .helpers import Collector, eventually


def write(tmp_path: Path, data: dict[str, Any], name: str = 'signals.json') -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return f'file://{path}'


# -- declarations: configure, load_stuff, Signal./Queue., version, default_prefix, DoubleLoadError -------------------


def test_configure_and_class_attribute_access(tmp_path, uid):
    source = write(tmp_path, {'version': 2, 'signals': [{'name': f'user_created_{uid}', 'providing_args': ['id']}],
                              'queues': [{'name': f'mailer_{uid}'}]})
    assert configure(source) is None
    signal = getattr(Signal, f'user_created_{uid}')
    assert signal is Signal.get(f'user_created_{uid}') and signal.providing_args == ('id',)
    assert getattr(Queue, f'mailer_{uid}') is Queue.get(f'mailer_{uid}')
    with pytest.raises(AttributeError, match='is not declared'):
        Signal.not_declared_anywhere
    with pytest.raises(AttributeError, match='is not declared'):
        Queue.not_declared_anywhere
    assert not hasattr(Signal, 'not_declared_anywhere')


def test_load_stuff_returns_signals_and_queues(tmp_path, catalog):
    source = write(tmp_path, {'signals': [{'name': 'started', 'providing_args': []}], 'queues': [{'name': 'mailer'}]})
    signals, queues = load_stuff(source, catalog=catalog)
    assert signals.started.name == 'started' and queues.mailer.name == 'mailer'


def test_double_load_identical_and_additive_are_fine_conflict_raises(tmp_path, catalog):
    both = write(tmp_path, {'signals': [{'name': 'a', 'providing_args': ['x']}], 'queues': [{'name': 'q'}]})
    configure(both, catalog=catalog)
    configure(both, catalog=catalog)  # the same again: fine
    # The seeds' way: signals and queues from separate loads of separate files.
    configure(write(tmp_path, {'queues': [{'name': 'other'}]}, 'queues.json'), catalog=catalog)
    assert set(catalog.queues) == {'q', 'other'}
    conflict = write(tmp_path, {'signals': [{'name': 'a', 'providing_args': ['y']}]}, 'conflict.json')
    with pytest.raises(DoubleLoadError, match="signal 'a' redeclared with a different providing_args") as info:
        configure(conflict, catalog=catalog)
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, RuntimeError)


def test_default_prefix_sets_bus_prefix_explicit_prefix_wins(tmp_path):
    catalog = Catalog()
    assert MemorySignalBus(catalog=catalog).prefix == 'PUBSUB'
    configure(write(tmp_path, {'default_prefix': 'MYAPP', 'signals': []}), catalog=catalog)
    assert MemorySignalBus(catalog=catalog).prefix == 'MYAPP'
    assert MemorySignalBus(catalog=catalog, prefix='OTHER').prefix == 'OTHER'
    configure(write(tmp_path, {'default_prefix': 'MYAPP', 'queues': []}, 'same.json'), catalog=catalog)
    with pytest.raises(DoubleLoadError, match='default_prefix'):
        configure(write(tmp_path, {'default_prefix': 'ELSE', 'queues': []}, 'else.json'), catalog=catalog)
    with pytest.raises(ConfigurationError, match='default_prefix'):
        configure(write(tmp_path, {'default_prefix': 'A:B', 'queues': []}, 'bad.json'), catalog=Catalog())


def test_unknown_top_level_keys_warn_wrong_declarations_fail(tmp_path, catalog, caplog):
    with caplog.at_level(logging.WARNING, logger='microagent.loader'):
        configure(write(tmp_path, {'version': 3, 'owner': 'team-a', 'queues': [{'name': 'q'}]}), catalog=catalog)
    assert "ignoring unknown top-level keys ['owner']" in caplog.text and 'q' in catalog.queues
    with pytest.raises(ConfigurationError, match="declares nothing: unknown keys \\['queue'\\]"):
        configure(write(tmp_path, {'queue': [{'name': 'typo'}]}, 'typo.json'), catalog=catalog)
    with pytest.raises(ConfigurationError, match='must match'):
        configure(write(tmp_path, {'queues': [{'name': 'Bad-Name'}]}, 'bad.json'), catalog=catalog)
    with pytest.raises(ConfigurationError, match='"version" must be'):
        configure(write(tmp_path, {'version': [2], 'queues': []}, 'ver.json'), catalog=catalog)


def test_signal_make_channel_name(catalog):
    signal = Signal('user_created', ['user_id'], catalog=catalog)
    assert signal.make_channel_name('APP') == 'APP:user_created:*'
    assert signal.make_channel_name('APP', 'users') == 'APP:user_created:users'


# -- the agent: MissConfig, sync periodic/cron, bind_* methods, timer and hooks modules ------------------------------


def test_miss_config_for_a_non_bus_or_broker(catalog):
    signal, queue = Signal('s', [], catalog=catalog), Queue('q', catalog=catalog)

    class Agent(MicroAgent):
        @receiver(signal)
        async def on_signal(self, **kwargs: Any) -> None: ...

        @consumer(queue)
        async def on_message(self, **kwargs: Any) -> None: ...

    with pytest.raises(MissConfig, match='bus must be a signal bus'):
        Agent(bus='redis://localhost', broker=BrokerMock())
    with pytest.raises(MissConfig, match='broker must be a queue broker'):
        Agent(bus=BusMock(), broker=object())
    with pytest.raises(MissConfig, match='has consumers but no broker'):
        Agent(bus=BusMock())
    assert Agent(bus=BusMock(), broker=BrokerMock())
    from microagent.agent import MissConfig as FromAgent
    assert FromAgent is MissConfig and issubclass(MissConfig, ConfigurationError)


async def test_sync_periodic_runs_in_a_worker_thread_without_blocking_the_loop(caplog):
    release = threading.Event()
    threads: list[int] = []

    class Agent(MicroAgent):
        @periodic(period=0.05, timeout=0.2)
        def blocking(self) -> None:
            threads.append(threading.get_ident())
            release.wait(5)  # blocks its thread, never the event loop

        @cron('* * * * * *', timeout=1)
        def every_second(self) -> None:
            threads.append(-1)

    agent = Agent()
    assert sorted(type(t).__name__ for t in agent.schedules) == ['CRONTask', 'PeriodicTask']
    assert len(agent.periodic_tasks) == 1 and len(agent.cron_tasks) == 1
    with caplog.at_level(logging.WARNING):
        await agent.start()
        try:
            await eventually(lambda: [t for t in threads if t != -1], 5)
            ticks = 0
            while ticks < 20:  # the loop runs while the handler blocks
                await asyncio.sleep(0.01)
                ticks += 1
            await eventually(lambda: 'still going in its thread' in caplog.text, 5)
        finally:
            release.set()
            await agent.stop(timeout=5)
    assert threading.get_ident() not in threads
    assert 'run cancelled after timeout' in caplog.text


async def test_bind_receivers_and_consumers(catalog):
    signal, queue = Signal('s', [], catalog=catalog), Queue('q', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @receiver(signal)
        async def on_signal(self, **kwargs: Any) -> None:
            seen.add('signal')

        @consumer(queue)
        async def on_message(self, **kwargs: Any) -> None:
            seen.add('message')

    bus, broker = MemorySignalBus(catalog=catalog), MemoryBroker(catalog=catalog)
    agent = Agent(bus=bus, broker=broker)
    await agent.bind_receivers(agent.receivers)
    await agent.bind_consumers(agent.consumers)
    await bus.s.send('t')
    await broker.q.send({})
    assert sorted(await seen.wait(2, 5)) == ['message', 'signal']
    await agent.stop(timeout=1)


def test_hooks_and_timer_modules():
    from microagent import hooks, timer
    assert hooks.on is microagent.on and hooks.ServerInterrupt is microagent.ServerInterrupt
    assert set(hooks.HOOKS) == {'pre_start', 'post_start', 'pre_stop', 'server'}
    assert issubclass(timer.PeriodicTask, timer.ScheduledTask) and issubclass(timer.CRONTask, timer.ScheduledTask)
    assert 'pre_start' in (hooks.__doc__ or '') and 'cron' in (timer.__doc__ or '')


# -- brokers: the three abstract methods, prepared_data, raw-message keywords ----------------------------------------


class ListBroker(AbstractQueueBroker):
    """A broker written as for microagent 1.9: send, bind and queue_length, calling handlers itself."""

    def __init__(self, dsn: str, **options: Any) -> None:
        super().__init__(dsn, **options)
        self.queues: dict[str, asyncio.Queue[str]] = {}

    def _queue(self, name: str) -> asyncio.Queue[str]:
        return self.queues.setdefault(name, asyncio.Queue())

    async def send(self, name: str, message: str, **kwargs: Any) -> None:
        self._queue(name).put_nowait(message)

    async def bind(self, name: str) -> None:
        consumer = self._bindings[name]

        async def read() -> None:
            while True:
                raw = await self._queue(name).get()
                await consumer.handler(**self.prepared_data(consumer, raw))
        self._start_reader(name, read())

    async def queue_length(self, name: str, **options: Any) -> int:
        return self._queue(name).qsize()


async def test_a_broker_with_the_three_abstract_methods(catalog):
    queue = Queue('jobs', catalog=catalog)
    seen = Collector()

    class Dto:
        def __init__(self, n: int) -> None:
            self.n = n

    class Agent(MicroAgent):
        @consumer(queue, dto_class=Dto)
        async def on_job(self, dto: Dto, **kwargs: Any) -> None:
            seen.add((dto.n, kwargs))

    broker = ListBroker('list://', catalog=catalog)
    agent = Agent(broker=broker)
    await agent.start()
    await broker.jobs.send({'n': 7})
    assert await seen.wait(1, 5) == [(7, {'n': 7})]
    assert await broker.jobs.length() == 0
    with pytest.raises(BackendError, match='ListBroker keeps no dead letters'):
        await broker.dead_letters('jobs')
    await agent.stop(timeout=1)


class RawDelivery(Delivery):
    async def ack(self) -> None: ...
    async def retry(self, delay: float, error: str) -> None: ...
    async def dead_letter(self, error: str) -> None: ...

    def raw(self) -> dict[str, Any]:
        return {'amqp': 'the amqp message', 'kafka': 'the kafka record'}


async def test_raw_message_keywords_go_to_handlers_that_name_them(catalog):
    queue = Queue('raw', catalog=catalog)
    seen = Collector()

    class Named(MicroAgent):
        @consumer(queue)
        async def handle(self, amqp: Any, **data: Any) -> None:
            seen.add(('named', amqp, data))

    class Plain(MicroAgent):
        @consumer(queue)
        async def handle(self, **data: Any) -> None:
            seen.add(('plain', data))  # often passed on as a message: no raw object in it

    broker = MemoryBroker(catalog=catalog)
    for cls in (Named, Plain):
        agent = cls(broker=broker)
        runner = ConsumerRunner(broker, agent.consumers[0])
        runner.submit(RawDelivery('{"x": 1}'))
        await runner.drain(5)
    assert seen.items == [('named', 'the amqp message', {'x': 1}), ('plain', {'x': 1})]


# -- launcher: CONFIG, WIRE, ServerInterrupt, load_configuration, init_agent -----------------------------------------


def test_launcher_names(tmp_path, monkeypatch, uid):
    from microagent.launcher import ServerInterrupt, init_agent, load_configuration
    assert ServerInterrupt is microagent.ServerInterrupt
    source = write(tmp_path, {'signals': [{'name': f'ping_{uid}', 'providing_args': []}],
                              'queues': [{'name': f'jobs_{uid}'}]})
    (tmp_path / f'agents_{uid}.py').write_text(
        'from microagent import MicroAgent, Signal, Queue, receiver, consumer\n'
        'class Worker(MicroAgent):\n'
        f'    @receiver(Signal.ping_{uid})\n'
        '    async def ping(self, **kwargs): ...\n'
        f'    @consumer(Queue.jobs_{uid})\n'
        '    async def job(self, **kwargs): ...\n')
    (tmp_path / f'settings_{uid}.py').write_text(
        f'CONFIG = {source!r}\n'
        "WIRE = 'microagent1'\n"
        "BUS = {'default': {'backend': 'microagent.tools.redis.RedisSignalBus', 'dsn': 'redis://localhost/12'}}\n"
        "BROKER = {'default': {'backend': 'microagent.tools.redis.RedisBroker', 'dsn': 'redis://localhost/12',\n"
        "                      'wire': 'native'}}\n"
        f"AGENT = {{'worker': {{'backend': 'agents_{uid}.Worker', 'bus': 'default', 'broker': 'default',\n"
        "                      'settings': {'a': 1}}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    configs = dict(load_configuration(f'settings_{uid}'))
    backend, cfg = configs['worker']
    assert backend == f'agents_{uid}.Worker'
    assert cfg['bus'] == ('microagent.tools.redis._bus.RedisSignalBus',
                          {'dsn': 'redis://localhost/12', 'wire': 'microagent1'})
    assert cfg['broker'][1]['wire'] == 'native'  # an entry's own 'wire' wins over WIRE
    agent = init_agent(backend, cfg)
    assert type(agent).__name__ == 'Worker' and agent.settings == {'a': 1}
    assert agent.bus.wire == 'microagent1' and agent.broker.wire == 'native'
    with pytest.raises(ConfigurationError, match='not a MicroAgent'):
        init_agent('microagent.tools.mocks.BusMock', {})


def test_wire_is_checked():
    with pytest.raises(ConfigurationError, match="wire must be one of \\['native', 'microagent1'\\]"):
        MemorySignalBus(wire='microagent2')
    with pytest.raises(ConfigurationError, match='wire must be one of'):
        MemoryBroker(wire='v1')
    from microagent.tools.amqp import AMQPSignalBus
    # 1.9 had no AMQP bus: nothing to speak its format with, the bus stays native.
    assert AMQPSignalBus('amqp://guest:guest@127.0.0.1/', wire='microagent1').wire == 'native'


# -- the 1.9 wire format through the memory bus (the same code as Redis, in one process) -----------------------------


async def test_microagent1_wire_signals_and_rpc_with_a_native_bus(catalog, uid):
    signal = Signal('user_created', ['user_id'], catalog=catalog)
    rpc = Signal('count', ['user_id'], catalog=catalog)
    seen = Collector()
    dsn = f'memory://{uid}'

    class Agent(MicroAgent):
        @receiver(signal)
        async def created(self, signal: Signal, sender: str, **kwargs: Any) -> None:
            seen.add((self.bus.wire, sender, kwargs))

        @receiver(rpc)
        async def counter(self, user_id: int, **kwargs: Any) -> int:
            return user_id * 10

    old = MemorySignalBus(dsn, catalog=catalog, wire='microagent1')
    new = MemorySignalBus(dsn, catalog=catalog)
    agents = [Agent(bus=old), Agent(bus=new)]
    for agent in agents:
        await agent.start()
    try:
        await old.user_created.send('legacy', user_id=1)   # PREFIX:user_created:legacy, arguments as the body
        await new.user_created.send('native', user_id=2)
        items = await seen.wait(4, 5)
        assert sorted(items) == [('microagent1', 'legacy', {'user_id': 1}), ('microagent1', 'native', {'user_id': 2}),
                                 ('native', 'legacy', {'user_id': 1}), ('native', 'native', {'user_id': 2})]
        async with old.count.waiter('legacy', user_id=3, timeout=5) as responses:
            got = []
            async for response in responses:
                got.append(response)
                if len(got) == 2:
                    break
        assert got == [{'Agent.counter': 30}, {'Agent.counter': 30}]
        assert await new.count.call('native', user_id=4, timeout=5) == {'Agent.counter': 40}
        with pytest.raises(ConfigurationError, match='sender'):
            await old.user_created.send('a:b', user_id=1)
    finally:
        for agent in agents:
            await agent.stop(timeout=1)


async def test_a_newer_senders_extra_argument_reaches_an_old_style_receiver(catalog, uid):
    newer = Catalog()
    Signal('user_created', ['user_id', 'email'], catalog=newer)
    older = Signal('user_created', ['user_id'], catalog=catalog)
    seen = Collector()

    class Old(MicroAgent):
        @receiver(older)
        async def created(self, user_id: int) -> None:   # no **kwargs: the extra argument is left out
            seen.add(('named', user_id))

        @receiver(older)
        async def everything(self, **kwargs: Any) -> None:
            seen.add(('kwargs', kwargs['user_id'], kwargs.get('email')))

    dsn = f'memory://{uid}'
    agent = Old(bus=MemorySignalBus(dsn, catalog=catalog))
    await agent.start()
    sender = MemorySignalBus(dsn, catalog=newer)
    try:
        await sender.user_created.send('newer', user_id=1, email='a@b.c')
        assert sorted(await seen.wait(2, 5)) == [('kwargs', 1, 'a@b.c'), ('named', 1)]
    finally:
        await agent.stop(timeout=1)


async def test_microagent1_wire_has_no_headers(catalog, uid, caplog):
    from microagent.bus import signal_headers
    signal = Signal('traced', ['n'], catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @receiver(signal)
        async def on(self, n: int) -> None:
            seen.add((n, dict(signal_headers())))

    dsn = f'memory://{uid}'
    agent = Agent(bus=MemorySignalBus(dsn, catalog=catalog))
    await agent.start()
    legacy, native = (MemorySignalBus(dsn, catalog=catalog, wire=w) for w in ('microagent1', 'native'))
    try:
        with caplog.at_level(logging.WARNING):
            await legacy.traced.send('old', n=1, headers={'trace': 'a'})
            await native.traced.send('new', n=2, headers={'trace': 'b'})
            assert sorted(await seen.wait(2, 5)) == [(1, {}), (2, {'trace': 'b'})]
        assert 'wire microagent1 has no envelope: headers are not sent' in caplog.text
    finally:
        await agent.stop(timeout=1)
