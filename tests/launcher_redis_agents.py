"""Agents of the Redis launcher tests; declarations are made at import time, names unique per test run."""
from __future__ import annotations

import asyncio
import os
from typing import Any

from microagent import MicroAgent, Queue, Signal, consumer, on, receiver

from .launcher_agents import mark

UID = os.environ['LAUNCHER_TEST_UID']

jobs = Queue(name=f'ljobs_{UID}')
ping = Signal(name=f'lping_{UID}', providing_args=['n'])
double = Signal(name=f'ldouble_{UID}', providing_args=['n'])


class JobWorker(MicroAgent):
    """Handles jobs (each may take a while), answers pings and RPC."""

    @on('pre_start')
    def setup(self) -> None:
        mark(self, 'start')

    @consumer(jobs, timeout=30, max_inflight=2)
    async def handle(self, n: int, seconds: float = 0.0) -> None:
        mark(self, 'begin', str(n))
        await asyncio.sleep(seconds)
        mark(self, 'end', str(n))

    @receiver(ping)
    async def on_ping(self, signal: Any, sender: str, n: int) -> None:
        mark(self, 'ping', str(n))

    @receiver(double)
    async def on_double(self, signal: Any, sender: str, n: int) -> int:
        return n * 2

    @on('pre_stop')
    def goodbye(self) -> None:
        mark(self, 'stop')
