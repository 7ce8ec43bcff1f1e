"""The tracing cost: the library with tracing on (``traced``) and another checkout's library (``base``)
against this library (``lib``), as paired ratios of the scenario's gated figure.

``lib/base`` is this checkout with OpenTelemetry installed but no Telemetry
given, against the baseline checkout (target >= 0.97: within 3 %);
``traced/lib`` is tracing on with the SDK's batch span processor (target >=
0.75 on the sequential paths A, B and C; informational elsewhere). Ratios
are speeds: for a latency (C's p50) the inverse, so above 1 is always faster.

>>> rows = cost_rows([{'backend': 'redis', 'scenario': 'A', 'side': s, 'rep': 1, 'status': 'ok', 'e2e_rate': r}
...                   for s, r in (('base', 100.0), ('lib', 99.0), ('traced', 80.0))])
>>> [(row['pair'], round(row['ratio'], 2), row['result']) for row in rows]
[('lib/base', 0.99, 'pass'), ('traced/lib', 0.81, 'pass')]
"""
from __future__ import annotations

import statistics
from typing import Any

from .report import METRICS
from .settings import COST_TARGETS, SEQUENTIAL

__all__ = ['cost_rows', 'cost_table']

PAIRS = (('lib', 'base'), ('traced', 'lib'))


def _speed(metric_unit: str, value: float, against: float) -> float:
    return against / value if metric_unit == 'ms' else value / against


def cost_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per backend, scenario and pair that has both sides measured."""
    out = []
    keys = sorted({(r['backend'], r['scenario']) for r in runs if r.get('side') in ('base', 'traced')})
    for backend, scenario in keys:
        metric = METRICS[scenario][0]
        by_side: dict[str, dict[Any, float]] = {}
        for run in runs:
            value = run.get(metric.key)
            if (run['backend'], run['scenario']) == (backend, scenario) and run.get('status') == 'ok' \
                    and isinstance(value, int | float) and value > 0:
                by_side.setdefault(run['side'], {})[run.get('rep')] = float(value)
        for side, against in PAIRS:
            ratios = [_speed(metric.unit, value, by_side[against][rep])
                      for rep, value in by_side.get(side, {}).items() if rep in by_side.get(against, {})]
            if not ratios:
                continue
            pair = f'{side}/{against}'
            ratio = float(statistics.median(ratios))
            gated = pair == 'lib/base' or scenario in SEQUENTIAL
            result = ('pass' if ratio >= COST_TARGETS[pair] else 'FAIL') if gated else 'info'
            out.append({'kind': 'cost', 'backend': backend, 'scenario': scenario, 'metric': metric.label,
                        'pair': pair, 'ratio': ratio, 'reps': len(ratios),
                        side: statistics.median(by_side[side].values()),
                        against: statistics.median(by_side[against].values()),
                        'target': f'>= {COST_TARGETS[pair]:.2f}' if gated else '', 'result': result})
    return out


def cost_table(rows: list[dict[str, Any]]) -> str:
    """The cost rows as a markdown table (medians of each side; ratio = median of the paired ratios)."""
    lines = ['| Backend | Scenario | Metric | Pair | Side | Against | Speed ratio | Target | Result |',
             '|---|---|---|---|---:|---:|---:|---|---|']
    for row in rows:
        side, against = row['pair'].split('/')
        lines.append(f'| {row["backend"]} | {row["scenario"]} | {row["metric"]} | {row["pair"]} '
                     f'| {row[side]:,.1f} | {row[against]:,.1f} | {row["ratio"]:.3f} | {row["target"]} '
                     f'| {row["result"]} |')
    return '\n'.join(lines)
