"""What a worker tells its supervisor: one JSON object a line on a dedicated pipe (no pickle).

A report::

    {"state": "running", "pid": 4242, "agents": [
        {"agent": "users", "replica": 0, "ready": true, "consumers": [
            {"queue": "user_created", "handled": 3, "failed": 0, "retried": 0, "dead_lettered": 0,
             "buckets": [3, 0, ...], "sum": 0.004, "length": 0, "inflight": 1, "partitions": {}}],
         "schedules": [
            {"handler": "UserAgent.sign_up", "period": 3.0, "singleton": false, "next_run": "2026-...",
             "runs": 4, "failed": 0, "missed": 0, ...}],
         "series": [["signals_sent", {"signal": "user_created"}, 3], ...],
         "rpc": {"rpc_count": {"buckets": [1, 0, ...], "sum": 0.002}}}]}

``series`` are the bus and schedule numbers of
:func:`microagent.telemetry.numbers.series`; ``rpc`` the RPC call latencies
per signal.

``buckets`` count handler latencies per :data:`BUCKETS` upper bound (not
cumulative), the last one being +Inf.

>>> hist = Histogram(); hist.observe([0.001, 0.2]); hist.buckets[0], hist.count
(1, 2)
"""
from __future__ import annotations

import asyncio
import bisect
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..broker import AbstractQueueBroker
from ..telemetry.numbers import bus_stats, schedule_counts, series

if TYPE_CHECKING:
    from ..agent import MicroAgent
    from ..delivery import ConsumerStats
    from ..schedule import ScheduledTask

__all__ = ['BUCKETS', 'COUNTERS', 'Histogram', 'Reporter']

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float('inf'))
COUNTERS = ('handled', 'failed', 'retried', 'dead_lettered')
LENGTH_TIMEOUT = 2.0


@dataclass
class Histogram:
    """Handler latencies counted per bucket."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def observe(self, values: list[float]) -> None:
        for value in values:
            self.buckets[bisect.bisect_left(BUCKETS, value)] += 1
            self.sum += value


@dataclass
class _Watched:
    stats: ConsumerStats
    hist: Histogram = field(default_factory=Histogram)


class Reporter:
    """Collects the counters of a worker's agents and writes reports to the status fd.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> reporter = Reporter(fd=3, instances=[('users', 0, agent)])   # doctest: +SKIP
    >>> await reporter.send('running')                             # doctest: +SKIP
    """

    def __init__(self, fd: int | None, instances: list[tuple[str, int, MicroAgent]]) -> None:
        self.fd = fd
        self.instances = instances
        self.ready: dict[int, bool] = {}
        # Stats objects are kept after a consumer is unbound, so the last report still counts them.
        self._watched: dict[tuple[int, str], _Watched] = {}
        self._rpc: dict[tuple[int, str], Histogram] = {}
        if fd is not None:
            os.set_blocking(fd, False)

    async def send(self, state: str) -> bool:
        """Write one report; False when the supervisor is gone (the pipe is broken)."""
        payload = {'state': state, 'pid': os.getpid(),
                   'agents': [await self._agent(i, n, r, a) for i, (n, r, a) in enumerate(self.instances)]}
        if self.fd is None:
            return True
        try:
            os.write(self.fd, json.dumps(payload).encode() + b'\n')
        except BlockingIOError:
            return True  # the supervisor is busy: this report is dropped, the next one counts
        except OSError:
            return False
        return True

    async def _agent(self, index: int, name: str, replica: int, agent: MicroAgent) -> dict[str, Any]:
        consumers = []
        for consumer in agent.consumers:
            watched = self._watch(index, agent, consumer.queue.name)
            if watched is None:
                continue
            # Drained here so the runner's capped latency list never fills up.
            watched.hist.observe(watched.stats.latencies)
            watched.stats.latencies.clear()
            entry: dict[str, Any] = {c: getattr(watched.stats, c) for c in COUNTERS}
            entry.update(queue=consumer.queue.name, buckets=watched.hist.buckets, sum=watched.hist.sum,
                         length=await _length(agent, consumer.queue.name) if agent.started else None,
                         inflight=_inflight(agent, consumer.queue.name),
                         partitions=_partitions(agent, consumer.queue.name))
            consumers.append(entry)
        # Ready: started, and now connected and consuming (False again while a connection is lost).
        ready = self.ready.get(index, False) and agent.ready()
        return {'agent': name, 'replica': replica, 'ready': ready, 'consumers': consumers,
                'schedules': [_schedule(task) for task in agent.schedules],
                'series': [list(item) for item in series(agent)], 'rpc': self._rpc_latencies(index, agent)}

    def _rpc_latencies(self, index: int, agent: MicroAgent) -> dict[str, dict[str, Any]]:
        stats = bus_stats(agent)
        if stats is None:
            return {}
        for signal, values in stats.latencies.items():
            self._rpc.setdefault((index, signal), Histogram()).observe(values)
            values.clear()  # drained here, as the consumers' latencies
        return {signal: {'buckets': hist.buckets, 'sum': hist.sum}
                for (i, signal), hist in self._rpc.items() if i == index}

    def _watch(self, index: int, agent: MicroAgent, queue: str) -> _Watched | None:
        key = (index, queue)
        if key not in self._watched:
            try:
                self._watched[key] = _Watched(agent.broker.runner(queue).stats)
            except (KeyError, AttributeError):
                return None  # not bound (yet): nothing to count
        return self._watched[key]


def _inflight(agent: MicroAgent, queue: str) -> int:
    try:
        return int(agent.broker.runner(queue).inflight)
    except (KeyError, AttributeError):
        return 0  # not bound (any more)


def _schedule(task: ScheduledTask) -> dict[str, Any]:
    """The schedule's description (next run, singleton holder) and its run counters."""
    return {**task.info(), **schedule_counts(task)}


def _partitions(agent: MicroAgent, queue: str) -> dict[str, int]:
    # What the queue_length just read, per partition (Kafka); {} elsewhere, and for a mock broker.
    return agent.broker.partition_lengths(queue) if isinstance(agent.broker, AbstractQueueBroker) else {}


async def _length(agent: MicroAgent, queue: str) -> int | None:
    try:
        async with asyncio.timeout(LENGTH_TIMEOUT):
            return int(await agent.broker.queue_length(queue))
    except Exception:  # noqa: BLE001 - a metric we cannot read is reported as unknown
        return None
