"""The effects fault runs as markdown: a section of docs/reliability.md between two markers, kept by other runs.

>>> text = replace_section(old_doc, effects_markdown(results, command='python -m reliability --effects', took=60))
... # doctest: +SKIP
"""
from __future__ import annotations

import platform
import time
from typing import Any

__all__ = ['BEGIN', 'END', 'effects_markdown', 'replace_section']

BEGIN = '<!-- effects: written by python -m reliability --effects -->'
END = '<!-- effects: end -->'


def _cell(value: Any) -> str:
    return str(value).replace('|', '\\|')


def effects_markdown(results: list[dict[str, Any]], *, command: str, took: float) -> str:
    """The section: how it was made, one summary row per backend, then each backend's checks."""
    stamp = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    out = [BEGIN, '## Exactly-once effects under faults (issue 20)', '',
           'A chain of agents with `effects=PostgresEffects(...)` (`reliability/effects_agents.py`): the first '
           'stage writes a row and sends a message through the outbox, relays publish it, the second stage '
           'writes a row. Consumers and relays are SIGKILLed, relays also kill themselves right after a '
           'publish (before deleting the row), connections to PostgreSQL and to the broker are cut at fault '
           'proxies, and a private PostgreSQL is crashed (immediate stop) and restarted. Counted from the '
           'database: every confirmed message must have exactly one row per stage. The memory backend runs in one '
           'process (its hub does not cross processes): there a kill is a stop with no grace (handlers and relay '
           'passes cancelled mid-flight) and a relay dies by an exception right after a publish. See '
           '`reliability/effects_run.py` and docs/exactly-once.md.', '',
           '```', command, '```', '',
           f'Run {stamp} on {platform.machine()} / Python {platform.python_version()}, {took:.0f} s in all.', '',
           '| backend | size | confirmed | stage-1 effects (extra) | stage-2 effects (extra) | lost 1 / 2 | kills '
           '| relay self-kills | PG / broker connections cut | PG restarts | handler runs beyond effects '
           '| acked as handled before | pass |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        s, f = r['summary'], r['figures']
        extra = {row['check']: row['value'] for row in r['checks']}
        out.append(
            f"| {r['backend']} | {r['size']} | {s['sent_confirmed']} | {s['effects_a']} "
            f"({extra['effects written twice (stage 1, extra rows)']}) | {s['effects_b']} "
            f"({extra['outbox messages whose effect happened twice (stage 2, extra rows)']}) | "
            f"{extra['confirmed messages without their effect (stage 1)']} / "
            f"{extra['outbox messages without their effect downstream (stage 2)']} | {f.get('kills', 0)} | "
            f"{s['relay_self_kills']} | {f.get('pg_cuts', 0)} / {f.get('broker_cuts', 0)} | "
            f"{f.get('pg_restarts', 0)} | "
            f"{extra['handler runs beyond the effects (redeliveries, rolled-back attempts)']} | "
            f"{s['acked_as_handled_before']} | {'yes' if r['ok'] else '**NO**'} |")
    for r in results:
        out += ['', f"### {r['backend']} ({r['size']}): {'PASS' if r['ok'] else '**FAIL**'}", '',
                '| check | value | limit | pass |', '|---|---|---|---|']
        out += [f"| {row['check']} | {_cell(row['value'])} | {row['limit']} | {'yes' if row['ok'] else '**NO**'} |"
                for row in r['checks']]
        out += [f'\nNote: {note}' for note in r.get('notes', [])]
    return '\n'.join([*out, '', END])


def replace_section(document: str, section: str) -> str:
    """*document* with its effects section replaced by *section* (appended when it has none)."""
    if BEGIN in document and END in document:
        head, _, rest = document.partition(BEGIN)
        return head + section + rest.partition(END)[2]
    return document.rstrip('\n') + '\n\n' + section + '\n'
