"""The scale benchmark keeps working: a smoke-size run per backend, its JSON shape, complete measurements.

Never asserts a rate: only that every measurement (the broker limit, 2 consumer
and 2 producer processes: the multi-process paths) completed and the table has
every row.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scale import markdown, summarize

from .services import require_port

ROOT = Path(__file__).resolve().parent.parent
PORTS = {'redis': 6379, 'amqp': 5672, 'kafka': 9092, 'nats': 4222}


def scale(*args: str, timeout: float = 240) -> tuple[list[dict[str, Any]], str]:
    done = subprocess.run([sys.executable, '-m', 'benchmarks.scale', '--size', 'smoke', '--repeat', '1', *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')], done.stdout


@pytest.mark.parametrize('which', list(PORTS))
def test_scale_smoke_run_measures_every_case(which: str) -> None:
    backend = which
    require_port(backend, PORTS[backend])
    lines, out = scale('--backends', backend, '--processes', '2')
    runs = [line for line in lines if line['kind'] == 'scale']
    assert {(r['case'], r['processes']) for r in runs} == {('limit', 4), ('consumers', 2), ('producers', 2)}
    for run in runs:
        assert run['status'] == 'ok', run
        assert run['rate'] > 0 and run['seconds'] > 0
    rows = [line for line in lines if line['kind'] == 'scale_row']
    assert len(rows) == 3 and all(row['rate'] and row['of_limit'] is not None for row in rows)
    assert [line for line in lines if line['kind'] == 'cleanup']
    assert f'| {backend} |' in out


def test_summary_marks_a_failed_measurement() -> None:
    lines = [{'backend': 'nats', 'case': 'limit', 'processes': 4, 'status': 'ok', 'rate': 1000.0},
             {'backend': 'nats', 'case': 'consumers', 'processes': 1, 'status': 'ok', 'rate': 500.0},
             {'backend': 'nats', 'case': 'producers', 'processes': 1, 'status': 'error', 'rate': None}]
    rows = summarize(lines, ['nats'], (1,))
    by_case = {(r['case'], r['processes']): r for r in rows}
    assert by_case[('consumers', 1)]['of_limit'] == 0.5
    assert by_case[('producers', 1)]['rate'] is None
    table = markdown(rows, (1,))
    assert '| nats | 1,000 | 500 | 0.50 | FAIL | - |' in table
