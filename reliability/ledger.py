"""The ledger: every send and every handling, written by the process that saw it, counted at the end.

Each process appends JSON lines to a file of its own in one directory
(``<dir>/<role>-<pid>.jsonl``), one ``os.write`` per record on an
``O_APPEND`` descriptor: a SIGKILLed process loses at most the record it was
writing, never an earlier one (the page cache outlives the process).
``fsync=True`` also covers a machine crash, which the suite does not inject;
the agent processes leave it off (``REL_FSYNC=1`` turns it on) because an
fsync on a busy disk blocks their event loop for up to seconds.

Records (``t`` is ``time.time()``, comparable across processes)::

    {"k": "send", "id": "m42", "status": "confirmed", "t": ...}     # or indeterminate / failed
    {"k": "begin", "id": "m42", "attempt": 1, "pid": 123, "t": ...}
    {"k": "end", "id": "m42", "attempt": 1, "pid": 123, "start": ..., "t": ...}
    {"k": "fault", "name": "kill", "t": ..., "detail": "pid 123"}

>>> ledger = Ledger('/tmp/ledger', 'producer')               # doctest: +SKIP
>>> ledger.send('m1', 'confirmed')                           # doctest: +SKIP
>>> count(read_records('/tmp/ledger')).lost                  # doctest: +SKIP
0
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ['CONFIRMED', 'FAILED', 'INDETERMINATE', 'RECONNECT_FAULTS', 'Counts', 'Ledger', 'count', 'read_records']

CONFIRMED, INDETERMINATE, FAILED = 'confirmed', 'indeterminate', 'failed'
RECONNECT_FAULTS = frozenset({'cut', 'blackhole', 'restart'})  # faults that break connections, not processes


class Ledger:
    """An append-only JSON lines file of one process.

    >>> Ledger('/tmp/l', 'worker').handled('m1', 1, started=time.time())   # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], role: str, *, fsync: bool = True) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / f'{role}-{os.getpid()}.jsonl'
        self.fsync = fsync
        self.pid = os.getpid()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __repr__(self) -> str:
        return f'<Ledger {self.path}>'

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (one write: a kill never leaves half of an earlier line)."""
        os.write(self._fd, json.dumps(record, separators=(',', ':')).encode() + b'\n')
        if self.fsync:
            os.fsync(self._fd)

    def send(self, message_id: str, status: str, **extra: Any) -> None:
        self.write({'k': 'send', 'id': message_id, 'status': status, 't': time.time(), **extra})

    def begin(self, message_id: str, attempt: int) -> float:
        started = time.time()
        self.write({'k': 'begin', 'id': message_id, 'attempt': attempt, 'pid': self.pid, 't': started})
        return started

    def handled(self, message_id: str, attempt: int, started: float) -> None:
        self.write({'k': 'end', 'id': message_id, 'attempt': attempt, 'pid': self.pid, 'start': started,
                    't': time.time()})

    def fault(self, name: str, detail: str = '', **extra: Any) -> None:
        self.write({'k': 'fault', 'name': name, 'detail': detail, 't': time.time(), **extra})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_records(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record of every file in *directory* (a torn last line is skipped)."""
    for path in sorted(Path(directory).glob('*.jsonl')):
        with path.open('rb') as fh:
            for line in fh:
                if line.endswith(b'\n'):
                    yield json.loads(line)


@dataclass
class Counts:
    """What the ledger says happened, Jepsen style.

    ``lost``: confirmed sends never handled nor dead-lettered. ``duplicated``: ids handled more
    than once (``extra_handlings`` counts the surplus). ``unexpected``: ids
    handled that nobody sent. ``recoveries``: seconds from each fault to the
    first handling that ended after it; ``reconnects``: the same for the faults
    that only cut connections (:data:`RECONNECT_FAULTS`).
    """

    sent: Counter[str] = field(default_factory=Counter)
    handled: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    extra_handlings: int = 0
    unexpected: list[str] = field(default_factory=list)
    unhandled_indeterminate: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)
    reconnects: list[float] = field(default_factory=list)
    handlings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The figures (not the raw records), JSON-serialisable."""
        return {'sent': dict(self.sent), 'handled': self.handled, 'lost': len(self.lost),
                'lost_ids': self.lost[:20], 'duplicated': len(self.duplicated),
                'extra_handlings': self.extra_handlings, 'unexpected': len(self.unexpected),
                'unhandled_indeterminate': self.unhandled_indeterminate, 'faults': len(self.faults),
                'recovery_max': round(max(self.recoveries, default=0.0), 3),
                'recovery_p99': round(percentile(self.recoveries, 99), 3),
                'reconnect_p99': round(percentile(self.reconnects, 99), 3)}


def count(records: Iterable[dict[str, Any]], dead: Iterable[str] = ()) -> Counts:
    """Lost, duplicated, unexpected and recovery times from the records of a run.

    *dead*: ids found in the dead-letter queue (accounted for: not lost).
    """
    settled = set(dead)
    counts = Counts()
    status: dict[str, str] = {}
    ends: Counter[str] = Counter()
    for record in records:
        kind = record.get('k')
        if kind == 'send':
            status[record['id']] = record['status']
            counts.sent[record['status']] += 1
        elif kind == 'end':
            ends[record['id']] += 1
            counts.handlings.append(record)
        elif kind == 'fault':
            counts.faults.append(record)
    counts.handled = len(ends)
    counts.lost = sorted(i for i, s in status.items() if s == CONFIRMED and not ends[i] and i not in settled)
    counts.unhandled_indeterminate = sum(1 for i, s in status.items() if s == INDETERMINATE and not ends[i])
    counts.duplicated = sorted(i for i, n in ends.items() if n > 1)
    counts.extra_handlings = sum(n - 1 for n in ends.values() if n > 1)
    counts.unexpected = sorted(i for i in ends if i not in status)
    ended = [h['t'] for h in counts.handlings]
    counts.recoveries = recovery_times(counts.faults, ended)
    counts.reconnects = recovery_times([f for f in counts.faults if f.get('name') in RECONNECT_FAULTS], ended)
    return counts


def recovery_times(faults: list[dict[str, Any]], ends: list[float]) -> list[float]:
    """For each fault that disturbs the flow, seconds until the first handling ended after it."""
    ordered = sorted(ends)
    times = []
    for fault in faults:
        if not fault.get('recovery', True):
            continue
        after = next((t for t in ordered if t > fault['t']), None)
        if after is not None:
            times.append(after - fault['t'])
    return times


def percentile(values: list[float], pct: float) -> float:
    """The *pct* percentile (nearest rank) of *values*, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
