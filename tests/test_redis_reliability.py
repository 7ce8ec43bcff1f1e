"""Fault tests of the Redis backends: killed processes, poison messages, killed connections, leaked secrets.

Every fault touches only this test's own processes and connections (found by
client name, which carries the broker's or bus's uid).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from microagent import BackendError, Catalog, MicroAgent, Queue, Signal, consumer, receiver
from microagent.tools.redis import RedisBroker, RedisSignalBus

from . import redis_helpers
from .helpers import Collector, eventually
from .redis_helpers import DSN, kill_clients

ROOT = Path(__file__).resolve().parent.parent

admin = redis_helpers.admin      # fixtures shared by the Redis tests
prefix = redis_helpers.prefix


def start_consumer(key_prefix: str, queue: str, mode: str, report: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, '-m', 'tests.redis_consumer', DSN, key_prefix, queue, mode, report],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def reports(client, key: str) -> list[str]:
    return [item.decode() for item in await client.lrange(key, 0, -1)]


async def wait_report(client, key: str, item: str, timeout: float) -> list[str]:
    async def has() -> list[str] | None:
        found = await reports(client, key)
        return found if item in found else None
    result: list[str] = await eventually(has, timeout, interval=0.05)
    return result


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


async def test_sigkill_mid_handler_then_a_new_process_handles_it(admin, prefix, uid):
    queue, report = f'q_{uid}', f'{prefix}:report'
    first = start_consumer(prefix, queue, 'hang', report)
    second = None
    try:
        await wait_report(admin, report, 'hang:ready', 30)
        sender = RedisBroker(DSN, catalog=Catalog(), prefix=prefix)
        Queue(queue, catalog=sender.catalog)
        await getattr(sender, queue).send({'n': 7})
        await wait_report(admin, report, 'hang:7', 30)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        second = start_consumer(prefix, queue, 'record', report)
        await wait_report(admin, report, 'record:7', 60)
        assert await getattr(sender, queue).length() == 0
        await sender.close()
    finally:
        stop(first)
        if second is not None:
            stop(second)


async def test_message_that_kills_its_consumer_is_dead_lettered_after_max_attempts(admin, prefix, uid):
    queue, report = f'q_{uid}', f'{prefix}:report'
    sender = RedisBroker(DSN, catalog=Catalog(), prefix=prefix)
    Queue(queue, catalog=sender.catalog)
    await getattr(sender, queue).send({'n': 0})
    await getattr(sender, queue).send({'n': 1})
    processes, deaths = [], 0
    try:
        async with asyncio.timeout(90):
            while not await sender.dead_letters(queue):
                process = start_consumer(prefix, queue, 'suicide', report)
                processes.append(process)
                while process.poll() is None and not await sender.dead_letters(queue):
                    await asyncio.sleep(0.1)
                deaths += process.poll() == 17
        letters = await sender.dead_letters(queue)
        assert len(letters) == 1 and letters[0].attempts == 3
        assert 'consumer died' in letters[0].error
        assert deaths == 3
        reports = [r.decode() for r in await admin.lrange(report, 0, -1)]
        assert reports.count('suicide:0') == 3 and 'suicide:1' in reports
    finally:
        for process in processes:
            stop(process)
        await sender.close()


async def test_poison_message_reaches_dead_letters_while_others_flow(admin, prefix, uid):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=3)
        async def handle(self, n: int) -> None:
            if n == 0:
                raise ValueError('poison pill')
            seen.add(n)
    broker = RedisBroker(DSN, catalog=catalog, prefix=prefix, retry_delay=0.05)
    agent = Agent(broker=broker)
    await agent.start()
    try:
        await getattr(broker, queue.name).send_many([{'n': n} for n in range(50)])
        await seen.wait(49, 30)
        letters = await eventually(lambda: broker.dead_letters(queue.name), 30)
        entries = await admin.xrange(f'{prefix}:{queue.name}.dlq')
        assert len(letters) == len(entries) == 1
        assert letters[0].attempts == 3 and 'poison pill' in letters[0].error
        assert queue.deserialize(letters[0].body) == {'n': 0}
        await eventually(lambda: _length_is(broker, queue.name, 0), 10)
    finally:
        await agent.stop(timeout=5)


async def _length_is(broker: RedisBroker, name: str, value: int) -> bool:
    return await broker.queue_length(name) == value


async def test_client_kill_under_load_loses_nothing(admin, prefix, uid):
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen: set[int] = set()
    done = asyncio.Event()
    total = 600

    class Agent(MicroAgent):
        @consumer(queue, max_inflight=16)
        async def handle(self, n: int) -> None:
            await asyncio.sleep(0.001)
            seen.add(n)
            if len(seen) == total:
                done.set()
    broker = RedisBroker(DSN, catalog=catalog, prefix=prefix, heartbeat_interval=0.2, heartbeat_ttl=1.0)
    agent = Agent(broker=broker)
    await agent.start()
    name = f'microagent.broker.{broker.uid}'
    kills = 0
    try:
        for n in range(total):
            await _send_through_faults(broker, queue.name, queue.serialize({'n': n}))
            if n % 100 == 50:
                kills += await kill_clients(admin, name)
        assert kills > 0
        async with asyncio.timeout(60):
            await done.wait()
        assert seen == set(range(total))
        await eventually(lambda: _length_is(broker, queue.name, 0), 20)
    finally:
        await agent.stop(timeout=5)


async def _send_through_faults(broker: RedisBroker, name: str, message: str) -> None:
    # A send cut by a killed connection may fail once to the caller; the caller sends again (at least once).
    for _ in range(5):
        try:
            await broker.send(name, message)
            return
        except BackendError:
            await asyncio.sleep(0.05)
    raise AssertionError('send kept failing')


async def test_bus_resubscribes_after_client_kill(admin, uid, caplog):
    catalog = Catalog()
    sig = Signal(f'ping_{uid}', ['n'], catalog=catalog)
    seen = Collector()

    class Listener(MicroAgent):
        @receiver(sig)
        async def on_ping(self, signal: Signal, sender: str, n: int) -> None:
            seen.add(n)
    bus = RedisSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    sender = RedisSignalBus(DSN, catalog=catalog, prefix=f'T{uid}')
    legacy = RedisSignalBus(DSN, catalog=catalog, prefix=f'T{uid}', wire='microagent1')
    agent = Listener(bus=bus)
    await agent.start()
    try:
        await getattr(sender, sig.name).send('t', n=1)
        await seen.wait(1, 10)
        with caplog.at_level(logging.WARNING, logger='microagent.bus'):
            assert await kill_clients(admin, f'microagent.bus.{bus.uid}', pubsub=True) == 1
            await eventually(lambda: bus.reconnects == 1, 5, interval=0.01)
        assert 'deaf' in caplog.text
        # Back within the second: a signal sent now arrives, and so does one in microagent 1.9's format
        # (its channel pattern was subscribed again too).
        await eventually(lambda: _ping(sender, sig.name, seen, 2), 5, interval=0.05)
        await eventually(lambda: _ping(legacy, sig.name, seen, 3), 5, interval=0.05)
    finally:
        await agent.stop(timeout=2)
        await sender.close()
        await legacy.close()


async def _ping(bus: RedisSignalBus, name: str, seen: Collector, n: int) -> bool:
    await getattr(bus, name).send('t', n=n)
    await asyncio.sleep(0.02)
    return n in seen.items


async def test_canary_password_never_leaks(admin, prefix, uid, caplog):
    user, canary = f'canary_{uid}', f'Canary-{uid}-Pw'
    await admin.execute_command('ACL', 'SETUSER', user, 'on', f'>{canary}', '~*', '&*', '+@all')
    try:
        with caplog.at_level(logging.DEBUG):
            texts = await _exercise_with_password(user, canary, prefix, uid)
        texts.append(caplog.text)
        assert any('authentication refused' in text for text in texts)  # the failures were named...
        assert all(canary not in text for text in texts)                # ...without the password
        assert 'Canary' not in caplog.text
    finally:
        await admin.execute_command('ACL', 'DELUSER', user)


async def _exercise_with_password(user: str, canary: str, key_prefix: str, uid: str) -> list[str]:
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    sig = Signal(f's_{uid}', ['n'], catalog=catalog)
    dsn = f'redis://{user}:{canary}@127.0.0.1:6379/15'
    broker = RedisBroker(dsn, catalog=catalog, prefix=key_prefix)
    bus = RedisSignalBus(dsn, catalog=catalog, prefix=f'T{uid}')
    texts = [repr(broker), str(broker), repr(bus), str(bus), repr(broker.redis)]
    await getattr(broker, queue.name).send({'n': 1})
    await getattr(bus, sig.name).send('t', n=1)
    assert await broker.queue_length(queue.name) == 1
    await broker.close()
    await bus.close()
    for bad in (f'redis://{user}:{canary}x@127.0.0.1:6379/15', f'redis://{user}:{canary}@127.0.0.1:1/15'):
        for target in (RedisBroker(bad, catalog=catalog, prefix=key_prefix), RedisSignalBus(bad, catalog=catalog)):
            texts.append(repr(target))
            with pytest.raises(BackendError) as info:
                if isinstance(target, RedisBroker):
                    await getattr(target, queue.name).send({'n': 2})
                else:
                    await getattr(target, sig.name).send('t', n=2)
            texts.extend([str(info.value), repr(info.value), str(info.getrepr())])
            await target.close()
    # The subscriber's own reconnect loop logs its failures (captured by the caller).
    deaf = RedisSignalBus(f'redis://{user}:{canary}x@127.0.0.1:6379/15', catalog=catalog, subscribe_timeout=0.5)
    with pytest.raises(BackendError) as info:
        await deaf.bind(deaf.channel(sig.name))
    texts.extend([repr(deaf), str(info.value), str(info.getrepr())])
    await deaf.close()
    return texts
