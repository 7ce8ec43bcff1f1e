"""Kafka partitions and consumer processes: replicas share a 4-partition topic, order per key holds through
rebalances (members joining, a member SIGKILLed), the lag is reported per partition.

Run as ``python -m tests.test_kafka_partitions worker BOOTSTRAP QUEUE`` it is
a worker process: one consumer (``max_inflight=1``: a member handles each of
its partitions in offset order) that prints ``ready`` once it has partitions,
then a line ``<monotonic ns> <pid> <key> <n>`` per handled message (one
clock for every process of the machine, so the lines of all workers merge
into one timeline).

What a kill costs: the killed member's partitions go to the others, which
read them from the last committed offset, so the messages it had handled
but not yet committed are handled again (at most ``max_inflight +
commit_window`` per killed member): at least once, never lost, and the
order per key stays (a key's messages come again from an earlier one, then
go on: never one skipped ahead).
"""
from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip('aiokafka')

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent._tasks import TaskSet
from microagent.tools.kafka import KafkaBroker

from .backends.kafka import BACKEND, SESSION_TIMEOUT
from .helpers import eventually
from .kafka_server import require_kafka

SLOW = BACKEND.slow_factor
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
KEYS = [f'user{i}' for i in range(16)]   # enough keys to land on every partition
COMMIT_WINDOW = 8                        # a killed member's handled-but-uncommitted messages, at most
WORKER_OPTIONS = {'session_timeout': SESSION_TIMEOUT, 'partitions': PARTITIONS, 'fetch_max_wait_ms': 100,
                  'commit_window': COMMIT_WINDOW}


@dataclass(frozen=True)
class Handled:
    at: int
    pid: int
    key: str
    n: int


class Workers:
    """Worker processes and everything they printed."""

    def __init__(self, bootstrap: str, queue: str) -> None:
        self.bootstrap, self.queue = bootstrap, queue
        self.processes: list[asyncio.subprocess.Process] = []
        self.handled: list[Handled] = []
        self.ready: set[int] = set()
        self._changed = asyncio.Event()
        self._readers = TaskSet('kafka partition workers')

    async def spawn(self) -> asyncio.subprocess.Process:
        """Start a worker; returns once it holds partitions (its group join completed)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, '-m', 'tests.test_kafka_partitions', 'worker', self.bootstrap, self.queue,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        self.processes.append(process)
        self._readers.spawn(self._read(process), name=f'worker {process.pid}')
        await eventually(lambda: process.pid in self.ready or process.returncode is not None, 60 * SLOW)
        return process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            fields = line.split()
            if fields == [b'ready']:
                self.ready.add(process.pid)
            elif len(fields) == 4:
                self.handled.append(Handled(int(fields[0]), int(fields[1]), fields[2].decode(), int(fields[3])))
            self._changed.set()

    async def wait_handled(self, expected: set[tuple[str, int]], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not expected <= {(h.key, h.n) for h in self.handled}:
                self._changed.clear()
                await self._changed.wait()

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        self.processes.remove(process)

    async def close(self) -> None:
        for process in list(self.processes):
            await self.kill(process)
        await self._readers.drain(5)

    def timeline(self) -> dict[str, list[int]]:
        """Per key, the values in the order they were handled (all workers merged by their clock)."""
        per_key: dict[str, list[int]] = collections.defaultdict(list)
        for item in sorted(self.handled, key=lambda h: h.at):
            per_key[item.key].append(item.n)
        return per_key


def order_kept(values: list[int]) -> bool:
    """A key's handled values: each new one is the next (0, 1, 2...); a repeat is one seen before.

    >>> order_kept([0, 1, 2, 1, 2, 3]), order_kept([0, 2, 1])
    (True, False)
    """
    top = -1
    for value in values:
        if value > top + 1:
            return False
        top = max(top, value)
    return True


async def send_round(broker: KafkaBroker, queue: Queue, start: int, count: int) -> set[tuple[str, int]]:
    """Messages ``start..start+count-1`` of every key, each key's in order (one batch per key)."""
    for key in KEYS:
        await broker.send_many(queue.name, [queue.serialize({'key': key, 'n': n})
                                            for n in range(start, start + count)], key=key)
    return {(key, n) for key in KEYS for n in range(start, start + count)}


@dataclass(frozen=True)
class Load:
    rounds: int          # rounds of sends, ``per_round`` messages per key each
    per_round: int
    kills: int           # members SIGKILLed (and replaced) after the members joined


SMOKE = Load(rounds=4, per_round=5, kills=1)
FULL = Load(rounds=12, per_round=20, kills=4)


