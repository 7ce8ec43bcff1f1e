"""Metrics through the OpenTelemetry metrics API: what :class:`~microagent.telemetry.Telemetry` exports.

Counters and gauges are observed from the agents' own numbers
(:mod:`microagent.telemetry.numbers`, the same the launcher reports), so they
cost nothing per message; the two histograms are recorded as runs end.
Names (a Prometheus exporter writes ``.`` as ``_`` and adds ``_total`` to
counters, which gives the launcher's ``/metrics`` names):

* ``microagent.messages.handled`` / ``.failed`` / ``.retried`` / ``.dead_lettered``
  and ``microagent.handler.inflight``: ``microagent.agent``, ``microagent.handler``, ``messaging.destination.name``
* ``microagent.handler.duration`` (histogram, s; ``error.type`` on failed runs)
* ``microagent.signals.sent`` / ``.received`` / ``.dropped`` (``messaging.destination.name``),
  ``microagent.receiver.handled`` / ``.failed``, ``microagent.rpc.duration`` (histogram, s)
* ``microagent.schedule.runs`` / ``.failed`` / ``.missed``, ``microagent.schedule.holder`` (gauge)

>>> instruments = Instruments()
>>> instruments.finished('EmailAgent.send_email', 'mailer', 0.01)
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import __version__
from .numbers import CONSUMER_COUNTS, COUNTS, GAUGES, consumer_numbers, series
from .semconv import DESTINATION, ERROR_TYPE, HANDLER

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

    from ..agent import MicroAgent

__all__ = ['Instruments', 'otel_name']

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = {'signal': DESTINATION, 'handler': HANDLER, 'queue': DESTINATION,
           'partition': 'messaging.destination.partition.id'}


def otel_name(name: str) -> str:
    """The instrument name of a :mod:`~microagent.telemetry.numbers` series.

    >>> otel_name('signals_sent'), otel_name('schedule_holder')
    ('microagent.signals.sent', 'microagent.schedule.holder')
    """
    group, _, what = name.partition('_')
    return f'microagent.{group}.{what}'


class Instruments:
    """The instruments of one :class:`~microagent.telemetry.Telemetry` (global meter provider by default)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics

        self._observation = metrics.Observation
        self._agents: weakref.WeakSet[MicroAgent] = weakref.WeakSet()
        meter = metrics.get_meter('microagent', __version__, meter_provider)
        for count in CONSUMER_COUNTS:
            meter.create_observable_counter(f'microagent.messages.{count}', [self._consumers(count)],
                                            unit='{message}', description=f'Queue messages {count}')
        meter.create_observable_up_down_counter('microagent.handler.inflight', [self._consumers('inflight')],
                                                unit='{message}', description='Messages being handled now')
        for name, text in COUNTS.items():
            meter.create_observable_counter(otel_name(name), [self._series(name)], description=text)
        for name, text in GAUGES.items():
            meter.create_observable_gauge(otel_name(name), [self._series(name)], description=text)
        self._duration = meter.create_histogram('microagent.handler.duration', unit='s',
                                                description='Queue handler run time',
                                                explicit_bucket_boundaries_advisory=_BUCKETS)
        self._rpc = meter.create_histogram('microagent.rpc.duration', unit='s',
                                           description='RPC call time until the first response',
                                           explicit_bucket_boundaries_advisory=_BUCKETS)

    def watch(self, agent: MicroAgent) -> None:
        """Observe *agent*'s numbers (held weakly: a dropped agent is forgotten)."""
        self._agents.add(agent)

    def _consumers(self, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for agent in list(self._agents):
                for found in consumer_numbers(agent):
                    yield self._observation(found[key], {'microagent.agent': type(agent).__name__,
                                                         HANDLER: found['handler'], DESTINATION: found['queue']})
        return observe

    def _series(self, wanted: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for agent in list(self._agents):
                for name, labels, value in series(agent):
                    if name == wanted:
                        attributes: dict[str, Any] = {_LABELS.get(k, k): v for k, v in labels.items()}
                        yield self._observation(value, {'microagent.agent': type(agent).__name__, **attributes})
        return observe

    def finished(self, handler: str, queue: str, seconds: float, error: str | None = None) -> None:
        """A queue handler run ended (``error``: its error type when it failed)."""
        attributes = {HANDLER: handler, DESTINATION: queue}
        if error is not None:
            attributes[ERROR_TYPE] = error
        self._duration.record(seconds, attributes)

    def rpc(self, signal: str, seconds: float) -> None:
        """An RPC call got its first response after *seconds*."""
        self._rpc.record(seconds, {DESTINATION: signal})
