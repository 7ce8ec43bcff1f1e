"""Telemetry units: without OpenTelemetry nothing changes; metrics, JSON logs, schedules, hooks, exporters."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip('opentelemetry.sdk')

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from microagent import Catalog, MicroAgent, consumer, on, periodic
from microagent.delivery import current_delivery
from microagent.launcher.slot import Slot
from microagent.telemetry import JsonFormatter, Telemetry, instrument, sdk
from microagent.telemetry.sdk import read_spans, span_record
from microagent.tools.memory import MemoryBroker, MemorySignalBus

from .helpers import Collector, eventually
from .telemetry_chain import by_name, chain

NO_OTEL = """
import sys
for name in ('opentelemetry', 'opentelemetry.trace', 'opentelemetry.sdk'):
    sys.modules[name] = None  # as if the extra were not installed
import asyncio
import microagent, microagent.cli, microagent.launcher.worker, microagent.telemetry
from microagent import Catalog
from microagent.exceptions import BackendNotInstalled
from microagent.tools.memory import MemoryBroker, MemorySignalBus
from tests.telemetry_chain import chain

async def main():
    catalog = Catalog()
    found = chain(catalog, 'x')
    bus, broker = MemorySignalBus('memory://', catalog=catalog), MemoryBroker('memory://', catalog=catalog)
    worker = found.worker(bus=bus, broker=broker)
    for agent in (found.pricer(bus=bus), worker, found.front(bus=bus, broker=broker)):
        await agent.start()
    await bus.placed_x.send('test', n=21)
    async with asyncio.timeout(10):
        while not worker.settings.get('answers'):
            await asyncio.sleep(0.01)
    print(worker.settings['answers'])
    try:
        microagent.telemetry.Telemetry()
    except BackendNotInstalled as exc:
        print('refused:', exc)
