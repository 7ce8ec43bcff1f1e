"""Kafka faults: a consumer killed mid-handler, a poison message, a broker restart.

Only our own processes are hurt: a worker subprocess started here, a private
tansu on a free port.

Run as ``python -m tests.test_kafka_reliability worker BOOTSTRAP QUEUE`` it is
the worker: a consumer that reports each message it starts and never ends it.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip('aiokafka')
from aiokafka import AIOKafkaConsumer, TopicPartition

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent._tasks import TaskSet
from microagent.tools.kafka import KafkaBroker

from .backends.kafka import BACKEND, SESSION_TIMEOUT
from .helpers import Collector, eventually
from .kafka_server import Tansu, free_port, require_kafka

SLOW = BACKEND.slow_factor
CRASH_ATTEMPTS = 3
ROOT = Path(__file__).resolve().parent.parent


def agent_for(queue: Queue, handler: Any, **options: Any) -> type[MicroAgent]:
    class Agent(MicroAgent):
        @consumer(queue, **options)
        async def handle(self, **kwargs: Any) -> None:
            await handler(**kwargs)
    return Agent


@pytest.fixture
async def stack() -> Any:
    """Brokers and agents built by a test, stopped and closed at its end."""
    made: list[Any] = []

    def keep(item: Any) -> Any:
        made.append(item)
        return item
    yield keep
    for item in reversed(made):
        if isinstance(item, MicroAgent):
            if item.started:
                await item.stop(timeout=1)
        else:
            await item.close()


async def _eq(coro: Any, value: Any) -> bool:
    return await coro == value


# -- SIGKILL of a consumer mid-handler -----------------------------------------------

async def test_consumer_killed_mid_handler_message_handled_after_new_member_joins(stack, uid):
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kk_{uid}', catalog=catalog)
    sender = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog))
    await getattr(sender, queue.name).send({'n': 42})
    worker = await _spawn(bootstrap, queue.name, 'hang')
    try:
        async with asyncio.timeout(30 * SLOW):
            line = await worker.stdout.readline()
        assert line.strip() == b'started 42'
    finally:
        _kill(worker)
        await worker.wait()
    # Nothing was committed: once the dead member's session expires, the new member gets it.
    seen = Collector()

    async def handler(n):
        seen.add(n)
    broker = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, session_timeout=SESSION_TIMEOUT))
    stack(await _started(agent_for(queue, handler)(broker=broker)))
    assert await seen.wait(1, 40 * SLOW) == [42]
    await eventually(lambda: _eq(broker.queue_length(queue.name), 0), 20 * SLOW)


async def _started(agent: MicroAgent) -> MicroAgent:
    await agent.start()
    return agent


async def _worker(bootstrap: str, name: str, mode: str = 'hang') -> None:
    catalog = Catalog()
    queue = Queue(name, catalog=catalog)

    async def hang(n: int) -> None:
        print(f'started {n}', flush=True)
        await asyncio.Event().wait()

    async def work(n: int) -> None:
        await asyncio.sleep(0.02)
        print(f'done {n}', flush=True)
    async def crash(n: int) -> None:
        if n < 0:
            os._exit(1)  # the poison: kills its process before it can settle anything
        await asyncio.sleep(0.01)
        print(f'done {n}', flush=True)
    handler = {'hang': hang, 'work': work, 'crash': crash}[mode]
    broker = KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, session_timeout=SESSION_TIMEOUT, partitions=2,
                         max_attempts=CRASH_ATTEMPTS)
    await agent_for(queue, handler, timeout=600, max_inflight=8)(broker=broker).start()
    await asyncio.Event().wait()


async def _spawn(bootstrap: str, name: str, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, '-m', 'tests.test_kafka_reliability', 'worker', bootstrap, name, mode,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        os.kill(process.pid, signal.SIGKILL)


async def _collect(process: asyncio.subprocess.Process, into: Collector) -> None:
    while line := await process.stdout.readline():
        into.add(int(line.split()[1]))


async def test_message_that_kills_its_consumer_ends_in_the_dlq_after_max_attempts(stack, uid):
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kc_{uid}', catalog=catalog)
    sender = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog))
    # One partition: the poison sits between messages that must still be handled, in order, after it.
    await getattr(sender, queue.name).send_many([{'n': n} for n in (0, 1, 2, -1, 3, 4, 5)])
    done = Collector()
    readers = TaskSet('crash readers')
    try:
        for _ in range(CRASH_ATTEMPTS):  # each start handles the poison once more (alone after the first crash)
            worker = await _spawn(bootstrap, queue.name, 'crash')
            readers.spawn(_collect(worker, done))
            async with asyncio.timeout(60 * SLOW):
                assert await worker.wait() == 1
        worker = await _spawn(bootstrap, queue.name, 'crash')
        readers.spawn(_collect(worker, done))
        await eventually(lambda: {3, 4, 5} <= set(done.items), 60 * SLOW, interval=0.1)
        assert worker.returncode is None
    finally:
        _kill(worker)
        await worker.wait()
        await readers.drain(5)
    assert set(done.items) == {0, 1, 2, 3, 4, 5}
    [dead] = await sender.dead_letters(queue.name)
    assert (json.loads(dead.body), dead.attempts) == ({'n': -1}, CRASH_ATTEMPTS)
    assert 'died' in dead.error
    [record] = await _raw_records(bootstrap, f'{queue.name}.dlq')
    headers = dict(record.headers)
    assert headers['x-attempts'] == str(CRASH_ATTEMPTS).encode() and b'died' in headers['x-error']


@pytest.mark.slow
async def test_soak_repeated_sigkills_lose_nothing(stack, uid):
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kz_{uid}', catalog=catalog)
    sender = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, partitions=2))
    await getattr(sender, queue.name).send({'n': -1})  # creates the 2-partition topic first
    done = Collector()
    readers = TaskSet('soak readers')
    workers = [await _spawn(bootstrap, queue.name, 'work') for _ in range(2)]
    for worker in workers:
        readers.spawn(_collect(worker, done))
    try:
        for round_ in range(4):
            await getattr(sender, queue.name).send_many([{'n': round_ * 100 + n} for n in range(100)])
            await done.wait(len(done) + 30, 60 * SLOW)
            victim = workers.pop(0)
            _kill(victim)
            await victim.wait()
            workers.append(await _spawn(bootstrap, queue.name, 'work'))
            readers.spawn(_collect(workers[-1], done))
        expected = {-1, *range(400)}
        await eventually(lambda: expected <= set(done.items), 120 * SLOW, interval=0.2)
    finally:
        for worker in workers:
            _kill(worker)
            await worker.wait()
        await readers.drain(5)


# -- SIGSTOP past the session timeout: the zombie fence ---------------------------------

async def test_member_stopped_past_its_session_does_not_handle_its_successors_backlog(stack, uid):
    """A SIGSTOPped member loses its partitions; after SIGCONT it must not handle what its fetch returned."""
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'ks_{uid}', catalog=catalog)
    sender = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, partitions=2))
    send = getattr(sender, queue.name)
    zombie_done, successor_done = Collector(), Collector()
    readers = TaskSet('stall readers')
    worker = await _spawn(bootstrap, queue.name, 'work')
    readers.spawn(_collect(worker, zombie_done))
    try:
        await send.send_many([{'n': n} for n in range(10)])
        await zombie_done.wait(10, 40 * SLOW)
        os.kill(worker.pid, signal.SIGSTOP)
        # Sent while it is stopped: its pending fetch answers with them, buffered until SIGCONT.
        await send.send_many([{'n': n} for n in range(100, 150)])

        async def handler(n):
            successor_done.add(n)
        broker = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, session_timeout=SESSION_TIMEOUT))
        stack(await _started(agent_for(queue, handler)(broker=broker)))
        await successor_done.wait(50, 40 * SLOW)
        os.kill(worker.pid, signal.SIGCONT)
        # Once the zombie is back in the group, new work is shared again: after that it has fenced itself.
        await send.send_many([{'n': n} for n in range(200, 240)])
        await eventually(lambda: set(range(200, 240)) <= {*zombie_done.items, *successor_done.items}, 40 * SLOW)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        _kill(worker)
        await worker.wait()
        await readers.drain(5)
    assert set(range(100, 150)) <= set(successor_done.items)
    assert [n for n in zombie_done.items if 100 <= n < 150] == []


# -- members stopping together -----------------------------------------------------

async def test_members_stopping_together_never_commit_past_unhandled_messages(stack, uid):
    """A SIGTERM-like stop of the whole group cuts work short; what nobody handled stays ahead of the commit."""
    from reliability.audit import kafka_unhandled
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kt_{uid}', catalog=catalog)
    handled = Collector()

    async def slow(mid):
        await asyncio.sleep(0.3)  # the work: long enough that the stop finds handlers running
        handled.add(mid)
    members = []
    for _ in range(2):
        broker = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, session_timeout=SESSION_TIMEOUT,
                                   partitions=2))
        members.append((await _started(agent_for(queue, slow, max_inflight=2)(broker=broker)), broker))
    await getattr(members[0][1], queue.name).send_many([{'mid': f'm{n}'} for n in range(30)])
    await handled.wait(4, 30 * SLOW)
    await asyncio.gather(*(agent.stop(timeout=0.1) for agent, _ in members))
    await asyncio.gather(*(broker.close() for _, broker in members))
    unhandled = {f'm{n}' for n in range(30)} - set(handled.items)
    assert unhandled, 'the stop should have cut work short'
    where = await kafka_unhandled(bootstrap, queue.name, queue.name, unhandled)
    assert where == {'missing': [], 'passed': [], 'owed': sorted(unhandled)}


# -- poison message ----------------------------------------------------------------

async def test_poison_message_reaches_dead_letter_topic_while_others_flow(stack, uid):
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kp_{uid}', catalog=catalog)
    seen = Collector()

    async def handler(n):
        if n == 3:
            raise ValueError('poison pill')
        seen.add(n)
    broker = stack(KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, session_timeout=SESSION_TIMEOUT,
                               retry_delay=0.05))
    stack(await _started(agent_for(queue, handler, max_attempts=3, max_inflight=1)(broker=broker)))
    await getattr(broker, queue.name).send_many([{'n': n} for n in range(10)])
    await seen.wait(9, 30 * SLOW)
    assert sorted(seen.items) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    letters = await eventually(lambda: broker.dead_letters(queue.name), 30 * SLOW)
    assert [(queue.deserialize(d.body), d.attempts) for d in letters] == [({'n': 3}, 3)]
    assert 'poison pill' in letters[0].error
    records = await _raw_records(bootstrap, f'{queue.name}.dlq')
    assert len(records) == 1
    headers = dict(records[0].headers)
    assert headers['x-attempts'] == b'3'
    assert b'ValueError: poison pill' in headers['x-error']
    await eventually(lambda: _eq(broker.queue_length(queue.name), 0), 20 * SLOW)


async def _raw_records(bootstrap: str, topic: str) -> list[Any]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        batch = await reader.getmany(tp, timeout_ms=3000)
        return list(batch.get(tp, []))
    finally:
        await reader.stop()


# -- broker restart with durable storage --------------------------------------------

@pytest.fixture
def pg_database() -> Any:
    """A throw-away PostgreSQL database for tansu's storage (dropped at the end)."""
    from .services import require_port
    require_port('postgresql', 5432)
    name = f'tansu_{uuid.uuid4().hex[:10]}'
    _psql(f'CREATE DATABASE {name}')
    yield f'postgres://postgres@127.0.0.1/{name}'
    _psql(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')


def _psql(sql: str) -> None:
    subprocess.run(['psql', '-h', '127.0.0.1', '-U', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', sql],
                   check=True, capture_output=True, timeout=30)


async def test_broker_restart_with_postgres_storage_loses_no_acknowledged_send(stack, uid, pg_database):
    broker_process = Tansu(storage=pg_database)
    try:
        broker_process.start()
    except RuntimeError as exc:
        if 'FeatureNotEnabled' in str(exc):
            pytest.skip('this tansu build has no PostgreSQL storage engine (memory/s3 only)')
        raise
    try:
        await _restart_keeps_acknowledged(stack, broker_process, uid)
    finally:
        broker_process.stop()


@pytest.fixture
def s3_storage() -> Any:
    """A throw-away S3 bucket on a local moto server: durable storage this tansu build supports."""
    server = shutil.which('moto_server', path=os.path.dirname(sys.executable)) or shutil.which('moto_server')
    if server is None:
        pytest.skip('moto_server is not installed (pip install "moto[server]")')
    port = free_port()
    process = subprocess.Popen([server, '-H', '127.0.0.1', '-p', str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        endpoint = f'http://127.0.0.1:{port}'
        _create_bucket(endpoint, 'tansu', time.monotonic() + 20)
        yield 's3://tansu/', {'AWS_ACCESS_KEY_ID': 'test', 'AWS_SECRET_ACCESS_KEY': 'test',
                              'AWS_DEFAULT_REGION': 'us-east-1', 'AWS_ENDPOINT': endpoint, 'AWS_ALLOW_HTTP': 'true'}
    finally:
        process.kill()
        process.wait(timeout=10)


def _create_bucket(endpoint: str, bucket: str, deadline: float) -> None:
    # S3 CreateBucket is a plain PUT; moto accepts it unsigned.
    while True:
        try:
            request = urllib.request.Request(f'{endpoint}/{bucket}', method='PUT')
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_broker_restart_with_s3_storage_loses_no_acknowledged_send(stack, uid, s3_storage):
    storage, env = s3_storage
    broker_process = Tansu(storage=storage, env=env)
    broker_process.start()
    try:
        await _restart_keeps_acknowledged(stack, broker_process, uid)
    finally:
        broker_process.stop()


async def _restart_keeps_acknowledged(stack: Any, process: Tansu, uid: str) -> None:
    catalog = Catalog()
    queue = Queue(f'kw_{uid}', catalog=catalog)
    sender = stack(KafkaBroker(f'kafka://{process.bootstrap}', catalog=catalog))
    for n in range(20):
        await getattr(sender, queue.name).send({'n': n})   # each returned: acknowledged
    await getattr(sender, queue.name).send_many([{'n': n} for n in range(20, 50)])
    await sender.close()
    process.kill()
    process.start()
    seen = Collector()

    async def handler(n):
        seen.add(n)
    broker = stack(KafkaBroker(f'kafka://{process.bootstrap}', catalog=catalog, session_timeout=SESSION_TIMEOUT))
    agent = stack(await _started(agent_for(queue, handler)(broker=broker)))
    await seen.wait(50, 60 * SLOW)
    assert sorted(set(seen.items)) == list(range(50))
    # Leave the group while the broker is still up: the test stops the broker process next.
    await agent.stop(timeout=1)
    await broker.close()


if __name__ == '__main__' and sys.argv[1:2] == ['worker']:
    asyncio.run(_worker(*sys.argv[2:5]))
