"""The ``microagent`` and ``marun`` commands, run as real subprocesses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import microagent
from microagent.cli import parse_pairs
from microagent.exceptions import ConfigurationError

from .launcher_helpers import cli_env, run_cli


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
    result = run_cli('info', 'examples.users:UserAgent')
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info['name'] == 'UserAgent'
    assert info['hooks'] == {'pre_start': ['setup'], 'post_start': ['announce'], 'pre_stop': ['goodbye'],
                             'server': ['seed']}
    assert [c['queue'] for c in info['consumers']] == ['email_sent']
    assert info['schedules'][0]['period'] == 3.0 and 'next_run' in info['schedules'][0]
    comments = json.loads(run_cli('info', 'examples.comments:CommentAgent').stdout)
    assert {r['signal'] for r in comments['receivers']} == {'user_created', 'rpc_comments_count'}
    assert comments['schedules'][0]['cron'] == '*/10 * * * * *'


def test_info_of_a_settings_module() -> None:
    result = run_cli('info', 'examples/settings.py')
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
