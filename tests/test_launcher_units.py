"""Launcher pieces in process: settings validation, slots, worker reports and the metrics they become."""
from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from microagent.exceptions import ConfigurationError
from microagent.launcher.metrics import GroupCollector
from microagent.launcher.report import BUCKETS, Histogram, Reporter
from microagent.launcher.settings import load_settings, module_name
from microagent.launcher.slot import Slot
from microagent.launcher.supervisor import make_slots

from .helpers import eventually


@pytest.fixture
def settings_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType('tests.launcher_settings_dynamic')
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_settings_are_built_and_memory_groups_share_a_process() -> None:
    group = load_settings('tests/launcher_settings_units.py')
    assert group.module == 'tests.launcher_settings_units' and group.in_memory
    assert [(name, entry.replicas) for name, entry in group.agents.items()] == [('emails', 3), ('comments', 1)]
    agent = group.build_agent('emails')
    assert agent.broker.max_attempts == 2 and agent.bus is None
    assert agent.broker is not group.build_agent('emails').broker  # every instance has its own
    slots = make_slots([group])
    assert len(slots) == 1 and len(slots[0].instances) == 4
    assert module_name('tests.launcher_settings_units') == 'tests.launcher_settings_units'


@pytest.mark.parametrize(('content', 'needle'), [
    ({}, 'AGENT must be a non-empty dict'),
    ({'AGENT': {'a': 'x'}}, "AGENT['a']: must be a dict with a \"backend\" key"),
    ({'AGENT': {'a': {'backend': 'examples.emails.EmailAgent', 'broker': 'default', 'colour': 1}},
      'BROKER': {'default': {'backend': 'microagent.tools.memory.MemoryBroker'}}}, "unknown keys ['colour']"),
    ({'AGENT': {'a': {'backend': 'examples.emails.EmailAgent'}}}, 'has consumers, so "broker" is required'),
    ({'AGENT': {'a': {'backend': 'examples.comments.CommentAgent'}}}, 'has receivers, so "bus" is required'),
    ({'AGENT': {'a': {'backend': 'examples.emails.Email'}}}, 'is not a MicroAgent subclass'),
    ({'AGENT': {'a': {'backend': 'tests.launcher_agents.Ticker', 'replicas': 0}}}, '"replicas" must be a positive'),
    ({'AGENT': {'a': {'backend': 'tests.launcher_agents.Ticker', 'settings': []}}}, '"settings" must be a dict'),
    ({'AGENT': {'a': {'backend': 'Ticker'}}}, 'must be a dotted path'),
    ({'BUS': {'default': {'backend': 'microagent.tools.memory.MemoryBroker'}},
      'AGENT': {'a': {'backend': 'tests.launcher_agents.Ticker'}}}, "BUS['default']: 'microagent.tools.memory"),
    ({'BUS': {'default': {'backend': 'microagent.tools.memory.MemorySignalBus', 'colour': 1}},
      'AGENT': {'a': {'backend': 'tests.launcher_agents.Ticker'}}}, "BUS['default']: bad arguments"),
    ({'BROKER': [], 'AGENT': {'a': {'backend': 'tests.launcher_agents.Ticker'}}}, 'BROKER must be a dict'),
])
def test_bad_settings_name_module_and_key(settings_module: types.ModuleType, content: dict[str, Any],
                                          needle: str) -> None:
    for key, value in content.items():
        setattr(settings_module, key, value)
    with pytest.raises(ConfigurationError) as err:
        load_settings(settings_module.__name__)
    assert "settings 'tests.launcher_settings_dynamic'" in str(err.value) and needle in str(err.value)


def test_settings_errors_never_show_passwords(settings_module: types.ModuleType) -> None:
    settings_module.BROKER = {'default': {'backend': 'microagent.tools.memory.MemoryBroker',
                                          'dsn': 'amqp://user:s3cret@host/', 'bogus': 1}}
    settings_module.AGENT = {'a': {'backend': 'tests.launcher_agents.Ticker'}}
    with pytest.raises(ConfigurationError) as err:
        load_settings(settings_module.__name__)
    assert 's3cret' not in str(err.value)


