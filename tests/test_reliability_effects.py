"""The effects fault run at smoke size on every available backend, and its verdict on made-up counts.

The full size runs with ``--slow`` (or ``python -m reliability --effects --size full``).
"""
from __future__ import annotations

import asyncio
import shutil
from collections import Counter

import pytest

from reliability.effects_report import BEGIN, END, effects_markdown, replace_section
from reliability.effects_run import EFFECT_SIZES, run_effects
from reliability.effects_verdict import judge_effects
from reliability.pgserver import PostgresServer

from .services import IN_CI
from .test_reliability import available

pytest.importorskip('asyncpg')


def effects_backends() -> list[str]:
    if not PostgresServer.available():
        if IN_CI:
            pytest.fail('CI=true: the effects run needs PostgreSQL server binaries (/usr/lib/postgresql/*/bin)')
        pytest.skip('no PostgreSQL server binaries for a private instance')
    nats = ['nats'] if shutil.which('nats-server') else []
    if IN_CI and not nats:
        pytest.fail('CI=true: nats-server is required (apt-get install nats-server)')
    return ['memory', *available(), *nats]


def failed(result: dict) -> list[dict]:
    return [row for row in result['checks'] if not row['ok']]


@pytest.mark.timeout(900)
async def test_the_effects_run_counts_every_effect_once_on_every_backend_at_smoke_size() -> None:
    # Side by side in two waves (each backend has its own PostgreSQL, broker and ports): five chains of six
    # processes at once on two cores starve the slowest broker (tansu) of its share.
    backends = effects_backends()
    waves = [[b for b in backends if b not in ('kafka', 'nats')], [b for b in backends if b in ('kafka', 'nats')]]
    results = []
    for wave in waves:
        results += await asyncio.gather(*(run_effects(b, EFFECT_SIZES['smoke']) for b in wave))
    problems = {r['backend']: (failed(r), r['summary']) for r in results if not r['ok']}
    assert not problems, problems
    for result in results:
        summary = result['summary']
        # A send whose outcome is unknown (it raised in a cut: the message may or may not be in) may have
        # its effect too, exactly once (the verdict above holds that); a confirmed one always does.
        most = summary['sent_confirmed'] + summary['sent_indeterminate']
        assert 0 < summary['sent_confirmed'] <= summary['effects_a'] <= most, summary
        assert summary['effects_b'] == summary['effects_a'], summary


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize('name', ['memory', 'redis', 'amqp', 'kafka', 'nats'])
async def test_the_effects_run_at_full_size(name: str) -> None:
    result = await run_effects(name, EFFECT_SIZES['full'])
    assert not failed(result), (failed(result), result['summary'])


def test_the_verdict_counts_lost_and_doubled_effects_and_ignores_extra_handler_runs() -> None:
    records = [{'k': 'send', 'id': mid, 'status': 'confirmed'} for mid in ('a', 'b', 'c')]
    records += [{'k': 'run_a', 'id': mid} for mid in ('a', 'a', 'b', 'c')] + [{'k': 'run_b', 'id': 'a'}]
    counts = {'a': Counter({'a': 1, 'b': 1, 'c': 2}), 'b': Counter({'a': 1, 'b': 1}), 'outbox_left': 0,
              'inbox_rows': 5}
    figures = {'kills': 2, 'pg_cuts': 3, 'broker_cuts': 4, 'pg_restarts': 1, 'drain_complete': True}
    result = judge_effects('redis', 'smoke', records, counts, figures=figures, output='', secret=None)
    by_check = {row['check']: row for row in result['checks']}
    assert by_check['effects written twice (stage 1, extra rows)']['value'] == 1
    assert by_check['outbox messages without their effect downstream (stage 2)']['value'] == 1
    assert not result['ok']
    assert result['summary']['duplicated_a'] == ['c'] and result['summary']['lost_b'] == ['c']


def test_the_report_replaces_only_its_own_section() -> None:
    result = {'backend': 'memory', 'size': 'smoke', 'ok': True, 'figures': {'kills': 1},
              'summary': {'sent_confirmed': 1, 'effects_a': 1, 'effects_b': 1, 'relay_self_kills': 0,
                          'acked_as_handled_before': 0},
              'checks': [{'check': name, 'value': 0, 'limit': '0', 'ok': True} for name in (
                  'effects written twice (stage 1, extra rows)',
                  'outbox messages whose effect happened twice (stage 2, extra rows)',
                  'confirmed messages without their effect (stage 1)',
                  'outbox messages without their effect downstream (stage 2)',
                  'handler runs beyond the effects (redeliveries, rolled-back attempts)')]}
    section = effects_markdown([result], command='python -m reliability --effects', took=1)
    document = replace_section('# Head\n\nkept\n', section)
    assert document.startswith('# Head\n\nkept\n') and BEGIN in document and END in document
    again = replace_section(document + '\ntail\n', section.replace('| yes |', '| YES |'))
    assert again.count(BEGIN) == 1 and again.endswith('\ntail\n') and '| YES |' in again
