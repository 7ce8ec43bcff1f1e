"""The ``microagent`` and ``marun`` commands, run as real subprocesses."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

import microagent
from microagent.cli import parse_pairs
from microagent.exceptions import ConfigurationError

from .launcher_helpers import BIN, ROOT, cli_env, run_cli


def one_error_line(result: object) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_version() -> None:
    result = run_cli('--version')
    assert result.returncode == 0
    assert result.stdout.strip() == f'microagent {microagent.__version__}'


def test_info_of_an_agent_class_needs_no_service() -> None:
    result = run_cli('info', 'examples.users:UserAgent', '--json')
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info['name'] == 'UserAgent'
    assert info['hooks'] == {'pre_start': ['setup'], 'post_start': ['announce'], 'pre_stop': ['goodbye'],
                             'server': ['seed']}
    assert [c['queue'] for c in info['consumers']] == ['email_sent']
    assert info['schedules'][0]['period'] == 3.0 and 'next_run' in info['schedules'][0]
    comments = json.loads(run_cli('info', 'examples.comments:CommentAgent', '--json').stdout)
    assert {r['signal'] for r in comments['receivers']} == {'user_created', 'rpc_comments_count'}
    assert comments['schedules'][0]['cron'] == '*/10 * * * * *'


def test_info_of_a_settings_module() -> None:
    result = run_cli('info', 'examples/settings.py', '--json')
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info['settings'] == 'examples.settings' and info['in_one_process'] is True
    assert set(info['agents']) == {'users', 'comments', 'emails'}
    emails = info['agents']['emails']
    assert emails['replicas'] == 2 and emails['queue_lengths'] == {'mailer': 0}
    assert emails['consumers'][0]['dto_class'] == 'Email'


@pytest.mark.parametrize(('args', 'needle'), [
    (('info', 'examples.nowhere:Agent'), "examples.nowhere:Agent: cannot import"),
    (('info', 'examples.declarations:HERE'), 'is not a MicroAgent subclass'),
    (('send', 'examples.settings', 'mailer', '{}'), "BROKER 'default' is memory://"),
    (('signal', 'examples.settings', 'user_created', 'oops'), "BUS 'default' is memory://"),
    (('run', 'examples.settings', '--grace', '-1'), '--grace must be >= 0'),
    (('frobnicate',), "invalid choice: 'frobnicate'"),
    (('run',), 'the following arguments are required: SETTINGS'),
])
def test_errors_are_one_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    assert needle in one_error_line(run_cli(*args))


def test_marun_is_run() -> None:
    assert 'tests.launcher_nothing_here' in one_error_line(run_cli('tests.launcher_nothing_here', command='marun'))


def test_parse_pairs() -> None:
    assert parse_pairs(['n=1', 'name=bob', 'flags=[true]', 'empty=']) == {'n': 1, 'name': 'bob', 'flags': [True],
                                                                         'empty': ''}
    with pytest.raises(ConfigurationError):
        parse_pairs(['novalue'])


def test_agent_names_are_unique_across_settings_modules(tmp_path: Path) -> None:
    line = one_error_line(run_cli('run', 'tests.launcher_settings_procs', 'tests.launcher_settings_crash',
                                  env=cli_env(tmp_path)))
    assert "AGENT['ticker'] is also in 'tests.launcher_settings_procs'" in line


def test_info_prints_tables_by_default() -> None:
    result = run_cli('info', 'examples.settings')
    assert result.returncode == 0 and result.stderr == '', result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'examples.settings (memory://: every agent runs in one process)'
    assert re.search(r'^emails\s+examples\.emails\.EmailAgent\s+2\s+-\s+default$', result.stdout, re.M)
    assert re.search(r'^comments\s+comments_count\s+receiver\s+signal rpc_comments_count\s+5s$', result.stdout, re.M)
    schedule = re.search(r'^emails\s+weekly_digest\s+cron 0 9 \* \* mon \(Europe/Berlin\)\s+(\S+ \S+)\s+-$',
                         result.stdout, re.M)
    assert schedule and schedule[1].endswith(':00:00')
    assert re.search(r'^mailer\s+emails\.send_email\s+0$', result.stdout, re.M)
    for title in ('HANDLERS', 'SCHEDULES', 'QUEUES'):
        assert title in lines
    one = run_cli('info', 'examples.users:UserAgent')
    assert one.stdout.startswith('UserAgent\n') and re.search(r'UserAgent\s+sign_up\s+every 3s', one.stdout)


def test_progress_shows_on_a_terminal_only() -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([str(BIN / 'microagent'), 'info', 'examples.settings', '--json'], cwd=ROOT,
                              env=cli_env(), stdout=subprocess.PIPE, stderr=slave, timeout=60)
        os.close(slave)
        slave = -1
        seen = b''
        while chunk := _read(master):
            seen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0 and json.loads(proc.stdout)['agents']
    assert b'[3/3] emails: reading queue lengths' in seen and seen.endswith(b'\r\x1b[K')


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other side is closed
        return b''
