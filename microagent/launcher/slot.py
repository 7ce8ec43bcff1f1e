"""A supervised worker slot: what runs in it, its process and the counters it reported.

Counters survive restarts: when a process ends, its last report is carried
over, so totals only grow (the status table and ``/metrics`` show totals).

>>> slot = Slot('users#1', 'examples.settings', [('users', 1)], replicas={'users': 2})
>>> slot.row_name('users', 1), slot.totals()
('users#1', {})
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..telemetry.numbers import COUNTS
from .report import BUCKETS, COUNTERS

if TYPE_CHECKING:
    import asyncio

__all__ = ['Slot']

Key = tuple[str, int, str]  # agent, replica, queue
SeriesKey = tuple[str, int, str, tuple[tuple[str, str], ...]]  # agent, replica, name, sorted labels


@dataclass
class Slot:
    """One worker process position; restarted in place after a crash."""

    label: str
    settings: str
    instances: list[tuple[str, int]]
    replicas: dict[str, int] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    state: str = 'pending'
    restarts: int = 0
    started_at: float = 0.0
    ready: dict[tuple[str, int], bool] = field(default_factory=dict)
    current: dict[Key, dict[str, Any]] = field(default_factory=dict)
    carried: dict[Key, dict[str, Any]] = field(default_factory=dict)
    schedules: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    series_now: dict[SeriesKey, float] = field(default_factory=dict)
    series_carried: dict[SeriesKey, float] = field(default_factory=dict)
    rpc_now: dict[Key, dict[str, Any]] = field(default_factory=dict)
    rpc_carried: dict[Key, dict[str, Any]] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    @property
    def all_ready(self) -> bool:
        return self.alive and all(self.ready.get(i, False) for i in self.instances)

    def row_name(self, agent: str, replica: int) -> str:
        return f'{agent}#{replica}' if self.replicas.get(agent, 1) > 1 else agent

    def spawned(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.state = 'starting'
        self.started_at = time.monotonic()
        self.ready = {}

    def apply(self, report: dict[str, Any]) -> None:
        """Take in one worker report (see :mod:`microagent.launcher.report`)."""
        if self.state not in ('stopping', 'killed'):
            self.state = str(report.get('state', self.state))
        for entry in report.get('agents', ()):
            instance = (str(entry['agent']), int(entry['replica']))
            self.ready[instance] = bool(entry.get('ready'))
            self.schedules[instance] = list(entry.get('schedules', ()))
            for consumer in entry.get('consumers', ()):
                self.current[(*instance, str(consumer['queue']))] = consumer
            for name, labels, value in entry.get('series', ()):
                self.series_now[(*instance, str(name), tuple(sorted(labels.items())))] = float(value)
            for signal, hist in (entry.get('rpc') or {}).items():
                self.rpc_now[(*instance, str(signal))] = hist

    def ended(self, state: str) -> None:
        """The process is gone: carry its counters over and forget its readiness."""
        for key, entry in self.current.items():
            self.carried[key] = _add(self.carried.get(key), entry)
        for skey, value in self.series_now.items():
            if skey[2] in COUNTS:  # counters add up over restarts; gauges die with the process
                self.series_carried[skey] = self.series_carried.get(skey, 0.0) + value
        for key, entry in self.rpc_now.items():
            self.rpc_carried[key] = _add(self.rpc_carried.get(key), entry)
        self.current, self.series_now, self.rpc_now = {}, {}, {}
        self.ready = {}
        self.schedules = {}
        self.state = state

    def totals(self) -> dict[Key, dict[str, Any]]:
        """Counters per (agent, replica, queue) over every process this slot ran."""
        out = {key: _add(None, entry) for key, entry in self.carried.items()}
        for key, entry in self.current.items():
            out[key] = _add(out.get(key), entry)
            out[key]['length'] = entry.get('length')
            out[key]['partitions'] = dict(entry.get('partitions') or {})
            out[key]['inflight'] = int(entry.get('inflight', 0))
        return out

    def series_totals(self) -> dict[SeriesKey, float]:
        """Bus and schedule series (:mod:`microagent.telemetry.numbers`) over every process of this slot."""
        out = dict(self.series_carried)
        for key, value in self.series_now.items():
            out[key] = out.get(key, 0.0) + value
        return out

    def rpc_totals(self) -> dict[Key, dict[str, Any]]:
        """RPC latency histograms per (agent, replica, signal) over every process of this slot."""
        out = {key: _add(None, entry) for key, entry in self.rpc_carried.items()}
        for key, entry in self.rpc_now.items():
            out[key] = _add(out.get(key), entry)
        return out

    def instance_totals(self, agent: str, replica: int) -> dict[str, int]:
        sums = dict.fromkeys(COUNTERS, 0)
        for (name, rep, _), entry in self.totals().items():
            if (name, rep) == (agent, replica):
                for counter in COUNTERS:
                    sums[counter] += int(entry.get(counter, 0))
        return sums


def _add(base: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {c: int(entry.get(c, 0)) for c in COUNTERS}
    buckets = list(entry.get('buckets') or [0] * len(BUCKETS))
    out['sum'] = float(entry.get('sum', 0.0))
    out['length'] = None
    out['partitions'] = {}
    out['inflight'] = 0
    if base is not None:
        for counter in COUNTERS:
            out[counter] += base[counter]
        buckets = [a + b for a, b in zip(buckets, base['buckets'], strict=False)]
        out['sum'] += base['sum']
    out['buckets'] = buckets
    return out
