"""The pass criteria of the issue, applied to what one backend's run recorded.

Every check is a row ``{"check", "value", "limit", "ok"}``; a run passes
when every row is ok. The criteria are never weakened here: a run that
cannot measure one (a fault skipped) says so in ``skipped`` instead.

>>> result = judge(rig, faults, size, records, figures=f, dead=d, outputs=o, notes=n)   # doctest: +SKIP
>>> all(row['ok'] for row in result['checks'])                                  # doctest: +SKIP
True
"""
from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from .ledger import Counts, count, percentile
from .singleton import tick_figures

if TYPE_CHECKING:
    from .drivers import Size
    from .rigs import Rig

__all__ = ['dead_ids', 'judge']

MIN_RATE_RATIO = 0.9
MAX_RECOVERY_P99 = 5.0
EXPECTED_DEAD = {f'poison-{n}' for n in range(1000)} | {'oversized-0', 'nested-0', 'crasher-0'}


def _row(check: str, value: Any, limit: str, ok: bool) -> dict[str, Any]:
    return {'check': check, 'value': value, 'limit': limit, 'ok': bool(ok)}


def judge(rig: Rig, faults: tuple[str, ...], size: Size, records: list[dict[str, Any]], *, figures: dict[str, Any],
          dead: list[dict[str, Any]], outputs: list[str], notes: list[str]) -> dict[str, Any]:
    """The counted result of one backend's run with its checks."""
    counts = count(records, dead_ids(dead))
    max_inflight, max_attempts = int(rig.options['max_inflight']), int(rig.options['max_attempts'])
    # What a consumer holds unacknowledged: its running handlers, plus on Kafka the handled messages whose
    # offsets are not committed yet (the commit window); a disruption can make the group handle them again.
    window = int(rig.options.get('commit_window', 0))
    held = '(max_inflight + commit_window)' if window else 'max_inflight'
    held_n = max_inflight + window
    disruptions = _disruptions(counts, size.replicas)
    # Kafka: unhandled messages still ahead of the group's committed offset are owed, not lost (the audit in
    # drivers.py tells them apart); the drained row below still fails for them.
    lost = sorted(set(counts.lost) - set(figures.get('kafka_owed', ())))
    rows = [
        _row('lost (confirmed, never handled)', len(lost), '0', not lost),
        _row('unexpected (handled, never sent)', len(counts.unexpected), '0', not counts.unexpected),
        _row('extra handlings (duplicates)', counts.extra_handlings,
             f'<= {held} x disruptions = {held_n * disruptions}', counts.extra_handlings <= held_n * disruptions),
        _row('reconnect p99: cuts, blackholes, restarts (s)', round(_p99(counts.reconnects), 3),
             f'<= {MAX_RECOVERY_P99}', _p99(counts.reconnects) <= MAX_RECOVERY_P99),
        # Kills are detected by the broker's own failure detector (Kafka: the session timeout), not reconnects.
        _row('recovery p99 after every fault, kills included (s)', round(_p99(counts.recoveries), 3), 'reported',
             True),
        _row('drained: every confirmed send handled', figures.get('drain_complete'), 'true',
             bool(figures.get('drain_complete'))),
    ]
    errors = figures.get('fault_errors', [])
    rows.append(_row('fault steps whose expected outcome never came', errors, '[]', not errors))
    stray = sorted(dead_ids(dead) - EXPECTED_DEAD)
    rows.append(_row('dead letters that are not poison', len(stray), '0', not stray))
    if 'term' in faults:
        took = figures.get('drain_seconds')
        rows.append(_row('SIGTERM drain exit (s)', took, f'<= grace + 1 = {size.grace + 1}',
                         took is not None and took <= size.grace + 1))
    if 'killer' in faults:
        rows += _killer_rows(counts, figures)
    if 'crasher' in faults:
        rows += _crasher_rows(dead, figures, max_attempts)
    if 'poison' in faults:
        rows += _poison_rows(records, counts, figures=figures, dead=dead, max_attempts=max_attempts,
                             poison=size.poison)
    singleton = tick_figures(records, size.tick_period) if 'singleton' in faults else None
    rows += _singleton_rows(singleton, size.holder_kills) if singleton else []
    if rig.secret:
        leaks = sum(text.count(rig.secret) for text in outputs)
        rows.append(_row('canary password in agent logs (DEBUG)', leaks, '0', leaks == 0))
    return {'backend': rig.backend, 'size': size.name, 'faults': list(faults), 'counts': counts.as_dict(),
            'figures': {k: v for k, v in figures.items() if k != 'poison_window'}, 'notes': notes,
            'disruptions': disruptions, 'fault_log': [_fault(f) for f in counts.faults],
            'singleton': singleton, 'checks': rows, 'ok': all(r['ok'] for r in rows)}


def _fault(record: dict[str, Any]) -> dict[str, Any]:
    return {'name': record['name'], 'detail': record.get('detail', ''), 't': round(record['t'], 3)}


def _p99(values: list[float]) -> float:
    return percentile(values, 99)


