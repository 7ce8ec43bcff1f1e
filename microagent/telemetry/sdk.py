"""Setting up the OpenTelemetry SDK for a process: what ``marun --otel`` and the tests use.

``configure(exporter)`` installs OpenTelemetry's global tracer provider (and,
for ``otlp``, a meter provider) with a batch span processor, and returns a
:class:`~microagent.telemetry.Telemetry` to give to brokers, buses and agents:

* ``otlp``: OTLP over HTTP/protobuf, configured by the standard ``OTEL_*``
  environment variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
  ``OTEL_RESOURCE_ATTRIBUTES``...); needs
  ``opentelemetry-exporter-otlp-proto-http``.
* ``console``: one line per span on stdout as it ends (the demo's
  ``--otel console``; spans are written at once, not batched).
* ``file:PATH``: one JSON object per span appended to *PATH* (tests, and to
  read a flow after the fact with :func:`read_spans`).

Needs the SDK (``pip install opentelemetry-sdk``); the library itself needs
only the API. Call :func:`shutdown` before the process exits to flush.

Not run: installs process-wide logging or tracing, or needs a Redis server (tests/test_telemetry*.py).
>>> telemetry = configure('file:/tmp/spans.jsonl', service_name='emails')   # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ..exceptions import ConfigurationError
from ._api import require_sdk
from .tracing import Telemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ['EXPORTERS', 'check', 'configure', 'read_spans', 'shutdown', 'span_record']

EXPORTERS = ('otlp', 'console', 'file:PATH')


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as a plain dict (ids in hex), as :func:`read_spans` returns them."""
    context = span.get_span_context()
    return {
        'name': span.name,
        'kind': span.kind.name,
        'trace_id': f'{context.trace_id:032x}' if context else '',
        'span_id': f'{context.span_id:016x}' if context else '',
        'parent_id': f'{span.parent.span_id:016x}' if span.parent else None,
        'service': span.resource.attributes.get('service.name', ''),
        'pid': os.getpid(),
        'start': span.start_time,
        'end': span.end_time,
        'status': span.status.status_code.name,
        'attributes': dict(span.attributes or {}),
        'links': [{'trace_id': f'{link.context.trace_id:032x}', 'span_id': f'{link.context.span_id:016x}',
                   'attributes': dict(link.attributes or {})} for link in span.links],
    }


def read_spans(path: str) -> list[dict[str, Any]]:
    """Every span a ``file:PATH`` exporter wrote (any number of processes may append to one file)."""
    try:
        with open(path, encoding='utf-8') as stream:
            return [json.loads(line) for line in stream if line.strip()]
    except FileNotFoundError:
        return []


def _line(span: ReadableSpan) -> str:
    record = span_record(span)
    parent = record['parent_id'] or '-' * 16
    millis = ((record['end'] or 0) - (record['start'] or 0)) / 1e6
    return (f"trace {record['trace_id']} span {record['span_id']} parent {parent} "
            f"{record['service']}: {record['name']} ({record['kind'].lower()}, {millis:.1f} ms, "
            f"{record['status'].lower()})\n")


def _exporter(spec: str) -> Any:
    require_sdk()
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

    if spec == 'console':
        return ConsoleSpanExporter(out=sys.stdout, formatter=_line)
    if spec.startswith('file:') and len(spec) > 5:
        path = spec[5:]

        class FileSpanExporter(SpanExporter):
            """Appends one JSON line per span; O_APPEND keeps lines of several processes whole."""

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                data = ''.join(json.dumps(span_record(s), default=str) + '\n' for s in spans).encode()
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                return SpanExportResult.SUCCESS

        return FileSpanExporter()
    if spec == 'otlp':
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigurationError('--otel otlp needs opentelemetry-exporter-otlp-proto-http') from exc
        return OTLPSpanExporter()  # endpoint, headers, timeout... from the OTEL_* environment
    raise ConfigurationError(f'unknown span exporter {spec!r} (one of {", ".join(EXPORTERS)})')


def check(exporter: str) -> None:
    """Raise (ConfigurationError, BackendNotInstalled) if :func:`configure` could not set up *exporter*.

    The launcher calls it before starting any worker, so a typo is one line, not a crash per process.
    """
    _exporter(exporter)
    if exporter == 'otlp':
        try:
            import opentelemetry.exporter.otlp.proto.http.metric_exporter  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError('--otel otlp needs opentelemetry-exporter-otlp-proto-http') from exc


def _meter_provider(spec: str, resource: Any) -> Any:
    if spec != 'otlp':
        return None
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    provider = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter())], resource=resource)
    metrics.set_meter_provider(provider)
    return provider


def configure(exporter: str = 'otlp', *, service_name: str | None = None, batch: bool = True,
              settle_spans: bool = False) -> Telemetry:
    """Install global providers exporting to *exporter* (see the module docstring); a Telemetry using them.

    ``service_name`` is used when ``OTEL_SERVICE_NAME`` is not set.
    ``batch=False`` exports each span as it ends (slow; for short scripts).
    """
    sdk_trace = require_sdk()
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    span_exporter = _exporter(exporter)
    attributes = {} if os.environ.get('OTEL_SERVICE_NAME') else {'service.name': service_name or 'microagent'}
    resource = Resource.create(attributes)
    provider = sdk_trace.TracerProvider(resource=resource)
    processor: Callable[[Any], Any] = BatchSpanProcessor if batch and exporter != 'console' else SimpleSpanProcessor
    provider.add_span_processor(processor(span_exporter))
    trace.set_tracer_provider(provider)  # OpenTelemetry's documented global, read back by shutdown()
    meters = _meter_provider(exporter, resource)
    return Telemetry(tracer_provider=provider, meter_provider=meters, settle_spans=settle_spans,
                     metrics=meters is not None)


def shutdown(stream: TextIO | None = None) -> None:
    """Flush and stop OpenTelemetry's global providers (spans still in the batch are exported)."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        stop = getattr(provider, 'shutdown', None)  # the API's no-op providers have none
        if stop is None:
            continue
        try:
            stop()
        except Exception as exc:  # noqa: BLE001 - an exporter failing at exit must not hide the exit code
            print(f'telemetry: flushing failed: {type(exc).__name__}', file=stream or sys.stderr)
