"""The pass criteria of the effects fault run (issue 20), applied to what the database and the ledger hold.

Every confirmed message must have exactly one first-stage effect row and exactly one second-stage effect
row (the message its handler sent through the outbox, delivered and handled exactly once in effect); the
outbox must be empty; the faults must really have happened. Duplicate *handler runs* (redeliveries,
rolled-back attempts) are expected and reported: what must never be duplicated is an effect.

>>> result = judge_effects('redis', 'smoke', records, counts, figures=f, output=o, secret=None)  # doctest: +SKIP
>>> result['ok']                                                                              # doctest: +SKIP
True
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .ledger import CONFIRMED, INDETERMINATE

__all__ = ['judge_effects']


def _row(check: str, value: Any, limit: str, ok: bool) -> dict[str, Any]:
    return {'check': check, 'value': value, 'limit': limit, 'ok': bool(ok)}


def judge_effects(backend: str, size: str, records: list[dict[str, Any]], counts: dict[str, Any], *,
                  figures: dict[str, Any], output: str, secret: str | None) -> dict[str, Any]:
    """The counted result of one backend's effects run with its checks."""
    status = {r['id']: r['status'] for r in records if r['k'] == 'send'}
    confirmed = {i for i, s in status.items() if s == CONFIRMED}
    a, b = Counter(counts['a']), Counter(counts['b'])
    runs = Counter(r['k'] for r in records if r['k'] in ('run_a', 'run_b'))
    exits = len(re.findall(r': exited with -9', output))
    summary = {
        'sent_confirmed': len(confirmed),
        'sent_indeterminate': sum(1 for s in status.values() if s == INDETERMINATE),
        'effects_a': sum(a.values()), 'effects_b': sum(b.values()),
        'lost_a': sorted(confirmed - set(a))[:20], 'lost_b': sorted(confirmed - set(b))[:20],
        'duplicated_a': sorted(m for m, n in a.items() if n > 1)[:20],
        'duplicated_b': sorted(m for m, n in b.items() if n > 1)[:20],
        'unexpected': sorted((set(a) | set(b)) - set(status))[:20],
        'handler_runs_a': runs['run_a'], 'handler_runs_b': runs['run_b'],
        'acked_as_handled_before': output.count('was handled before'),
        'relay_self_kills': figures.get('relay_deaths', max(0, exits - figures.get('kills', 0))),
        'outbox_left': counts['outbox_left'], 'inbox_rows': counts['inbox_rows'],
    }
    extra_a, extra_b = sum(n - 1 for n in a.values() if n > 1), sum(n - 1 for n in b.values() if n > 1)
    lost_a, lost_b = len(confirmed - set(a)), len(confirmed - set(b))
    rows = [
        _row('confirmed messages without their effect (stage 1)', lost_a, '0', not lost_a),
        _row('effects written twice (stage 1, extra rows)', extra_a, '0', not extra_a),
        _row('outbox messages without their effect downstream (stage 2)', lost_b, '0', not lost_b),
        _row('outbox messages whose effect happened twice (stage 2, extra rows)', extra_b, '0', not extra_b),
        _row('effects of messages never sent', len(summary['unexpected']), '0', not summary['unexpected']),
        _row('outbox rows left after the drain', counts['outbox_left'], '0', not counts['outbox_left']),
        _row('drained: every confirmed message through both stages', figures.get('drain_complete'), 'true',
             bool(figures.get('drain_complete'))),
        _row('workers SIGKILLed (consumers and relays)', figures.get('kills', 0), 'as planned',
             figures.get('kills', 0) > 0),
        _row('relays that SIGKILLed themselves after a publish', summary['relay_self_kills'], 'reported', True),
        _row('PostgreSQL connections cut / broker connections cut', f"{figures.get('pg_cuts', 0)} / "
             f"{figures.get('broker_cuts', 0) if backend != 'memory' else 'n/a'}",
             '> 0 each (memory: no broker connection)', figures.get('pg_cuts', 0) > 0
             and (backend == 'memory' or figures.get('broker_cuts', 0) > 0)),
        _row('PostgreSQL crashed and restarted', figures.get('pg_restarts', 0), '>= 1',
             figures.get('pg_restarts', 0) >= 1),
        _row('handler runs beyond the effects (redeliveries, rolled-back attempts)',
             (runs['run_a'] - sum(a.values())) + (runs['run_b'] - sum(b.values())), 'reported', True),
    ]
    if secret:
        leaks = output.count(secret)
        rows.append(_row('canary password in agent logs', leaks, '0', leaks == 0))
    return {'backend': backend, 'size': size, 'kind': 'effects', 'summary': summary, 'figures': figures,
            'checks': rows, 'ok': all(r['ok'] for r in rows)}
