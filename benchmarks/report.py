"""From the runs' JSON lines to medians, ratios, pass/fail and the markdown report.

A row shows the library's and the raw client's medians over the repetitions
that completed; its ratio is the median of the per-repetition ratios
(library and raw run back to back in each repetition, so a pair saw the same
load on this shared machine; a ratio of medians could pair a quiet library
run with a busy raw one). A repetition that failed or timed out makes the
row FAIL and is counted, never replaced by a number.

>>> rows = summarize([{'backend': 'memory', 'scenario': 'F', 'side': 'lib', 'status': 'ok', 'first_ms': 2.0}],
...                  ['memory'], ['F'], {})
>>> rows[0]['result']
'pass'
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .settings import D_HANDLER_SECONDS, D_INFLIGHT, OWN_BASELINE, RAW, RAW_SCENARIOS, UNSUPPORTED, target

__all__ = ['Metric', 'markdown_table', 'render_doc', 'render_section', 'summarize']


@dataclass(frozen=True)
class Metric:
    """The figure a row reports: its key in the run results, a label, a unit; gated or informational."""

    key: str
    label: str
    unit: str
    gated: bool = True


METRICS: dict[str, tuple[Metric, ...]] = {
    'A': (Metric('e2e_rate', 'end-to-end rate', '/s'), Metric('send_rate', 'send rate', '/s', gated=False)),
    'A2': (Metric('e2e_rate', 'end-to-end rate', '/s'), Metric('send_rate', 'send rate', '/s', gated=False)),
    'B': (Metric('rate', 'receive rate', '/s'), Metric('loss', 'lost signals', '', gated=False)),
    'C': (Metric('p50_ms', 'p50 latency', 'ms'), Metric('p99_ms', 'p99 latency', 'ms', gated=False)),
    'D': (Metric('e2e_rate', 'end-to-end rate', '/s'),
          Metric('asyncio_rate', 'bare asyncio, no broker', '/s', gated=False)),
    'D2': (Metric('drain_rate', 'drain rate vs bare asyncio (same process)', '/s'),
           Metric('cpu_us', 'CPU per message vs bare asyncio', 'us', gated=False)),
    'F': (Metric('first_ms', 'start to first handled', 'ms'), Metric('start_ms', 'start() returned', 'ms', False)),
    'G': (Metric('rss_growth_mb', 'RSS growth', 'MB'), Metric('rss_end_mb', 'RSS at end', 'MB', gated=False)),
    'E': (Metric('per_message_ms', 'time per message, effects vs plain INSERT ON CONFLICT', 'ms'),
          Metric('e2e_rate', 'end-to-end rate', '/s', gated=False)),
}


# Figures the raw side measures too (D's bare-asyncio reference, F and G have no raw counterpart).
RAW_FIGURES = frozenset({'e2e_rate', 'send_rate', 'rate', 'loss', 'p50_ms', 'p99_ms', 'per_message_ms'})


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get('status') == 'ok' and isinstance(r.get(key), int | float)]
    return float(statistics.median(values)) if values else None


def outcome(runs: list[dict[str, Any]]) -> str:
    """``ok`` when every repetition completed, else e.g. ``incomplete 1/3, error 1/3``."""
    bad: dict[str, int] = {}
    for run in runs:
        if run.get('status') != 'ok':
            bad[run.get('status', 'error')] = bad.get(run.get('status', 'error'), 0) + 1
    if not runs:
        return 'not run'
    return 'ok' if not bad else ', '.join(f'{k} {v}/{len(runs)}' for k, v in sorted(bad.items()))


def summarize(runs: Iterable[dict[str, Any]], backends: list[str], scenarios: list[str],
              unavailable: dict[str, str]) -> list[dict[str, Any]]:
    """One summary dict per (backend, scenario, metric), in table order."""
    runs = list(runs)
    rows: list[dict[str, Any]] = []
    for backend in backends:
        for scenario in scenarios:
            base = {'kind': 'summary', 'backend': backend, 'scenario': scenario}
            if backend in unavailable:
                rows.append({**base, 'result': 'not available', 'note': unavailable[backend]})
            elif scenario in UNSUPPORTED.get(backend, ()):
                rows.append({**base, 'result': 'n/a', 'note': f'{backend} has no signal bus'})
            else:
                rows.extend(scenario_rows(runs, backend, scenario, base))
    return rows


def select(runs: list[dict[str, Any]], backend: str, scenario: str, side: str) -> list[dict[str, Any]]:
    return [r for r in runs if r.get('backend') == backend and r.get('scenario') == scenario
            and r.get('side') == side]


def scenario_rows(runs: list[dict[str, Any]], backend: str, scenario: str,
                  base: dict[str, Any]) -> list[dict[str, Any]]:
    lib_runs = select(runs, backend, scenario, 'lib')
    raw_runs = select(runs, backend, scenario, 'raw')
    lib_status, raw_status = outcome(lib_runs), outcome(raw_runs)
    rows = []
    for metric in METRICS[scenario]:
        lib = median_of(lib_runs, metric.key)
        raw = reference(runs, backend, scenario, metric, raw_runs)
        row = {**base, 'metric': metric.label, 'unit': metric.unit, 'library': lib, 'raw': raw,
               'library_status': lib_status, 'raw_status': raw_status if raw_runs else 'none',
               'reps': len(lib_runs)}
        against_raw = raw is not None and not (scenario in ('D', 'D2') and metric.gated)
        pairs = paired_ratio(lib_runs, raw_runs, metric.key) if against_raw else None
        if scenario == 'D2' and metric.gated:  # each run measured its own bare-asyncio reference
            pairs = median_of(lib_runs, 'vs_asyncio')
        rows.append(judge(row, backend, scenario, metric, lib_runs, pairs))
    return rows


def paired_ratio(lib_runs: list[dict[str, Any]], raw_runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of library/raw ratios of the repetitions where both sides measured *key*."""
    raw_by_rep = {r.get('rep'): float(r[key]) for r in raw_runs if r.get('status') == 'ok' and r.get(key)}
    ratios = [float(r[key]) / raw_by_rep[r.get('rep')] for r in lib_runs
              if r.get('status') == 'ok' and r.get(key) is not None and r.get('rep') in raw_by_rep]
    return float(statistics.median(ratios)) if ratios else None


