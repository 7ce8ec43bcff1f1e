"""The benchmark suite keeps working: a smoke-size run per backend, its JSON shape and complete counts.

Never asserts a time or a rate: only that every measurement completed, saw
every message, and that the report has the promised shape.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import markdown_table, summarize
from benchmarks.settings import SIZES

from .services import require_port

ROOT = Path(__file__).resolve().parent.parent
PORTS = {'redis': 6379, 'amqp': 5672, 'kafka': 9092, 'nats': 4222}
FIGURES = {
    'A': ('send_rate', 'e2e_rate'), 'A2': ('send_rate', 'e2e_rate'), 'B': ('rate', 'loss'),
    'C': ('p50_ms', 'p99_ms'), 'D': ('e2e_rate', 'asyncio_rate'), 'F': ('first_ms', 'start_ms'),
    'D2': ('drain_rate', 'asyncio_rate', 'vs_asyncio', 'cpu_us', 'asyncio_cpu_us'),
    'G': ('rss_growth_mb', 'rss_end_mb'), 'E': ('per_message_ms', 'e2e_rate'),
}
# Memory runs every library path; the networked backends run one scenario per raw code path
# (A shares A2's, D and F the library's), to stay within seconds.
SCENARIOS = {'memory': 'A,A2,B,C,D,D2,F,G', 'redis': 'A2,B,C', 'amqp': 'A2,B,C', 'kafka': 'A2', 'nats': 'A2,B,C'}


def bench(*args: str, timeout: float = 240) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, '-m', 'benchmarks', '--size', 'smoke', '--repeat', '1', *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '| Backend | Scenario |' in done.stdout
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]


def check_runs(lines: list[dict[str, Any]], backend: str, scenarios: list[str]) -> None:
    runs = [line for line in lines if line['kind'] == 'run']
    assert runs, lines
    for run in runs:
        assert run['status'] == 'ok', run
        expected = 1 if run['scenario'] == 'F' else SIZES['smoke'][run['scenario']]
        assert run['count'] == expected, run
        for key in FIGURES[run['scenario']]:
            assert isinstance(run[key], int | float), (key, run)
    assert {r['scenario'] for r in runs if r['side'] == 'lib'} == set(scenarios)
    summaries = [line for line in lines if line['kind'] == 'summary']
    assert {s['scenario'] for s in summaries} == set(scenarios)
    for row in summaries:
        assert row['backend'] == backend
        assert row['library_status'] == 'ok', row
        assert {'metric', 'library', 'raw', 'ratio', 'target', 'result'} <= set(row)


@pytest.mark.parametrize('which', list(SCENARIOS))
def test_smoke_run(which: str, tmp_path: Path) -> None:
    backend = which  # not "backend": conftest parametrizes that name over the contract suite
    if backend in PORTS:
        if importlib.util.find_spec(f'microagent.tools.{backend}') is None:
            pytest.skip(f'microagent.tools.{backend} has not landed')
        require_port(backend, PORTS[backend])
    out = tmp_path / 'performance.md'
    lines = bench('--backends', backend, '--scenarios', SCENARIOS[backend], '--out', str(out))
    scenarios = SCENARIOS[backend].split(',')
    check_runs(lines, backend, scenarios)
    if backend != 'memory':
        assert {r['side'] for r in lines if r['kind'] == 'run'} == {'lib', 'raw'}
        assert any(line['kind'] == 'cleanup' for line in lines)
    document = out.read_text()
    assert '| Backend | Scenario | Metric |' in document
    assert 'python -m benchmarks' in document


def test_effects_scenario_on_both_sides(tmp_path: Path) -> None:
    """E: a consumer with effects and the plain handler it is compared with, on the memory broker."""
    pytest.importorskip('asyncpg')
    require_port('PostgreSQL', 5432)
    lines = bench('--backends', 'memory', '--scenarios', 'E', '--out', str(tmp_path / 'performance.md'))
    check_runs(lines, 'memory', ['E'])
    assert {r['side'] for r in lines if r['kind'] == 'run'} == {'lib', 'raw'}
    row = next(r for r in lines if r['kind'] == 'summary' and r['scenario'] == 'E' and r['target'])
    assert row['target'] == '<= 1.3x' and isinstance(row['ratio'], float)  # its value: never asserted


def test_unreachable_service_is_a_status_never_a_number() -> None:
    done = subprocess.run([sys.executable, '-m', 'benchmarks.run_one', '--backend', 'redis', '--side', 'raw',
                           '--scenario', 'A', '--n', '5', '--uid', 'unreachable', '--timeout', '5',
                           '--dsn', 'redis://:canary-secret@127.0.0.1:1/0'],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    line = json.loads(done.stdout.splitlines()[-1])
    assert line['status'] in ('error', 'incomplete')
    assert 'e2e_rate' not in line and 'send_rate' not in line
    assert 'canary-secret' not in done.stdout + done.stderr


def test_failed_repetition_fails_the_row_and_is_never_a_number() -> None:
    runs = [
        {'kind': 'run', 'backend': 'redis', 'scenario': 'A', 'side': 'lib', 'rep': 1, 'status': 'ok',
         'e2e_rate': 900.0, 'send_rate': 950.0},
        {'kind': 'run', 'backend': 'redis', 'scenario': 'A', 'side': 'lib', 'rep': 2, 'status': 'incomplete',
         'count': 3},
        {'kind': 'run', 'backend': 'redis', 'scenario': 'A', 'side': 'raw', 'rep': 1, 'status': 'ok',
         'e2e_rate': 1000.0, 'send_rate': 1000.0},
        {'kind': 'run', 'backend': 'redis', 'scenario': 'A', 'side': 'raw', 'rep': 2, 'status': 'ok',
         'e2e_rate': 800.0, 'send_rate': 800.0},
    ]
    rows = summarize(runs, ['redis', 'kafka'], ['A'], {'kafka': 'nothing listens'})
    gated = rows[0]
    assert gated['library'] == 900.0 and gated['raw'] == 900.0
    assert gated['library_status'] == 'incomplete 1/2'
    assert gated['result'] == 'FAIL'
    assert rows[-1]['result'] == 'not available'
    table = markdown_table(rows)
    assert 'incomplete 1/2' in table and 'not available' in table


def test_ratio_targets_and_memory_without_raw() -> None:
    runs = [
        {'backend': 'memory', 'scenario': 'C', 'side': 'lib', 'status': 'ok', 'p50_ms': 0.2, 'p99_ms': 0.5},
        {'backend': 'redis', 'scenario': 'C', 'side': 'lib', 'status': 'ok', 'p50_ms': 1.0, 'p99_ms': 2.0},
        {'backend': 'redis', 'scenario': 'C', 'side': 'raw', 'status': 'ok', 'p50_ms': 0.9, 'p99_ms': 1.0},
        {'backend': 'redis', 'scenario': 'B', 'side': 'lib', 'status': 'ok', 'rate': 2000.0, 'loss': 1},
        {'backend': 'redis', 'scenario': 'B', 'side': 'raw', 'status': 'ok', 'rate': 1000.0, 'loss': 0},
    ]
    rows = {(r['backend'], r['scenario'], r.get('metric')): r
            for r in summarize(runs, ['memory', 'redis'], ['B', 'C'], {})}
    assert rows['memory', 'C', 'p50 latency']['result'] == 'n/a'
    assert rows['redis', 'C', 'p50 latency']['result'] == 'pass'     # 1.0 / 0.9 <= 1.2
    assert rows['redis', 'B', 'receive rate']['result'] == 'FAIL'    # fast, but a signal was lost


def test_ratio_is_the_median_of_per_repetition_pairs():
    from benchmarks.report import summarize
    runs = [{'backend': 'redis', 'scenario': 'A', 'side': side, 'status': 'ok', 'rep': rep, 'e2e_rate': rate,
             'send_rate': rate}
            for rep, lib, raw in ((1, 100.0, 90.0), (2, 60.0, 55.0), (3, 40.0, 120.0))
            for side, rate in (('lib', lib), ('raw', raw))]
    row = next(r for r in summarize(runs, ['redis'], ['A'], {}) if r['metric'] == 'end-to-end rate')
    # Pairs 1.11, 1.09 and 0.33 (one repetition where the box was busy for the library only): median 1.09,
    # where the ratio of the medians (60 / 90) would say 0.67.
    assert round(row['ratio'], 2) == 1.09
    assert row['library'] == 60.0 and row['raw'] == 90.0