asyncio.run(main())
"""


def test_without_the_extra_nothing_changes() -> None:
    done = subprocess.run([sys.executable, '-c', NO_OTEL], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[{'Pricer.on_price': 42}]",
        'refused: tracing needs opentelemetry-api: pip install "microagent[otel]"']


def test_installed_but_not_enabled_imports_nothing() -> None:
    code = ('import sys, microagent, microagent.cli, microagent.launcher.worker, microagent.telemetry; '
            'print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == '[]', done.stderr


@pytest.fixture
def traced() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider([reader])
    telemetry = Telemetry(tracer_provider=provider, meter_provider=meters)
    yield telemetry, exporter, reader
    provider.shutdown()
    meters.shutdown()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_metrics_through_the_api(traced: Any) -> None:
    telemetry, _, reader = traced
    catalog = Catalog()
    found = chain(catalog, 'm', fails=1)
    bus = MemorySignalBus('memory://', catalog=catalog, telemetry=telemetry)
    broker = MemoryBroker('memory://', catalog=catalog, telemetry=telemetry)
    agents = [found.pricer(bus=bus), found.worker(bus=bus, broker=broker), found.front(bus=bus, broker=broker)]
    for agent in agents:
        await agent.start()
    try:
        await bus.placed_m.send('test', n=1)
        await eventually(lambda: agents[1].settings.get('answers'))
        points = _points(reader)
    finally:
        for agent in agents:
            await agent.stop(timeout=1)

    def value(name: str, **attributes: Any) -> Any:
        found = [p for p in points[name] if all(p.attributes.get(k) == v for k, v in attributes.items())]
        return found[0].value if hasattr(found[0], 'value') else found[0].count

    queue = {'messaging.destination.name': 'work_m', 'microagent.handler': 'Worker.handle'}
    assert value('microagent.messages.handled', **queue) == 1
    assert value('microagent.messages.failed', **queue) == 1
    assert value('microagent.messages.retried', **queue) == 1
    assert value('microagent.messages.dead_lettered', **queue) == 0
    assert value('microagent.handler.inflight', **queue) == 0
    assert value('microagent.handler.duration', **queue, **{'error.type': 'RuntimeError'}) == 1
    assert value('microagent.signals.sent', **{'messaging.destination.name': 'placed_m'}) == 1
    assert value('microagent.signals.received', **{'microagent.agent': 'Front'}) == 1
    assert value('microagent.receiver.handled', **{'microagent.handler': 'Pricer.on_price'}) == 1
    assert value('microagent.rpc.duration', **{'messaging.destination.name': 'price_m'}) == 1


async def test_json_lines_carry_the_handler_ids(traced: Any) -> None:
    telemetry, exporter, _ = traced
    catalog = Catalog()
    found = chain(catalog, 'j')
    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Capture()
    handler.setFormatter(JsonFormatter())

    class Logged(MicroAgent):
        @consumer(found.work)
        async def handle(self, n: int) -> None:
            self.log.warning('working on %s with redis://user:secret@host/0', n)

    bus = MemorySignalBus('memory://', catalog=catalog)
    broker = MemoryBroker('memory://', catalog=catalog, telemetry=telemetry)
    agent = Logged(bus=bus, broker=broker)
    agent.log.addHandler(handler)
    await agent.start()
    try:
        await broker.work_j.send({'n': 5}, message_id='m-5')
        await eventually(lambda: lines)
    finally:
        await agent.stop(timeout=1)
    line = lines[0]
    (process,) = [span_record(s) for s in exporter.get_finished_spans() if s.name == 'process work_j']
    assert line['msg'] == 'working on 5 with redis://user:***@host/0'
    assert (line['agent'], line['handler'], line['message_id'], line['attempt']) == ('Logged', 'handle', 'm-5', 1)
    assert (line['trace_id'], line['span_id']) == (process['trace_id'], process['span_id'])
    outside = json.loads(JsonFormatter().format(logging.LogRecord('x', 20, __file__, 1, 'idle', (), None)))
    assert 'handler' not in outside and 'trace_id' not in outside


async def test_schedules_and_hooks_get_spans(traced: Any) -> None:
    telemetry, exporter, _ = traced
    ran = Collector()

    class Ticker(MicroAgent):
        @on('pre_start')
        async def prepare(self) -> None:
            pass

        @periodic(0.01, timeout=1)
        async def tick(self) -> None:
            ran.add(1)

    agent = Ticker(telemetry=telemetry)
    await agent.start()
    await ran.wait(2)
    await agent.stop(timeout=1)
    named = by_name([span_record(s) for s in exporter.get_finished_spans()])
    ticks = named['schedule Ticker.tick']
    assert len({s['trace_id'] for s in ticks}) == len(ticks) >= 2  # each run its own trace
    assert ticks[0]['attributes']['microagent.schedule'] is True and 'microagent.tick' in ticks[0]['attributes']
    assert named['hook pre_start Ticker.prepare'][0]['kind'] == 'INTERNAL'


def test_instrument_refuses_a_started_agent(traced: Any) -> None:
    agent = MicroAgent()
    agent.started = True
    with pytest.raises(Exception, match='before it starts'):
        instrument(agent, traced[0])


def test_exporter_choices(tmp_path: Any) -> None:
    with pytest.raises(Exception, match='unknown span exporter'):
        sdk._exporter('zipkin')
    assert read_spans(str(tmp_path / 'none.jsonl')) == []


def test_console_and_file_exporters_in_a_process(tmp_path: Any) -> None:
    code = """
