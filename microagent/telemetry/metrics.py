"""Metrics through the OpenTelemetry metrics API: what :class:`~microagent.telemetry.Telemetry` records.

Instrument names (a Prometheus exporter shows ``.`` as ``_``, counters with
``_total``), with the attributes ``microagent.handler`` (``Agent.method``)
and ``messaging.destination.name`` (queue or signal):

* ``microagent.messages.handled`` / ``.failed`` / ``.retried`` / ``.dead_lettered`` (counters)
* ``microagent.handler.duration`` (histogram, s, every run; ``error.type`` on failures)
* ``microagent.handler.inflight`` (up-down counter)
* ``microagent.signals.sent`` / ``.received`` / ``.dropped`` (counters), ``microagent.rpc.duration`` (s)
* ``microagent.schedule.runs`` / ``.missed`` (counters, ``microagent.handler`` only)

The launcher's ``/metrics`` shows the same numbers for a whole group of
processes from the workers' reports (see ``docs/observability.md``).

>>> instruments = Instruments()
>>> instruments.started('EmailAgent.send_email', 'mailer')
>>> instruments.finished('EmailAgent.send_email', 'mailer', 0.01)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import __version__
from .semconv import DESTINATION, ERROR_TYPE, HANDLER

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = ['Instruments']

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Instruments:
    """The instruments of one :class:`~microagent.telemetry.Telemetry` (global meter provider by default)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter('microagent', __version__, meter_provider)
        counter = meter.create_counter
        self._counters = {name: counter(f'microagent.{name}', unit='{message}', description=text)
                          for name, text in _COUNTERS.items()}
        self._inflight = meter.create_up_down_counter('microagent.handler.inflight', unit='{message}',
                                                      description='Messages being handled now')
        self._duration = meter.create_histogram('microagent.handler.duration', unit='s',
                                                description='Queue handler run time',
                                                explicit_bucket_boundaries_advisory=_BUCKETS)
        self._rpc = meter.create_histogram('microagent.rpc.duration', unit='s',
                                           description='RPC call time until the first response',
                                           explicit_bucket_boundaries_advisory=_BUCKETS)
        self._failing: set[tuple[str, str]] = set()

    def count(self, name: str, handler: str, destination: str, **extra: Any) -> None:
        """Add one to counter ``microagent.<name>`` (see the module docstring)."""
        self._counters[name].add(1, {HANDLER: handler, DESTINATION: destination, **extra})

    def started(self, handler: str, queue: str) -> None:
        self._inflight.add(1, {HANDLER: handler, DESTINATION: queue})

    def finished(self, handler: str, queue: str, seconds: float, error: str | None = None) -> None:
        attributes = {HANDLER: handler, DESTINATION: queue}
        self._inflight.add(-1, attributes)
        if error is None:
            self._counters['messages.handled'].add(1, attributes)
            self._duration.record(seconds, attributes)
            return
        self._counters['messages.failed'].add(1, attributes)
        self._duration.record(seconds, {**attributes, ERROR_TYPE: error})

    def settled(self, operation: str, queue: str, handler: str) -> None:
        name = 'messages.retried' if operation == 'retry' else 'messages.dead_lettered'
        self._counters[name].add(1, {HANDLER: handler, DESTINATION: queue})

    def rpc(self, signal: str, seconds: float) -> None:
        self._rpc.record(seconds, {DESTINATION: signal})


_COUNTERS = {
    'messages.handled': 'Queue messages handled successfully',
    'messages.failed': 'Queue handler runs that failed',
    'messages.retried': 'Queue messages sent back for another attempt',
    'messages.dead_lettered': 'Queue messages moved to the dead-letter queue',
    'signals.sent': 'Signals sent',
    'signals.received': 'Signals received by a receiver',
    'signals.dropped': 'Signals dropped (undecodable, or not matching the declaration)',
    'schedule.runs': 'Periodic and cron runs',
    'schedule.missed': 'Periodic and cron ticks missed',
}