async def share_and_survive(load: Load, uid: str) -> tuple[Workers, int]:
    """2 members, then 4 (joins under traffic), then kills under traffic; every message handled."""
    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kp_{uid}', catalog=catalog)
    sender = KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, partitions=PARTITIONS)
    workers = Workers(bootstrap, queue.name)
    sent: set[tuple[str, int]] = set()
    try:
        for _ in range(2):
            await workers.spawn()
        rounds = iter(range(load.rounds))
        sent |= await send_round(sender, queue, next(rounds) * load.per_round, load.per_round)
        for _ in range(2):  # members join while the first round is being handled
            await workers.spawn()
        await workers.wait_handled(sent, 60 * SLOW)
        steady = len(workers.handled)
        sent |= await send_round(sender, queue, next(rounds) * load.per_round, load.per_round)
        await workers.wait_handled(sent, 60 * SLOW)
        sharing = {h.pid for h in workers.handled[steady:]}
        before_kills = len(workers.handled)
        for kill, round_ in zip(range(load.kills), rounds, strict=False):
            sent |= await send_round(sender, queue, round_ * load.per_round, load.per_round)
            await eventually(lambda: len(workers.handled) > before_kills + kill * 10, 30 * SLOW)
            await workers.kill(workers.processes[kill % len(workers.processes)])
            await workers.spawn()
        for round_ in rounds:
            sent |= await send_round(sender, queue, round_ * load.per_round, load.per_round)
        await workers.wait_handled(sent, 120 * SLOW)
        assert len(sharing) == 4, f'4 members, 4 partitions: every member handles one, got {len(sharing)}'
        assert await sender.queue_length(queue.name) >= 0
        return workers, before_kills
    finally:
        await workers.close()
        await sender.close()


def check(workers: Workers, before_kills: int, load: Load) -> tuple[int, int]:
    """Order per key; no duplicate before the kills; duplicates after within the bound. (distinct, dups)"""
    for key, values in workers.timeline().items():
        assert order_kept(values), f'{key}: {values}'
    early = collections.Counter((h.key, h.n) for h in workers.handled[:before_kills])
    assert max(early.values()) == 1, 'joins alone must not duplicate a message'
    counts = collections.Counter((h.key, h.n) for h in workers.handled)
    duplicates = sum(count - 1 for count in counts.values())
    # The bound of the docs: per killed member, max_inflight (1) running plus the commit window, per partition
    # it held (one of four, at most two when a replacement has not joined yet).
    assert duplicates <= load.kills * 2 * (1 + COMMIT_WINDOW), duplicates
    assert len(counts) == len(KEYS) * load.rounds * load.per_round
    return len(counts), duplicates


async def test_members_share_partitions_and_keep_order_per_key_through_joins_and_a_kill(uid: str) -> None:
    workers, before_kills = await share_and_survive(SMOKE, uid)
    distinct, duplicates = check(workers, before_kills, SMOKE)
    print(f'{SMOKE}: {distinct} messages handled, {duplicates} duplicates after {SMOKE.kills} kill(s)')


@pytest.mark.slow
async def test_repeated_member_kills_keep_order_per_key(uid: str) -> None:
    workers, before_kills = await share_and_survive(FULL, uid)
    distinct, duplicates = check(workers, before_kills, FULL)
    print(f'{FULL}: {distinct} messages handled, {duplicates} duplicates after {FULL.kills} kills')


async def test_lag_is_reported_per_partition(uid: str) -> None:
    from microagent.telemetry.numbers import series

    bootstrap = require_kafka()
    catalog = Catalog()
    queue = Queue(f'kl_{uid}', catalog=catalog)
    broker = KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, partitions=PARTITIONS)
    try:
        await send_round(broker, queue, 0, 3)
        lags = await broker.partition_lag(queue.name)
        assert set(lags) == {f'{queue.name}/{p}' for p in range(PARTITIONS)} | {f'{queue.name}.retry/{p}'
                                                                                for p in range(PARTITIONS)}
        assert sum(lags.values()) == len(KEYS) * 3 == await broker.queue_length(queue.name)
        assert sum(1 for lag in lags.values() if lag) >= 2  # keys spread over the partitions
        assert all(lag % 3 == 0 for lag in lags.values())  # a key's messages stay together

        class Idle(MicroAgent):
            @consumer(queue)
            async def handle(self, key: str, n: int) -> None:
                pass
        agent = Idle(broker=broker)  # not started: series() reads what queue_length last saw
        gauges = {labels['partition']: value for name, labels, value in series(agent)
                  if name == 'queue_partition_lag'}
        assert gauges == lags
    finally:
        await broker.close()


def test_replication_factor_of_new_topics() -> None:
    from microagent.exceptions import ConfigurationError

    assert KafkaBroker('kafka://127.0.0.1:9092', replication_factor=3).settings.replication_factor == 3
    with pytest.raises(ConfigurationError, match='replication_factor'):
        KafkaBroker('kafka://127.0.0.1:9092', replication_factor=0)


async def _worker(bootstrap: str, name: str) -> None:
    catalog = Catalog()
    queue = Queue(name, catalog=catalog)

    class Worker(MicroAgent):
        @consumer(queue, max_inflight=1)
        async def handle(self, key: str, n: int) -> None:
            await asyncio.sleep(0.002)  # a little work: a kill lands mid-batch
            print(f'{time.monotonic_ns()} {os.getpid()} {key} {n}', flush=True)
    broker = KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, **WORKER_OPTIONS)
    await Worker(broker=broker).start()
    print('ready', flush=True)
    await asyncio.Event().wait()


if __name__ == '__main__' and sys.argv[1:2] == ['worker']:
    asyncio.run(_worker(sys.argv[2], sys.argv[3]))