import asyncio
from microagent import Catalog, Queue
from microagent.telemetry import sdk
from microagent.tools.memory import MemoryBroker
telemetry = sdk.configure('console', service_name='demo')
catalog = Catalog(); Queue('q', catalog=catalog)
asyncio.run(MemoryBroker('memory://', catalog=catalog, telemetry=telemetry).q.send({'a': 1}))
sdk.shutdown()
"""
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith('trace ') and line.endswith('demo: send q (producer, ' + line.split('(producer, ')[1])
    assert 'parent ----------------' in line


def test_slot_carries_series_over_restarts() -> None:
    slot = Slot('a', 'settings', [('a', 0)])
    report = {'state': 'running', 'agents': [{'agent': 'a', 'replica': 0, 'consumers': [],
                                              'series': [['signals_sent', {'signal': 's'}, 3],
                                                         ['schedule_holder', {'handler': 'A.t'}, 1]],
                                              'rpc': {'s': {'buckets': [1] + [0] * 11, 'sum': 0.001}}}]}
    slot.apply(report)
    slot.ended('crashed')
    slot.apply(report)
    totals = slot.series_totals()
    assert totals[('a', 0, 'signals_sent', (('signal', 's'),))] == 6
    assert totals[('a', 0, 'schedule_holder', (('handler', 'A.t'),))] == 1  # a gauge is not carried
    assert slot.rpc_totals()[('a', 0, 's')]['buckets'][0] == 2


def test_read_spans_of_several_writers(tmp_path: Any) -> None:
    path = tmp_path / 'spans.jsonl'
    path.write_text(json.dumps({'name': 'a'}) + '\n\n' + json.dumps({'name': 'b'}) + '\n')
    assert [s['name'] for s in read_spans(str(path))] == ['a', 'b']


@pytest.mark.parametrize('module', ['microagent._context', 'microagent.telemetry.tracing', 'microagent.telemetry.logs',
                                    'microagent.telemetry.metrics', 'microagent.telemetry.numbers',
                                    'microagent.telemetry.semconv', 'microagent.telemetry.tree', 'benchmarks.cost'])
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    failed, tried = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert tried and not failed


def test_tree_command(tmp_path: Any, capsys: Any) -> None:
    from microagent.telemetry import tree

    path = tmp_path / 'spans.jsonl'
    path.write_text(json.dumps({'trace_id': 't', 'span_id': 'a', 'parent_id': 'gone', 'name': 'send q',
                                'service': 's', 'kind': 'PRODUCER', 'start': 0, 'end': 0, 'status': 'UNSET',
                                'attributes': {}, 'links': []}) + '\n')
    assert tree.main([str(path)]) == 0
    assert capsys.readouterr().out == 'trace t\n  send q  [s] producer 0.0 ms\n'
    assert tree.main([]) == 2


def test_launcher_refuses_a_bad_exporter_in_one_line() -> None:
    from .launcher_helpers import run_cli

    done = run_cli('run', 'examples.settings', '--otel', 'zipkin', '--duration', '1')
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "microagent: error: unknown span exporter 'zipkin' (one of otlp, console, file:PATH)"]


async def test_baggage_travels_with_the_message(traced: Any) -> None:
    from opentelemetry import baggage, context

    telemetry, _, _ = traced
    catalog = Catalog()
    found = chain(catalog, 'b')
    seen = Collector()

    class Reader(MicroAgent):
        @consumer(found.work)
        async def handle(self, n: int) -> None:
            seen.add((baggage.get_baggage('tenant'), dict(current_delivery().headers)))  # type: ignore[union-attr]

    broker = MemoryBroker('memory://', catalog=catalog, telemetry=telemetry)
    agent = Reader(broker=broker)
    await agent.start()
    token = context.attach(baggage.set_baggage('tenant', 'acme'))
    try:
        await broker.work_b.send({'n': 1})
    finally:
        context.detach(token)
    try:
        (tenant, headers), = await seen.wait(1)
    finally:
        await agent.stop(timeout=1)
    assert tenant == 'acme' and headers['baggage'] == 'tenant=acme' and headers['traceparent'].startswith('00-')


async def test_batches_and_exchanges_are_traced(traced: Any) -> None:
    from microagent import Queue

    telemetry, exporter, _ = traced
    catalog = Catalog()
    Queue(name='batch_q', catalog=catalog)
    Queue(name='push_ios', exchange='push', topics=('push.ios',), catalog=catalog)
    broker = MemoryBroker('memory://', catalog=catalog, telemetry=telemetry)
    await broker.batch_q.send_many([{'n': 1}, {'n': 2}], headers={'k': 'v'})
    await broker.push.send({'n': 3}, topic='push.ios')
    named = by_name([span_record(s) for s in exporter.get_finished_spans()])
    (batch,) = named['send batch_q']
    assert batch['attributes']['messaging.batch.message_count'] == 2
    (publish,) = named['publish push']
    assert publish['kind'] == 'PRODUCER' and publish['attributes']['messaging.message.id']
    await broker.close()
