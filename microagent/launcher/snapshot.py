"""The state of a running group in one JSON-ready dict: what the status page and ``/status.json`` show.

Built only from what the workers report to the supervisor (see
:mod:`microagent.launcher.report`) and the supervisor's own view of each
process; the one place to extend when workers report more. One entry per
agent replica::

    {"agent": "emails", "replica": 1, "name": "emails#1", "slot": "emails#1", "pid": 4242,
     "state": "running", "ready": true, "restarts": 0,
     "handled": 12, "failed": 1, "retried": 1, "dead_lettered": 0, "inflight": 2,
     "queues": [{"queue": "mailer", "handled": 12, ..., "inflight": 2, "length": 0}],
     "schedules": [{"handler": "EmailAgent.weekly_digest", "cron": "0 9 * * mon", "next_run": "...",
                    "singleton": false, "runs": 0, "failed": 0, "missed": 0}]}

A queue's ``length`` is the backlog the broker reports (messages waiting: the
consumer lag in messages), ``null`` when it could not be read; ``partitions`` breaks it down per
partition where the queue has partitions (Kafka: ``{"mailer/0": 3, "mailer/1": 0}``), else ``{}``.

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> snapshot(supervisor)['agents'][0]['state']     # doctest: +SKIP
'running'
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .report import COUNTERS

if TYPE_CHECKING:
    from .slot import Slot
    from .supervisor import Supervisor

__all__ = ['instance', 'snapshot']


def instance(slot: Slot, agent: str, replica: int) -> dict[str, Any]:
    """One agent replica of *slot*: process, readiness, counters over restarts, queues and schedules."""
    ready = slot.alive and bool(slot.ready.get((agent, replica)))
    state = 'starting' if slot.state == 'running' and not ready else slot.state
    queues = []
    for (name, rep, queue), entry in sorted(slot.totals().items()):
        if (name, rep) == (agent, replica):
            queues.append({'queue': queue, **{c: entry[c] for c in COUNTERS}, 'inflight': entry['inflight'],
                           'length': entry['length'], 'partitions': entry['partitions']})
    out: dict[str, Any] = {'agent': agent, 'replica': replica, 'name': slot.row_name(agent, replica),
                           'slot': slot.label, 'pid': slot.pid, 'state': state, 'ready': ready,
                           'restarts': slot.restarts}
    for counter in (*COUNTERS, 'inflight'):
        out[counter] = sum(q[counter] for q in queues)
    out['queues'] = queues
    out['schedules'] = slot.schedules.get((agent, replica), [])
    return out


def snapshot(supervisor: Supervisor) -> dict[str, Any]:
    """The whole group now: overall health and readiness, then every agent replica."""
    return {
        'time': dt.datetime.now(dt.UTC).isoformat(timespec='seconds'),
        'stopping': supervisor.stopping.is_set(),
        'healthy': supervisor.healthy(),
        'ready': supervisor.ready(),
        'agents': [instance(slot, agent, replica) for slot in supervisor.slots for agent, replica in slot.instances],
    }
