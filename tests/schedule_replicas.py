"""Run replica processes of tests/schedule_replica.py, kill the lease holder, and read the ticks back."""
from __future__ import annotations

import asyncio
import collections
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """The ticks of a replica run: (pid, time) in order of execution."""

    ticks: list[tuple[int, float]]
    kills: list[float] = field(default_factory=list)

    def slots(self, period: float) -> collections.Counter[int]:
        return collections.Counter(math.floor(t / period) for _, t in self.ticks)

    def duplicates(self, period: float) -> int:
        return sum(n - 1 for n in self.slots(period).values())

    def missed(self, period: float) -> list[int]:
        slots = sorted(self.slots(period))
        return [s for s in range(slots[0], slots[-1] + 1) if s not in self.slots(period)]

    def holders(self) -> list[int]:
        out: list[int] = []
        for pid, _ in self.ticks:
            if not out or out[-1] != pid:
                out.append(pid)
        return out


class Replicas:
    """Replica processes on one lease DSN, writing ticks to a Redis list."""

    def __init__(self, redis_dsn: str, lease_dsn: str, uid: str, period: float = 1.0) -> None:
        self.redis = aioredis.Redis.from_url(redis_dsn, socket_timeout=5)
        self.key = f'test:schedule:{uid}:ticks'
        self.prefix = f'test.schedule.{uid}'
        self.lease_dsn = lease_dsn
        self.period = period
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.kills: list[float] = []
        self.logs = Path(tempfile.mkdtemp(prefix='schedule-replicas-'))
        self.env = {**os.environ, 'SCHEDULE_TEST_REDIS': redis_dsn, 'PYTHONPATH': str(ROOT)}

    def spawn(self, n: int) -> None:
        for _ in range(n):
            proc = subprocess.Popen([sys.executable, '-m', 'tests.schedule_replica', self.lease_dsn, self.prefix,
                                     self.key, str(self.period)], cwd=ROOT, env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=(self.logs / f'{len(self.procs)}.log').open('wb'))
            self.procs[proc.pid] = proc

    async def wait_ready(self, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while await self.redis.llen(f'{self.key}:ready') < len(self.procs):
                await asyncio.sleep(0.1)

    async def ticks(self) -> list[tuple[int, float]]:
        rows = await self.redis.lrange(self.key, 0, -1)
        return [(int(p), float(t)) for p, t in (row.decode().split() for row in rows)]

    async def wait_ticks(self, n: int, timeout: float = 30) -> list[tuple[int, float]]:
        async with asyncio.timeout(timeout):
            while len(ticks := await self.ticks()) < n:
                await asyncio.sleep(0.1)
        return ticks

    async def kill_holder(self) -> int:
        """SIGKILL the replica that ran the latest tick (our own process: nobody else's)."""
        pid = (await self.ticks())[-1][0]
        self.procs[pid].send_signal(signal.SIGKILL)
        self.procs[pid].wait(10)
        self.kills.append(asyncio.get_running_loop().time())
        return pid

    async def stop(self) -> Run:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        run = Run(await self.ticks(), self.kills)
        await self.redis.delete(self.key, f'{self.key}:ready')
        await self.redis.aclose()
        return run

    def stderr(self) -> str:
        """The tail of every replica's log (for assertion messages)."""
        return '\n'.join(f.read_text(errors='replace')[-2000:] for f in sorted(self.logs.glob('*.log')))
