"""AMQP fault tests: closed connections under load, SIGKILL mid-handler, broker restart, canary password.

Fault injection touches only our own RabbitMQ user's connections and our own
processes; the broker restart (it disturbs everybody) runs only with --slow.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from microagent import BackendError, Catalog, MicroAgent, Queue, Signal, consumer, receiver
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus

from .amqp_support import DSN, RabbitUser, rabbitmqctl, require_rabbit
from .helpers import Collector, eventually

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def rabbit_user() -> Iterator[RabbitUser]:
    require_rabbit()
    user = RabbitUser()
    user.create()
    try:
        yield user
    finally:
        user.delete()



def agent_of(queue: Queue, seen: set[int], collector: Collector | None = None) -> type[MicroAgent]:
    class Agent(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            seen.add(n)
            if collector is not None:
                collector.add(n)
    return Agent


@pytest.mark.parametrize('faults', [2, pytest.param(8, marks=pytest.mark.slow)])
async def test_connections_closed_under_load_nothing_lost(rabbit_user, closing, uid, faults):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen: set[int] = set()
    options = {'catalog': catalog, 'queue_expires': 120, 'max_reconnect_delay': 0.5}
    consumer_broker = AMQPBroker(rabbit_user.dsn, **options)
    producer = AMQPBroker(rabbit_user.dsn, **options)
    closing.extend([producer, consumer_broker])
    agent = agent_of(queue, seen)(broker=consumer_broker)
    await agent.start()
    bound = getattr(producer, queue.name)
    sent = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal sent
        while not stop.is_set():
            await bound.send({'n': sent}, timeout=30)  # waits out the reconnect, never hangs
            sent += 1

    async def inject() -> None:
        try:
            for _ in range(faults):
                target = len(seen) + 20
                await eventually(lambda: len(seen) >= target, 30)
                before = (producer.connection.connects, consumer_broker.consume_connection.connects)
                await asyncio.to_thread(rabbit_user.close_connections)
                await eventually(lambda: (producer.connection.connects, consumer_broker.consume_connection.connects)
                                 > before, 30)
        finally:
            stop.set()
    await asyncio.gather(produce(), inject())
    assert consumer_broker.consume_connection.connects >= faults + 1
    await eventually(lambda: seen >= set(range(sent)), 60)
    await agent.stop(timeout=1)


async def test_bus_resubscribes_after_connections_closed(rabbit_user, closing, uid):
    catalog = Catalog()
    ping = Signal(f'ping_{uid}', ['n'], catalog=catalog)
    seen = Collector()

    class Listener(MicroAgent):
        @receiver(ping)
        async def handle(self, signal: Signal, sender: str, n: int) -> int:
            seen.add(n)
            return n * 2
    listener_bus = AMQPSignalBus(rabbit_user.dsn, catalog=catalog, prefix=f'T{uid}', max_reconnect_delay=0.5)
    caller = AMQPSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    closing.extend([caller, listener_bus])
    await Listener(bus=listener_bus).start()
    assert await getattr(caller, ping.name).call('t', n=1, timeout=10) == {'Listener.handle': 2}
    connects = listener_bus.connection.connects
    await asyncio.to_thread(rabbit_user.close_connections)
    await eventually(lambda: listener_bus.connection.connects > connects, 30)

    async def answered() -> bool:
        # At most once: signals sent while re-subscribing are lost, so ask again until one arrives.
        try:
            return await getattr(caller, ping.name).call('t', n=5, timeout=1) == {'Listener.handle': 10}
        except TimeoutError:
            return False
    await eventually(answered, 30)


async def test_sigkill_mid_handler_redelivers_to_a_new_process(closing, uid):
    require_rabbit()
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    producer = AMQPBroker(DSN, catalog=catalog, queue_expires=120)
    closing.append(producer)
    first = await _worker('hang', queue.name)
    try:
        await getattr(producer, queue.name).send({'n': 42})
        assert await _line(first, 'started') == 'started 42'
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    second = await _worker('ok', queue.name)
    try:
        assert await _line(second, 'handled') == 'handled 42'
        async with asyncio.timeout(30):
            assert await second.wait() == 0
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()


@pytest.mark.parametrize('queue_type', ['classic', 'quorum'])
async def test_message_that_kills_every_consumer_ends_in_the_dlq(closing, uid, queue_type):
    # classic: this library counts the lost attempt (a copy); quorum: RabbitMQ does (x-delivery-count).
    require_rabbit()
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    producer = AMQPBroker(DSN, catalog=catalog, queue_expires=120, queue_type=queue_type)
    closing.append(producer)
    await getattr(producer, queue.name).send({'n': 13})
    workers: list[asyncio.subprocess.Process] = []

    async def settled() -> bool:
        return workers[-1].returncode is not None or bool(await producer.dead_letters(queue.name))
    try:
        # max_attempts 2: two processes die in the handler; the third finds the message's second
        # attempt lost too and dead-letters it instead of running it (no crash loop).
        for _ in range(3):
            workers.append(await _worker('die', queue.name, queue_type))
            await eventually(settled, 30)
        letters = await producer.dead_letters(queue.name)
        assert [worker.returncode for worker in workers[:2]] == [-signal.SIGKILL] * 2
        assert workers[2].returncode is None
        assert len(letters) == 1
        assert letters[0].attempts == 2
        assert 'redelivered' in letters[0].error
        assert await producer.queue_length(queue.name) == 0
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()


async def _worker(mode: str, queue: str, queue_type: str = 'classic') -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, '-m', 'tests.amqp_worker', mode, DSN, queue, queue_type, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    if mode != 'die':  # a dying worker may take its message, and die, before it says ready
        assert await _line(process, 'ready') == 'ready'
    return process


_SEEN: dict[int, list[str]] = {}


async def _line(process: asyncio.subprocess.Process, prefix: str) -> str:
    """The first line of the worker's output starting with *prefix* (lines read earlier count)."""
    assert process.stdout is not None
    seen = _SEEN.setdefault(process.pid, [])
    async with asyncio.timeout(60):
        while True:
            for index, line in enumerate(seen):
                if line.startswith(prefix):
                    return seen.pop(index)
            raw = await process.stdout.readline()
            if not raw:
                raise AssertionError(f'worker exited before printing {prefix!r}')
            seen.append(raw.decode().strip())