def reference(runs: list[dict[str, Any]], backend: str, scenario: str, metric: Metric,
              raw_runs: list[dict[str, Any]]) -> float | None:
    """What the library is compared with: the raw median, or for D the ideal capped by A2."""
    if scenario == 'D2':  # the bare-asyncio figures each library run measured in its own process
        return median_of(select(runs, backend, scenario, 'lib'), 'asyncio_' + metric.key.removeprefix('drain_'))
    if scenario == 'D' and metric.gated:
        ideal = D_INFLIGHT / D_HANDLER_SECONDS
        ceiling = median_of(select(runs, backend, 'A2', 'lib'), 'e2e_rate')
        return min(ideal, ceiling) if ceiling else ideal
    if scenario not in RAW_SCENARIOS or metric.key not in RAW_FIGURES or \
            (backend not in RAW and scenario not in OWN_BASELINE):
        return None
    return median_of(raw_runs, metric.key)


def judge(row: dict[str, Any], backend: str, scenario: str, metric: Metric,
          lib_runs: list[dict[str, Any]], paired: float | None = None) -> dict[str, Any]:
    """Fill ratio (*paired* when known, else of the medians), target and result of *row*."""
    goal = target(backend, scenario)
    lib, raw = row['library'], row['raw']
    ratio = paired if paired is not None else lib / raw if lib is not None and raw else None
    row['ratio'] = ratio
    row['target'] = str(goal) if metric.gated else ''
    if not metric.gated:
        row['result'] = '' if row['library_status'] == 'ok' else 'FAIL'
        return row
    if row['library_status'] != 'ok':
        row['result'] = 'FAIL'
    elif goal.kind != 'ratio':
        row['result'] = 'pass' if lib is not None and goal.check(lib) else 'FAIL'
    elif ratio is None:
        row['result'] = 'n/a'
        row['note'] = 'no raw client' if backend not in RAW else f'raw side: {row["raw_status"]}'
    else:
        lossless = all(not r.get('loss') for r in lib_runs)
        row['result'] = 'pass' if goal.check(ratio) and lossless else 'FAIL'
    return row


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return '-'
    if unit == '/s':
        return f'{value:,.0f}/s'
    if unit in ('ms', 'MB'):
        return f'{value:.2f} {unit}'
    if unit == 'us':
        return f'{value:.1f} us'
    return f'{value:g}'


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (medians; ratio = median of the per-repetition library / raw)."""
    lines = ['| Backend | Scenario | Metric | Library | Raw | Ratio | Target | Result |',
             '|---|---|---|---:|---:|---:|---|---|']
    for row in rows:
        if 'metric' not in row:
            lines.append(f'| {row["backend"]} | {row["scenario"]} | | | | | | {row["result"]}: {row["note"]} |')
            continue
        lib = fmt(row['library'], row['unit'])
        if row['library_status'] != 'ok':
            lib = f'{lib} ({row["library_status"]})'
        raw = fmt(row['raw'], row['unit'])
        if row['raw_status'] not in ('ok', 'none'):
            raw = f'{raw} ({row["raw_status"]})'
        ratio = f'{row["ratio"]:.2f}' if row['ratio'] is not None else 'n/a' if row['target'] else ''
        lines.append(f'| {row["backend"]} | {row["scenario"]} | {row["metric"]} | {lib} | {raw} | {ratio} '
                     f'| {row["target"]} | {row["result"]} |')
    return '\n'.join(lines)


def render_doc(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The whole of docs/performance.md: machine, command, load, table and how to read it."""
    machine = meta['machine']
    described = ', '.join(f'{k} {v}' for k, v in machine.items() if k != 'loadavg')
    servers = ', '.join(f'{k} {v}' for k, v in meta.get('servers', {}).items()) or 'none'
    notes = '\n'.join(f'- {note}' for note in meta.get('notes', []))
    return f"""# Performance

Generated by the benchmark suite (`benchmarks/`, see its README) on {meta['finished']}.
Regenerate with:

```
{meta['command']}
```

Machine: {described}.
Servers: {servers}.
Load average (1, 5, 15 min) at start {meta['load_start']}, at end {meta['load_end']}.
{notes}

Medians of {meta['repeat']} repetitions, size `{meta['size']}`; each scenario, side and repetition ran in a
process of its own, library and raw client alternating. Ratio = the median of the per-repetition
library / raw client ratios (each pair ran back to back, under the same load), not the ratio of the medians
(for D: library / min(64 in flight / 5 ms, the library's A2 rate)). A row FAILs when its target is missed,
when a repetition failed or timed out, or (B) when a signal was lost; n/a means there is no raw client to
compare with (memory) and the absolute figures stand alone.

{markdown_table(rows)}
{_costs(meta)}
Scenarios: A queue end-to-end with sequential sends (first send to last handled, every id counted); A2 the
same with the batch API (`send_many`, {meta['batch']} at a time) against a pipelined raw client; B signals,
N sequential sends to one receiver; C sequential RPC calls over the bus; D handlers awaiting 5 ms with 64
in flight; F start-up, `agent.start()` to the first handled message; E exactly-once effects on PostgreSQL
(`effects=PostgresEffects(dsn)`, the handler's insert on `tx`) against a plain handler running the same
`INSERT ... ON CONFLICT DO NOTHING` in autocommit (the "Raw" column of E), time per message, lower is better;
G soak (with `--soak`), RSS growth from 5% to 100% of the messages through one consumer.
"""


def _costs(meta: dict[str, Any]) -> str:
    from .cost import cost_table

    if not meta.get('costs'):
        return ''
    return f'\nTracing cost (`--tracing`, `--baseline`; see docs/observability.md):\n\n{cost_table(meta["costs"])}\n'


def render_section(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """A further run (e.g. the soak, or a tracing cost run) as a section to append to the document."""
    from .cost import cost_table

    scenarios = ', '.join(sorted({row['scenario'] for row in (*rows, *meta.get('costs', ()))}))
    costs = f'\n\n{cost_table(meta["costs"])}' if meta.get('costs') else ''
    notes = '\n'.join(f'- {note}' for note in meta.get('notes', []))
    return f"""## Scenarios {scenarios} ({meta['finished']})

```
{meta['command']}
```

Medians of {meta['repeat']} repetitions, size `{meta['size']}`. Load average at start {meta['load_start']}, at end
{meta['load_end']}.
{notes}

{markdown_table(rows) if rows else ''}{costs}
"""
