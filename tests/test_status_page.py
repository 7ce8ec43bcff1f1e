"""The live status page on ``--http-port``: its JSON, and the page itself in headless Chromium."""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser import chromium
from .launcher_helpers import Marun, cli_env, http_get, wait_until


@pytest.fixture
def group() -> Iterator[list[Marun]]:
    started: list[Marun] = []
    yield started
    for marun in started:
        marun.close()


def status(base: str) -> dict[str, Any]:
    code, body = http_get(f'{base}/status.json')
    assert code == 200, body
    return dict(json.loads(body))


def test_status_json_has_every_replica_its_counters_queues_and_schedules(group: list[Marun], tmp_path: Path) -> None:
    marun = Marun('examples.settings', '--http-port', '0', '--grace', '3', env=cli_env(tmp_path))
    group.append(marun)
    base = marun.http_base()
    data = wait_until(lambda: (d := status(base))['ready'] and d['agents'][0]['handled'] >= 1 and d)
    agents = {a['name']: a for a in data['agents']}
    assert set(agents) == {'users', 'comments', 'emails#0', 'emails#1'}
    users = agents['users']
    assert users['state'] == 'running' and users['ready'] and users['pid'] and users['restarts'] == 0
    assert users['queues'][0]['queue'] == 'email_sent' and users['queues'][0]['length'] is not None
    assert {'handled', 'failed', 'retried', 'dead_lettered', 'inflight'} <= set(users['queues'][0])
    assert users['schedules'][0]['handler'] == 'UserAgent.sign_up' and users['schedules'][0]['next_run']
    assert agents['comments']['schedules'][0]['cron'] == '*/10 * * * * *'
    assert sum(a['handled'] for a in agents.values() if a['name'].startswith('emails')) >= 1
    page = http_get(f'{base}/')
    assert page[0] == 200 and page[1].startswith('<!DOCTYPE html>')
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def _cell(driver: Any, name: str, field: str) -> str:
    # Read in one script call: the page redraws its rows every second, so an element found first and read
    # later may be gone (stale) by then.
    text = driver.execute_script(
        'const td = document.querySelector(arguments[0]); return td ? td.textContent : "";',
        f'tr[data-name="{name}"] td[data-field="{field}"]')
    return str(text)


@pytest.mark.timeout(1200)  # a fresh machine installs chromium first (apt-get)
def test_status_page_in_chromium_shows_a_killed_replica_restarting(group: list[Marun], tmp_path: Path) -> None:
    with chromium(tmp_path / 'profile') as driver:
        marun = Marun('tests.launcher_settings_procs', '--http-port', '0', '--grace', '2', '--restart-delay', '0.2',
                      env=cli_env(tmp_path))
        group.append(marun)
        base = marun.http_base()
        driver.get(f'{base}/')
        for name in ('ticker#0', 'ticker#1', 'slow'):
            wait_until(lambda name=name: _cell(driver, name, 'pid').isdigit(), timeout=30)
        victim = int(_cell(driver, 'ticker#0', 'pid'))
        assert victim == marun.pids()['ticker#0'] and _cell(driver, 'ticker#0', 'restarts') == '0'
        wait_until(lambda: 'tick' in _cell(driver, 'ticker#0', 'schedules') and 'run(s)' in
                   _cell(driver, 'ticker#0', 'schedules'))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: _cell(driver, 'ticker#0', 'restarts') == '1', timeout=30)
        wait_until(lambda: _cell(driver, 'ticker#0', 'pid').isdigit()
                   and int(_cell(driver, 'ticker#0', 'pid')) != victim, timeout=30)
        assert _cell(driver, 'ticker#1', 'restarts') == '0'
        wait_until(lambda: _cell(driver, 'ticker#0', 'state').startswith('running'), timeout=30)
        driver.save_screenshot(str(tmp_path / 'status.png'))
        resources = driver.execute_script(
            'return performance.getEntriesByType("resource").map(e => e.name)')
        assert all(str(url).startswith(base) for url in resources), resources  # nothing from elsewhere
        errors = [entry for entry in driver.get_log('browser') if entry['level'] in ('SEVERE', 'ERROR')]
        assert errors == []
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def test_snapshot_counts_over_restarts_and_shows_schedules() -> None:
    from microagent.launcher.slot import Slot
    from microagent.launcher.snapshot import instance

    slot = Slot('emails#1', 'examples.settings', [('emails', 1)], replicas={'emails': 2})
    report = {'state': 'running', 'pid': 1, 'agents': [{
        'agent': 'emails', 'replica': 1, 'ready': True,
        'consumers': [{'queue': 'mailer', 'handled': 5, 'failed': 1, 'retried': 1, 'dead_lettered': 0,
                       'buckets': [5] + [0] * 11, 'sum': 0.01, 'length': 7, 'inflight': 2}],
        'schedules': [{'handler': 'EmailAgent.weekly_digest', 'next_run': '2026-01-05T08:00:00+00:00',
                       'singleton': True, 'holder': True, 'runs': 1, 'failed': 0, 'missed': 0}]}]}
    slot.apply(report)
    first = instance(slot, 'emails', 1)
    assert (first['name'], first['handled'], first['inflight'], first['queues'][0]['length']) == ('emails#1', 5, 2, 7)
    assert first['schedules'][0]['holder'] is True and first['state'] == 'starting'  # no live process here
    slot.ended('crashed')
    slot.restarts += 1
    after = instance(slot, 'emails', 1)
    assert (after['handled'], after['inflight'], after['restarts'], after['schedules']) == (5, 0, 1, [])
    slot.apply(report)  # the new process reports its own counters: totals keep growing
    assert instance(slot, 'emails', 1)['handled'] == 10