def _disruptions(counts: Counts, replicas: int) -> int:
    """How many times a consumer's in-flight messages could have been handled twice."""
    per_fault = Counter(f['name'] for f in counts.faults)
    every_consumer = per_fault['cut'] + per_fault['blackhole'] + per_fault['restart'] + per_fault['term']
    return 1 + per_fault['kill'] + per_fault['crasher'] + per_fault['stop'] + 1 + replicas * every_consumer


def _killer_rows(counts: Counts, figures: dict[str, Any]) -> list[dict[str, Any]]:
    handled = any(h['id'] == 'killer-0' for h in counts.handlings)
    exits = figures.get('killer_exits')
    return [_row('self-killing message handled after its process died', handled, 'true', handled),
             _row('processes it killed', exits, '1', exits == 1)]


def _crasher_rows(dead: list[dict[str, Any]], figures: dict[str, Any], max_attempts: int) -> list[dict[str, Any]]:
    found = [d for d in dead if _mid(d) == 'crasher-0']
    attempts = found[0]['attempts'] if found else None
    exits = figures.get('crasher_exits')
    return [_row('message killing every process: dead-lettered after max_attempts', attempts,
                 f'== {max_attempts}', attempts == max_attempts),
            _row('processes it killed', exits, f'{max_attempts}', exits == max_attempts)]


def _poison_rows(records: list[dict[str, Any]], counts: Counts, *, figures: dict[str, Any],
                 dead: list[dict[str, Any]], max_attempts: int, poison: int) -> list[dict[str, Any]]:
    by_mid = {_mid(d): d for d in dead}
    attempts = [by_mid[f'poison-{n}']['attempts'] if f'poison-{n}' in by_mid else None for n in range(poison)]
    begins = Counter(r['id'] for r in records if r['k'] == 'begin' and r['id'].startswith('poison-'))
    oversized = by_mid.get('oversized-0')
    nested_ok = 'nested-0' in by_mid or any(h['id'] == 'nested-0' for h in counts.handlings)
    ratio = _rate_ratio(records, figures.get('poison_window'))
    exits = figures.get('poison_exits')
    return [
        _row('poison dead-lettered after exactly max_attempts', attempts, f'all == {max_attempts}',
             attempts == [max_attempts] * poison),
        _row('poison handler runs (ledger)', sorted(begins.values()), f'all == {max_attempts}',
             sorted(begins.values()) == [max_attempts] * poison),
        _row('oversized message dead-lettered before parsing', bool(oversized), 'true',
             oversized is not None and 'exceeds' in oversized['error']),
        _row('deeply nested JSON dead-lettered or handled', nested_ok, 'true', nested_ok),
        _row('workers that died on poison/oversized/nested', exits, '0', exits == 0),
        _row('other traffic rate during poison (handled/sent)', ratio, f'>= {MIN_RATE_RATIO}',
             ratio is not None and ratio >= MIN_RATE_RATIO),
    ]


def _singleton_rows(ticks: dict[str, Any], kills: int) -> list[dict[str, Any]]:
    """Fault 7: no tick run twice; every killed holder replaced; the takeover gap, reported."""
    taken = ticks['taken_over']
    return [
        _row('singleton: ticks run twice (3 replicas, holder SIGKILLed)', len(ticks['duplicates']), '0',
             not ticks['duplicates'] and ticks['ticks'] > 0),
        _row('singleton: killed holders replaced by another replica', f"{taken} of {ticks['kills']}",
             f'all of {kills}', ticks['kills'] == kills and taken == kills),
        _row('singleton: ticks missed per holder kill', ticks['missed_per_kill'], 'reported', True),
        _row('singleton: seconds from holder kill to the next tick', ticks['takeover_seconds'], 'reported', True),
        # A run that began after its next tick was due cannot tell its tick for sure: the duplicate count
        # above would then be a guess. Never seen so far; reported so that a slow box shows it.
        _row('singleton: runs begun after their next tick was due', ticks['unsure'], 'reported', True),
    ]


def dead_ids(dead: list[dict[str, Any]]) -> set[str]:
    """The message ids of the dead letters."""
    return {_mid(d) for d in dead} - {''}


def _mid(letter: dict[str, Any]) -> str:
    body = str(letter.get('body', ''))
    try:
        return str(json.loads(body).get('mid', ''))
    except (ValueError, AttributeError):
        # Cut at 200 characters (oversized) or not JSON (nested): the id is near the start.
        for mid in ('oversized-0', 'nested-0'):
            if mid in body:
                return mid
        return ''


def _rate_ratio(records: list[dict[str, Any]], window: tuple[float, float] | None) -> float | None:
    """Ordinary messages handled per second over those sent per second, in the poison window."""
    if not window:
        return None
    start, end = window
    sent = sum(1 for r in records if r['k'] == 'send' and r.get('mode') == 'ok' and r['id'].startswith('m')
               and start <= r['t'] <= end)
    ordinary = {r['id'] for r in records if r['k'] == 'send' and r.get('mode') == 'ok' and r['id'].startswith('m')}
    handled = {r['id'] for r in records if r['k'] == 'end' and r['id'] in ordinary and start <= r['t'] <= end}
    return round(len(handled) / sent, 3) if sent else None
