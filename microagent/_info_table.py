"""``microagent info`` as readable tables: agents, handlers, schedules with their next runs, queue lengths.

The tables show the same data as ``microagent info --json``.

>>> print(table([('AGENT', 'REPLICAS'), ('users', '1'), ('emails', '2')]))
AGENT   REPLICAS
users   1
emails  2
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ['render_agent', 'render_group', 'schedule_when', 'table']


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def schedule_when(schedule: dict[str, Any]) -> str:
    """``every 3s`` or ``cron 0 9 * * mon (Europe/Berlin)`` for a schedule's info.

    >>> schedule_when({'cron': '0 9 * * mon', 'timezone': 'Europe/Berlin'})
    'cron 0 9 * * mon (Europe/Berlin)'
    """
    if 'period' in schedule:
        return f'every {schedule["period"]:g}s'
    zone = schedule.get('timezone', 'UTC')
    return f'cron {schedule["cron"]}' + (f' ({zone})' if zone != 'UTC' else '')


def _flags(schedule: dict[str, Any]) -> str:
    return ','.join(flag for flag in ('singleton', 'overlap', 'catch_up') if schedule.get(flag)) or '-'


def _next(schedule: dict[str, Any]) -> str:
    return str(schedule.get('next_run', '-')).replace('T', ' ')[:19]


def _section(title: str, rows: list[tuple[str, ...]]) -> list[str]:
    return ['', title, table(rows)] if len(rows) > 1 else []


def _handler_rows(agents: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [('AGENT', 'HANDLER', 'KIND', 'FROM', 'TIMEOUT')]
    for key, info in agents.items():
        rows += [(key, r['handler'], 'receiver', f'signal {r["signal"]}', f'{r["timeout"]:g}s')
                 for r in info['receivers']]
        rows += [(key, c['handler'], 'consumer', f'queue {c["queue"]}', f'{c["timeout"]:g}s')
                 for c in info['consumers']]
        rows += [(key, hook, 'hook', event, '-') for event, hooks in info['hooks'].items() for hook in hooks]
    return rows


def _schedule_rows(agents: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [('AGENT', 'HANDLER', 'WHEN', 'NEXT RUN (UTC)', 'FLAGS')]
    for key, info in agents.items():
        rows += [(key, str(s['handler']).rsplit('.', 1)[-1], schedule_when(s), _next(s), _flags(s))
                 for s in info['schedules']]
    return rows


def _queue_rows(agents: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [('QUEUE', 'CONSUMER', 'LENGTH')]
    for key, info in agents.items():
        for consumer in info['consumers']:
            length = info.get('queue_lengths', {}).get(consumer['queue'])
            rows.append((consumer['queue'], f'{key}.{consumer["handler"]}', 'unknown' if length is None
                         else str(length)))
    return rows


def render_group(info: dict[str, Any]) -> str:
    """The tables of ``microagent info SETTINGS`` (*info* is what ``--json`` prints)."""
    agents: dict[str, dict[str, Any]] = info['agents']
    head = f'{info["settings"]}' + (' (memory://: every agent runs in one process)' if info['in_one_process'] else '')
    rows: list[tuple[str, ...]] = [('AGENT', 'CLASS', 'REPLICAS', 'BUS', 'BROKER')]
    rows += [(key, a['backend'], str(a['replicas']), a['bus'] or '-', a['broker'] or '-') for key, a in agents.items()]
    lines = [head, '', table(rows)]
    lines += _section('HANDLERS', _handler_rows(agents))
    lines += _section('SCHEDULES', _schedule_rows(agents))
    lines += _section('QUEUES', _queue_rows(agents))
    return '\n'.join(lines) + '\n'


def render_agent(info: dict[str, Any]) -> str:
    """The tables of ``microagent info MODULE:Agent``."""
    agents = {info['name']: info}
    lines = [info['name']]
    lines += _section('HANDLERS', _handler_rows(agents))
    lines += _section('SCHEDULES', _schedule_rows(agents))
    return '\n'.join(lines) + '\n'