def report(handled: int, failed: int = 0, buckets: list[int] | None = None) -> dict[str, Any]:
    consumer = {'queue': 'mailer', 'handled': handled, 'failed': failed, 'retried': failed, 'dead_lettered': 0,
                'buckets': buckets or [handled] + [0] * (len(BUCKETS) - 1), 'sum': handled * 0.001, 'length': 4}
    return {'state': 'running', 'pid': 1, 'agents': [{'agent': 'emails', 'replica': 0, 'ready': True,
                                                      'consumers': [consumer]}]}


def test_slot_counters_survive_restarts() -> None:
    slot = Slot('emails', 'x', [('emails', 0)])
    slot.apply(report(5, failed=1))
    assert slot.instance_totals('emails', 0) == {'handled': 5, 'failed': 1, 'retried': 1, 'dead_lettered': 0}
    slot.ended('crashed')
    assert slot.totals()[('emails', 0, 'mailer')]['length'] is None
    slot.apply(report(2))
    totals = slot.totals()[('emails', 0, 'mailer')]
    assert totals['handled'] == 7 and totals['buckets'][0] == 7 and totals['length'] == 4


def test_metrics_text(monkeypatch: pytest.MonkeyPatch) -> None:
    prometheus = pytest.importorskip('prometheus_client')
    slot = Slot('emails', 'x', [('emails', 0)])
    slot.apply(report(3, buckets=[1, 2] + [0] * (len(BUCKETS) - 2)))
    supervisor = types.SimpleNamespace(slots=[slot])
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(GroupCollector(supervisor))  # type: ignore[arg-type]
    text = prometheus.generate_latest(registry).decode()
    labels = 'agent="emails",queue="mailer",replica="0"'
    for line in (f'microagent_messages_handled_total{{{labels}}} 3.0',
                 f'microagent_messages_dead_lettered_total{{{labels}}} 0.0',
                 'microagent_handler_latency_seconds_bucket{agent="emails",le="0.005",queue="mailer",replica="0"} 1.0',
                 'microagent_handler_latency_seconds_bucket{agent="emails",le="0.01",queue="mailer",replica="0"} 3.0',
                 'microagent_handler_latency_seconds_bucket{agent="emails",le="+Inf",queue="mailer",replica="0"} 3.0',
                 f'microagent_handler_latency_seconds_count{{{labels}}} 3.0',
                 f'microagent_queue_length{{{labels}}} 4.0',
                 'microagent_agent_up{agent="emails",replica="0"} 0.0'):
        assert line in text, text


async def test_reporter_reads_consumer_stats_and_drains_latencies() -> None:
    group = load_settings('tests.launcher_settings_units')
    agent = group.build_agent('emails')
    reporter = Reporter(None, [('emails', 0, agent)])
    await agent.start()
    try:
        await agent.broker.mailer.send({'user_id': 1, 'address': 'a@b.c', 'template': 'welcome'})
        runner = agent.broker.runner('mailer')
        await eventually(lambda: runner.stats.handled >= 1)
        entry = (await reporter._agent(0, 'emails', 0, agent))['consumers'][0]
        assert entry['handled'] == 1 and sum(entry['buckets']) == 1 and entry['length'] == 0
        assert runner.stats.latencies == []
    finally:
        await agent.stop(timeout=1)


def test_histogram_buckets() -> None:
    hist = Histogram()
    hist.observe([0.005, 0.0051, 99.0])
    assert hist.buckets[0] == 1 and hist.buckets[1] == 1 and hist.buckets[-1] == 1 and hist.count == 3


async def test_reported_readiness_follows_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A started agent is reported ready only while its consumers read (what /readyz and the gauge show)."""
    group = load_settings('tests.launcher_settings_units')
    agent = group.build_agent('emails')
    read_fd, write_fd = os.pipe()
    reporter = Reporter(write_fd, [('emails', 0, agent)])

    async def reported() -> bool:
        await reporter.send('running')
        return bool(json.loads(os.read(read_fd, 1 << 20).splitlines()[-1])['agents'][0]['ready'])
    try:
        await agent.start()
        reporter.ready[0] = True  # what the worker sets once start() returned
        assert await reported()
        monkeypatch.setattr(agent.broker, 'consuming', lambda name: False)  # its connection is lost
        assert not await reported()
        monkeypatch.undo()
        assert await reported()
    finally:
        await agent.stop(timeout=1)
        os.close(read_fd)
        os.close(write_fd)
