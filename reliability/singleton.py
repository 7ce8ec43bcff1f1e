"""Fault 7: a singleton job on three replicas, its holder SIGKILLed; every tick run is written to the ledger.

:class:`TickAgent` is the agent under test (run by ``marun
reliability.singleton_settings``): one ``@periodic(singleton=True)`` job
whose every run appends ``{"k": "tick", "tick": <scheduled time>, "pid",
"t"}`` to the ledger directory ``REL_LEDGER`` (file ``ticker-<pid>.jsonl``).
The lease lives on the backend of the group's broker DSN (through the fault
proxy), under the prefix ``REL_QUEUE`` (one run never sees another's lease).

:func:`tick_figures` counts what the ledger says: ticks run more than once
(the criterion: 0), and for each holder kill (a ``fault`` record named
``singleton`` with the killed ``pid``) the seconds until another replica ran
a tick and the ticks missed in between (the takeover gap).

>>> tick_figures(list(read_records(ledger_dir)), period=1.0)['duplicates']   # doctest: +SKIP
[]
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from microagent import MicroAgent, on, periodic
from microagent.schedule import ScheduledTask

from .ledger import Ledger

__all__ = ['KILL_FAULT', 'TickAgent', 'read_ticks', 'tick_figures']

KILL_FAULT = 'singleton'
# One second: the schedule's misfire grace is 1 s, so a tick is never run later than the next one is due,
# and the tick a run belongs to is the last multiple of the period before it started.
PERIOD = float(os.environ.get('REL_TICK_PERIOD', '1.0'))


class TickAgent(MicroAgent):
    """Three replicas of this agent share one tick schedule through a lease: each tick runs in one of them.

    Its lease options come from the agent setting ``lease_options`` (``REL_LEASE_OPTIONS``, JSON, in
    :mod:`reliability.singleton_settings`): the Kafka rig gives the lease its consumers' session timeout.

    >>> # REL_LEDGER=/tmp/l REL_DSN=redis://... marun reliability.singleton_settings   # doctest: +SKIP
    """

    ledger: Ledger
    job: ScheduledTask

    @on('pre_start')
    def open_ledger(self) -> None:
        self.ledger = Ledger(os.environ.get('REL_LEDGER', ''), 'ticker', fsync=False)
        self.job = next(task for task in self.schedules if task.name.endswith('.tick'))

    @periodic(period=PERIOD, timeout=PERIOD, singleton=True)
    async def tick(self) -> None:
        now = time.time()
        # next_run is the tick after this one until the next tick fires: a run that begins later than that
        # cannot tell its own tick for sure (reported, never seen so far).
        due = self.job.next_run if self.job.next_run is not None else now
        self.ledger.write({'k': 'tick', 'tick': round(due - PERIOD, 6), 'sure': now < due, 'pid': self.ledger.pid,
                           't': now})

    @on('pre_stop')
    def close_ledger(self) -> None:
        self.ledger.close()


def read_ticks(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The tick records of the ticker files only (cheap to poll: the consumers' files are much larger)."""
    ticks = []
    for path in sorted(Path(directory).glob('ticker-*.jsonl')):
        with path.open('rb') as fh:
            ticks += [json.loads(line) for line in fh if line.endswith(b'\n')]
    return sorted((t for t in ticks if t.get('k') == 'tick'), key=lambda t: t['t'])


def tick_figures(records: list[dict[str, Any]], period: float) -> dict[str, Any]:
    """Duplicates, holders and the takeover after each kill, from the records of a run.

    >>> tick_figures([{'k': 'tick', 'tick': 10.0, 'pid': 1, 't': 10.01}], 1.0)['ticks']
    1
    """
    ticks = sorted((r for r in records if r.get('k') == 'tick'), key=lambda r: r['t'])
    kills = [r for r in records if r.get('k') == 'fault' and r.get('name') == KILL_FAULT]
    runs = Counter(round(t['tick'] / period) for t in ticks)
    takeovers = [_takeover(ticks, kill, period) for kill in kills]
    slots = sorted(runs)
    return {'period': period, 'ticks': len(ticks), 'holders': _holders(ticks), 'kills': len(kills),
            'duplicates': sorted(round(slot * period, 3) for slot, n in runs.items() if n > 1),
            'unsure': sum(1 for t in ticks if not t.get('sure', True)),
            'missed_total': (slots[-1] - slots[0] + 1 - len(slots)) if slots else 0,
            'missed_per_kill': [t['missed'] for t in takeovers if t is not None],
            'takeover_seconds': [t['seconds'] for t in takeovers if t is not None],
            'taken_over': sum(1 for t in takeovers if t is not None)}


def _takeover(ticks: list[dict[str, Any]], kill: dict[str, Any], period: float) -> dict[str, Any] | None:
    """The first tick another replica ran after *kill*: seconds after the kill, ticks missed since the last."""
    before = [t for t in ticks if t['t'] <= kill['t']]
    after = next((t for t in ticks if t['t'] > kill['t'] and t['pid'] != kill.get('pid')), None)
    if after is None:
        return None
    missed = round((after['tick'] - before[-1]['tick']) / period) - 1 if before else 0
    return {'seconds': round(after['t'] - kill['t'], 3), 'missed': missed}


def _holders(ticks: list[dict[str, Any]]) -> int:
    """How many holdings there were (a change of the replica running the ticks starts a new one)."""
    return sum(1 for n, t in enumerate(ticks) if n == 0 or ticks[n - 1]['pid'] != t['pid'])
