"""Tracing over every backend in one process: one trace across signal, queue and RPC; retries and dead letters."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip('opentelemetry.sdk')

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from microagent.telemetry import FAILED_ATTEMPT, Telemetry
from microagent.telemetry.sdk import span_record
from microagent.tools.memory import MemorySignalBus

from ..helpers import eventually
from ..telemetry_chain import by_name, chain, check_chain
from .conftest import Harness


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = Telemetry(tracer_provider=self.provider, metrics=False, settle_spans=True)

    def records(self) -> list[dict[str, Any]]:
        return [span_record(s) for s in self.exporter.get_finished_spans()]

    def named(self, name: str) -> list[dict[str, Any]]:
        return by_name(self.records()).get(name, [])


@pytest.fixture
def spans() -> Iterator[Spans]:
    found = Spans()
    yield found
    found.provider.shutdown()


def _bus(harness: Harness, telemetry: Telemetry) -> Any:
    try:
        bus = harness.bus()
    except pytest.skip.Exception:
        # Kafka has no signal bus: its chain runs the signal legs in memory, the queue leg on Kafka.
        bus = MemorySignalBus('memory://', catalog=harness.catalog, prefix=f'T{harness.uid}')
        harness.closables.append(bus)
    bus.telemetry = telemetry
    return bus


async def _run_chain(harness: Harness, spans: Spans, fails: int = 0) -> Any:
    found = chain(harness.catalog, harness.uid, fails=fails)
    bus = _bus(harness, spans.telemetry)
    broker = harness.broker(telemetry=spans.telemetry)
    worker = found.worker(bus=bus, broker=broker)
    for agent in (found.pricer(bus=bus), worker, found.front(bus=bus, broker=broker)):
        await harness.start(agent)
    tracer = spans.provider.get_tracer('test')
    with tracer.start_as_current_span('request'):
        await getattr(bus, found.placed.name).send('test', n=21)
    await eventually(lambda: worker.settings.get('answers'), timeout=harness.wait(20))
    await eventually(lambda: spans.named(f'process work_{harness.uid}') and spans.named(f'ack work_{harness.uid}'),
                     timeout=harness.wait(10))
    return worker


async def test_one_trace_across_signal_queue_and_rpc(harness: Harness, spans: Spans) -> None:
    worker = await _run_chain(harness, spans)
    assert worker.settings['answers'] == [{'Pricer.on_price': 42}]
    named = check_chain(spans.records(), harness.uid)
    process = named[f'process work_{harness.uid}'][0]
    attributes = process['attributes']
    assert attributes['messaging.destination.name'] == f'work_{harness.uid}'
    assert attributes['messaging.operation.type'] == 'process'
    assert attributes['microagent.attempt'] == 1
    assert attributes['messaging.message.id'] == named[f'send work_{harness.uid}'][0]['attributes'][
        'messaging.message.id']
    assert process['kind'] == 'CONSUMER'
    assert named[f'send work_{harness.uid}'][0]['kind'] == 'PRODUCER'
    assert named[f'ack work_{harness.uid}'][0]['parent_id'] == process['span_id']
    call = named[f'call price_{harness.uid}'][0]
    responder = named[f'process price_{harness.uid}'][0]
    assert call['kind'] == 'CLIENT' and responder['attributes']['microagent.rpc'] is True
    assert [link['span_id'] for link in call['links']] == [responder['span_id']]


async def test_a_retry_keeps_the_trace_and_links_the_failed_attempt(harness: Harness, spans: Spans) -> None:
    await _run_chain(harness, spans, fails=1)
    named = check_chain(spans.records(), harness.uid)
    first, second = named[f'process work_{harness.uid}'][:2]
    assert (first['attributes']['microagent.attempt'], second['attributes']['microagent.attempt']) == (1, 2)
    assert first['status'] == 'ERROR' and first['attributes']['error.type'] == 'RuntimeError'
    assert second['status'] == 'UNSET'
    assert first['parent_id'] == second['parent_id']  # both children of the send
    assert [link['span_id'] for link in second['links']] == [first['span_id']]
    retry = named[f'retry work_{harness.uid}'][0]
    assert retry['parent_id'] == first['span_id'] and retry['attributes']['messaging.operation.type'] == 'settle'


async def test_a_dead_letter_keeps_the_trace(harness: Harness, spans: Spans) -> None:
    found = chain(harness.catalog, harness.uid, fails=5)  # max_attempts=1: the first failure dead-letters
    broker = harness.broker(telemetry=spans.telemetry)
    await harness.start(found.worker(bus=_bus(harness, spans.telemetry), broker=broker))
    tracer = spans.provider.get_tracer('test')
    with tracer.start_as_current_span('request'):
        await getattr(broker, found.work.name).send({'n': 1}, headers={'tenant': 'acme'})
    letters = await eventually(lambda: broker.dead_letters(found.work.name), timeout=harness.wait(20))
    named = by_name(spans.records())
    (process,) = named[f'process work_{harness.uid}']
    headers = letters[0].headers
    assert headers['tenant'] == 'acme'
    assert headers['traceparent'].split('-')[1] == process['trace_id'] == named['request'][0]['trace_id']
    assert headers[FAILED_ATTEMPT].split('-')[2] == process['span_id']
    await eventually(lambda: spans.named(f'dead_letter work_{harness.uid}'), timeout=harness.wait(10))