async def test_canary_password_never_in_logs_reprs_or_errors(rabbit_user, closing, caplog, uid):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    caplog.set_level(logging.DEBUG)
    seen: set[int] = set()
    broker = AMQPBroker(rabbit_user.dsn, catalog=catalog, queue_expires=120, max_reconnect_delay=0.5)
    bus = AMQPSignalBus(rabbit_user.dsn, catalog=catalog, prefix=f'T{uid}')
    closing.extend([broker, bus])
    agent = agent_of(queue, seen)(broker=broker)
    await agent.start()
    await getattr(broker, queue.name).send({'n': 1})
    await bus.bind(bus.channel('x'))
    await bus.send(bus.channel('x'), '{}')
    await eventually(lambda: 1 in seen, 20)
    connects = broker.connection.connects
    await asyncio.to_thread(rabbit_user.close_connections)
    await eventually(lambda: broker.connection.connects > connects, 30)
    wrong = f'canary{uuid.uuid4().hex}'
    bad = AMQPBroker(f'amqp://{rabbit_user.name}:{wrong}@127.0.0.1:5672/', catalog=catalog, connect_timeout=2)
    with pytest.raises(BackendError) as error:
        await getattr(bad, queue.name).send({'n': 2}, timeout=2)
    await bad.close()
    await agent.stop(timeout=1)
    texts = [caplog.text, str(error.value), repr(error.value), repr(broker), str(broker), repr(bus),
             repr(broker.connection), repr(bad)]
    for secret in (rabbit_user.password, wrong):
        for text in texts:
            assert secret not in text
    assert 'ACCESS_REFUSED' in str(error.value) or 'uthentication' in str(error.value)


@pytest.mark.slow
async def test_rabbitmq_restart_consumers_come_back(closing, uid):
    require_rabbit()
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen: set[int] = set()
    consumer_broker = AMQPBroker(DSN, catalog=catalog, queue_expires=600, max_reconnect_delay=1)
    producer = AMQPBroker(DSN, catalog=catalog, queue_expires=600, max_reconnect_delay=1)
    closing.extend([producer, consumer_broker])
    agent = agent_of(queue, seen)(broker=consumer_broker)
    await agent.start()
    await getattr(producer, queue.name).send({'n': 0})
    await eventually(lambda: 0 in seen, 20)
    await asyncio.to_thread(rabbitmqctl, 'stop_app')
    try:
        with pytest.raises(BackendError):
            await getattr(producer, queue.name).send({'n': -1}, timeout=2)  # an error within its timeout
    finally:
        await asyncio.to_thread(rabbitmqctl, 'start_app')
    for n in range(1, 20):
        await getattr(producer, queue.name).send({'n': n}, timeout=60)
    await eventually(lambda: seen >= set(range(20)), 60)
    await agent.stop(timeout=1)
