"""The results as JSON lines and as the markdown of ``docs/reliability.md``.

>>> text = markdown(results, security, command='python -m reliability --size smoke', took=95.0)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import platform
import time
from typing import Any

__all__ = ['json_lines', 'markdown']

INTRO = """# Reliability and security figures

Produced by the suite in `reliability/` (issue 9): real agent processes under `marun`, real brokers on
loopback, faults injected while a producer sends at a steady rate; a ledger records every send
(confirmed / indeterminate / failed) and every handling (message id, attempt, pid, start, end), and the run
is counted at the end, Jepsen style. `lost` = confirmed sends never handled nor dead-lettered (on Kafka,
an unhandled message still at or after its group's committed offset is not lost but owed, and fails the
`drained` check instead);
`extra handlings` = handlings beyond the first of a message (duplicates); `recovery` = seconds from a fault
(or its end) to the next handling that completed; `reconnect` = the same for the faults that only cut
connections (cut, blackhole, restart), the criterion of issue 9 (kills are recovered by the broker's failure
detector: a Kafka group waits for the session timeout). How it works and what each fault does: see the module
docstrings of `reliability/drivers.py` and `reliability/security.py`.
"""


def json_lines(results: list[dict[str, Any]], security: list[dict[str, Any]]) -> str:
    """One JSON object per backend run, then one per security check."""
    lines = [json.dumps({'kind': 'run', **r}, default=str) for r in results]
    lines += [json.dumps({'kind': 'security', **row}, default=str) for row in security]
    return '\n'.join(lines) + '\n'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, list | dict):
        return json.dumps(value)[:80]
    return str(value).replace('|', '\\|')


def _table(rows: list[dict[str, Any]]) -> list[str]:
    out = ['| check | value | limit | pass |', '|---|---|---|---|']
    out += [f"| {r['check']} | {_cell(r['value'])} | {_cell(r['limit'])} | {'yes' if r['ok'] else '**NO**'} |"
            for r in rows]
    return out


def _run_section(result: dict[str, Any]) -> list[str]:
    counts, figures = result['counts'], result['figures']
    sent = counts['sent']
    out = [f"## {result['backend']} ({result['size']}): {'PASS' if result['ok'] else '**FAIL**'}", '',
           f"Faults: {', '.join(result['faults'])}"
           + (f" (skipped: {', '.join(figures['skipped'])})" if figures.get('skipped') else '') + '.',
           f"Sends: {sent.get('confirmed', 0)} confirmed, {sent.get('indeterminate', 0)} indeterminate, "
           f"{sent.get('failed', 0)} failed. Handled (distinct): {counts['handled']}. "
           f"Duplicated messages: {counts['duplicated']} ({counts['extra_handlings']} extra handlings). "
           f"Faults injected: {counts['faults']}. Recovery max {counts['recovery_max']} s, "
           f"p99 {counts['recovery_p99']} s.", '']
    if result.get('singleton'):
        out += [_singleton_line(result['singleton']), '']
    out += _table(result['checks'])
    if counts.get('lost_ids'):
        out += ['', f"First lost ids: {', '.join(counts['lost_ids'])}."]
    out += [f'\nNote: {note}' for note in result.get('notes', [])]
    return [*out, '']


def _singleton_line(ticks: dict[str, Any]) -> str:
    return (f"Singleton job (fault 7, 3 replicas, a tick every {ticks['period']:g} s): {ticks['ticks']} ticks run, "
            f"{len(ticks['duplicates'])} run twice, {ticks['holders']} holdings; {ticks['kills']} holder kills, "
            f"ticks missed per kill {ticks['missed_per_kill']}, next tick {ticks['takeover_seconds']} s after the "
            f"kill; {ticks['missed_total']} ticks missed over the whole run (other faults included).")


def markdown(results: list[dict[str, Any]], security: list[dict[str, Any]], *, command: str,
             took: float) -> str:
    """The report: how it was made, a summary, one section per backend, the security checks."""
    stamp = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    out = [INTRO, '## How to reproduce', '', '```', command, '```', '',
           f'Run {stamp} on {platform.machine()} / Python {platform.python_version()} '
           f'({platform.system()}), {took:.0f} s in all.', '', '## Summary', '',
           '| backend | size | lost | extra handlings | reconnect p99 (s) | recovery p99, kills too (s) | pass |',
           '|---|---|---|---|---|---|---|']
    out += [f"| {r['backend']} | {r['size']} | {_lost(r)} | {r['counts']['extra_handlings']} | "
            f"{r['counts'].get('reconnect_p99')} | {r['counts']['recovery_p99']} | "
            f"{'yes' if r['ok'] else '**NO**'} |" for r in results]
    out.append('')
    for result in results:
        out += _run_section(result)
    if security:
        verdict = 'PASS' if all(r['ok'] for r in security) else '**FAIL**'
        out += [f'## Security checks and the signal bus under cuts: {verdict}', '', *_table(security), '']
    return '\n'.join(out)


def _lost(result: dict[str, Any]) -> Any:
    """The value of the run's lost check (owed Kafka messages excluded), or the raw count."""
    rows = [row['value'] for row in result.get('checks', ()) if row['check'].startswith('lost')]
    return rows[0] if rows else result['counts']['lost']
