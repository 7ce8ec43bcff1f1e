"""The launcher run as a real CLI in subprocesses: processes, restarts, drain, orphans, readiness."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .launcher_helpers import Marun, alive, cli_env, http_get, markers, run_cli, wait_until


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def group(marker_dir: Path) -> Iterator[list[Marun]]:
    started: list[Marun] = []
    yield started
    for marun in started:
        marun.close()


def start(group: list[Marun], marker_dir: Path, *args: str) -> Marun:
    marun = Marun(*args, env=cli_env(marker_dir))
    group.append(marun)
    return marun


def test_each_replica_runs_in_its_own_process(group: list[Marun], marker_dir: Path) -> None:
    marun = start(group, marker_dir, 'tests.launcher_settings_procs', '--grace', '3')
    marun.wait_line(r': started, pid \d+', count=3)
    pids = marun.pids()
    assert set(pids) == {'ticker#0', 'ticker#1', 'slow'}
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    for label in ('ticker#0', 'ticker#1'):
        wait_until(lambda label=label: markers(marker_dir, f'tick-ticker-{pids[label]}'))
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def test_killed_worker_is_restarted_and_the_group_keeps_working(group: list[Marun], marker_dir: Path) -> None:
    marun = start(group, marker_dir, 'tests.launcher_settings_procs', '--grace', '3', '--restart-delay', '0.2')
    marun.wait_line(r': started, pid \d+', count=3)
    victim = marun.pids()['ticker#0']
    wait_until(lambda: markers(marker_dir, f'tick-ticker-{victim}'))
    os.kill(victim, signal.SIGKILL)
    marun.wait_line(r'ticker#0: exited with -9, restart 1 in')
    marun.wait_line(r'ticker#0: started, pid \d+', count=2)
    fresh = marun.pids()['ticker#0']
    assert fresh != victim
    wait_until(lambda: markers(marker_dir, f'tick-ticker-{fresh}'))
    other = marun.pids()['ticker#1']
    before = len(markers(marker_dir, f'tick-ticker-{other}'))
    assert before and not markers(marker_dir, f'stop-ticker-{victim}')
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def test_sigterm_drains_in_flight_work_and_runs_pre_stop(group: list[Marun], marker_dir: Path) -> None:
    grace = 4.0
    marun = start(group, marker_dir, 'tests.launcher_settings_procs', '--grace', str(grace))
    marun.wait_line(r': started, pid \d+', count=3)
    pids = marun.pids()
    slow = pids['slow']
    for label, pid in pids.items():
        wait_until(lambda label=label, pid=pid: markers(marker_dir, f'start-{label.split("#")[0]}-{pid}'))
    wait_until(lambda: markers(marker_dir, f'begin-slow-{slow}'))
    began = time.monotonic()
    marun.signal(signal.SIGTERM)
    code = marun.wait(timeout=grace + 10)
    took = time.monotonic() - began
    assert code == 0, marun.output
    assert took < grace + 1, f'group took {took:.2f}s to stop with grace {grace}s'
    # The job that was running when the signal came finished, and every agent ran pre_stop.
    assert markers(marker_dir, f'end-slow-{slow}'), marun.output
    for label, pid in pids.items():
        name = label.split('#')[0]
        assert markers(marker_dir, f'stop-{name}-{pid}'), f'{label} did not run pre_stop'
    assert not any(alive(pid) for pid in pids.values())


def test_second_signal_kills_at_once(group: list[Marun], marker_dir: Path) -> None:
    marun = start(group, marker_dir, 'tests.launcher_settings_procs', '--grace', '30')
    marun.wait_line(r': started, pid \d+', count=3)
    slow = marun.pids()['slow']
    wait_until(lambda: markers(marker_dir, f'begin-slow-{slow}'))
    marun.signal(signal.SIGTERM)
    marun.wait_line('stopping')
    marun.signal(signal.SIGTERM)
    assert marun.wait(timeout=10) == 4  # ExitCode.FORCED, long before the 30 s grace


def test_no_orphans_after_the_supervisor_is_sigkilled(group: list[Marun], marker_dir: Path) -> None:
    marun = start(group, marker_dir, 'tests.launcher_settings_procs')
    marun.wait_line(r': started, pid \d+', count=3)
    pids = list(marun.pids().values())
    assert all(alive(pid) for pid in pids)
    marun.proc.kill()
    marun.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=5)


def test_crash_loop_backs_off_and_fail_fast_stops_the_group(group: list[Marun], marker_dir: Path) -> None:
    marun = start(group, marker_dir, 'tests.launcher_settings_crash', '--restart-delay', '0.1',
                  '--max-restart-delay', '0.2')
    delays = [float(m[1]) for m in marun.wait_line(r'crasher: exited with 1, restart \d+ in ([\d.]+)s', count=3)]
    # Doubling, capped, with full jitter: each delay anywhere up to its ceiling (logged to 0.1 s).
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, [0.1, 0.2, 0.2], strict=True)), delays
    ticker = marun.pids()['ticker']
    assert alive(ticker)  # the healthy agent is not disturbed
    marun.signal(signal.SIGINT)
    assert marun.wait() == 0

    fast = start(group, marker_dir, 'tests.launcher_settings_crash', '--fail-fast')
    assert fast.wait(timeout=30) == 3  # ExitCode.AGENT_FAILED
    assert 'fail-fast' in fast.output


def test_readyz_turns_ready_only_once_consuming(group: list[Marun], marker_dir: Path) -> None:
    marun = start(group, marker_dir, 'tests.launcher_settings_late', '--http-port', '0', '--grace', '2')
    base = marun.http_base()
    marun.wait_line(r'late: started, pid (\d+)')
    pid = marun.pids()['late']
    seen: list[int] = []

    def ready() -> bool:
        seen.append(http_get(f'{base}/readyz')[0])
        # Never ready before its (slow) pre_start finished.
        assert seen[-1] == 503 or markers(marker_dir, f'start-late-{pid}')
        return seen[-1] == 200
    wait_until(ready)
    assert seen[0] == 503, seen
    assert http_get(f'{base}/healthz')[0] == 200
    status, metrics = http_get(f'{base}/metrics')
    assert status == 200
    assert 'microagent_agent_up{agent="late",replica="0"} 1.0' in metrics
    assert 'microagent_agent_ready{agent="late",replica="0"} 1.0' in metrics
    assert http_get(f'{base}/nowhere')[0] == 404
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: http_get(f'{base}/healthz')[0] == 503)
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def test_memory_group_runs_in_one_process_and_messages_flow(marker_dir: Path) -> None:
    result = run_cli('examples.settings', '--duration', '3', '--grace', '2', '--status', 'plain',
                     command='marun', env=cli_env(marker_dir))
    out = result.stderr + result.stdout
    assert result.returncode == 0, out
    assert 'share one process' in out
    assert len(set(re.findall(r': started, pid (\d+)', out))) == 1
    for needle in (r'user \d+ created', r'comment \d+ posted for user', r"email 'welcome' sent to user",
                   r'user \d+ has 1 comment\(s\), welcome email delivered', 'users: pre_stop',
                   'comments: pre_stop', 'emails: pre_stop', r'status emails#1: .*state=stopped'):
        assert re.search(needle, out), f'{needle!r} not in output:\n{out}'


def test_json_logs(marker_dir: Path) -> None:
    result = run_cli('examples.settings', '--duration', '2', '--grace', '1', '--log-format', 'json',
                     '--status', 'plain', command='marun', env=cli_env(marker_dir))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {r['tag'] for r in records} >= {'launcher'}
    assert any('created' in r['msg'] for r in records)
    assert all({'ts', 'level', 'logger', 'msg', 'pid'} <= set(r) for r in records)


@pytest.mark.parametrize(('module', 'needle'), [
    ('tests.launcher_settings_bad_backend',
     "BROKER['default']: unknown backend 'microagent.tools.memory.NoSuchBroker'"),
    ('tests.launcher_settings_bad_key', "AGENT['ticker']: \"bus\" names 'missing'"),
    ('tests.launcher_settings_bad_import', "AGENT['ghost']: cannot import 'tests.launcher_no_such_module'"),
    ('tests.launcher_no_such_settings', "settings 'tests.launcher_no_such_settings': cannot import"),
])
def test_bad_settings_are_one_line_and_nothing_starts(marker_dir: Path, module: str, needle: str) -> None:
    result = run_cli(module, command='marun', env=cli_env(marker_dir))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert 'started' not in result.stderr and not list(marker_dir.iterdir())


@pytest.mark.slow
def test_demo_script(marker_dir: Path) -> None:
    """The README's demo command as is (it runs ./scripts/setup first, hence slow)."""
    import subprocess

    from .launcher_helpers import ROOT

    result = subprocess.run([str(ROOT / 'scripts' / 'demo'), '--duration', '3', '--status', 'plain'], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=cli_env(marker_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r'user \d+ has 1 comment\(s\), welcome email delivered', result.stderr), result.stderr[-2000:]
