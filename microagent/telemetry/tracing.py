"""Tracing: the :class:`Telemetry` switch and the spans of sends, handlers, settles, RPC, schedules, hooks.

A broker, a bus or an agent given ``telemetry=Telemetry()`` traces what goes
through it; without one nothing here runs and OpenTelemetry is never imported.
W3C trace context (``traceparent``, ``tracestate``, ``baggage``, or whatever
``OTEL_PROPAGATORS`` names) travels in the message headers of the broker
contract and in the ``h`` envelope of signals and RPC responses, so every
backend that carries headers carries the trace.

Not run: installs process-wide logging or tracing, or needs a Redis server (tests/test_telemetry*.py).
>>> from microagent.telemetry import Telemetry          # doctest: +SKIP
>>> broker = RedisBroker('redis://localhost/7', telemetry=Telemetry())   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..exceptions import ConfigurationError
from ._api import require
from .metrics import Instruments
from .semconv import (
    ATTEMPT,
    BATCH_COUNT,
    CONSUMER_GROUP,
    DESTINATION,
    ERROR_TYPE,
    HANDLER,
    MESSAGE_ID,
    OPERATION_NAME,
    OPERATION_TYPE,
    RPC,
    SCHEDULE,
    SYSTEM,
    TICK,
    system_of,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Link, Span, SpanContext, TracerProvider

    from ..agent import MicroAgent
    from ..delivery import Delivery

__all__ = ['FAILED_ATTEMPT', 'Run', 'Telemetry', 'instrument']

_REMEMBERED = 10_000

# The header a retried or dead-lettered message carries: the traceparent of its failed attempt's
# process span, so the next attempt (or whoever reads the dead letter) links to it.
FAILED_ATTEMPT = 'microagent-failed-attempt'


class Run:
    """One handler run being traced: ``error`` is set (an error type) when it failed."""

    __slots__ = ('error',)

    def __init__(self) -> None:
        self.error: str | None = None


class Telemetry:
    """Traces and measures the brokers, buses and agents it is given to.

    ``tracer_provider`` and ``meter_provider`` default to OpenTelemetry's
    global ones (set them with :func:`microagent.telemetry.sdk.configure`, or
    your own SDK set-up). Retries, dead letters and releases get a settle
    span; ``settle_spans=True`` gives every ack one too (a third span per
    message: off by default for its cost). ``metrics=False`` records no
    metrics through OpenTelemetry.

    >>> telemetry = Telemetry()
    >>> with telemetry.producing('memory://', 'mailer', 'm-1') as headers:
    ...     sorted(headers)
    []
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None,
                 meter_provider: MeterProvider | None = None, settle_spans: bool = False,
                 metrics: bool = True) -> None:
        trace = require()
        from opentelemetry import context, propagate
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer('microagent', __version__, tracer_provider)
        self._propagator = propagate.get_global_textmap()
        self._traceparent = TraceContextTextMapPropagator()
        self._kinds = trace.SpanKind
        self._systems: dict[str, str] = {}
        # Failed runs by message id, for retries whose copy cannot carry the link (bounded, oldest out).
        self._failed_runs: dict[str, SpanContext] = {}
        self.settle_spans = settle_spans
        self.instruments = Instruments(meter_provider) if metrics else None

    def __repr__(self) -> str:
        return f'<Telemetry settle_spans={self.settle_spans} metrics={self.instruments is not None}>'

    def _system(self, dsn: str) -> str:
        system = self._systems.get(dsn)
        if system is None:
            system = self._systems[dsn] = system_of(dsn)
        return system

    # -- context in headers ---------------------------------------------------------

    def carrier(self) -> dict[str, str]:
        """The current trace context as headers (``traceparent``...; empty outside any span)."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    def extract(self, headers: Mapping[str, str] | None) -> Context | None:
        """The trace context *headers* carry (None: none, the span starts a trace)."""
        return self._propagator.extract(headers) if headers else None

    def _consuming(self, name: str, headers: Mapping[str, str] | None, attributes: dict[str, Any],
                   links: Sequence[Link] = ()) -> contextlib.AbstractContextManager[Span]:
        """A current CONSUMER span in the context *headers* carry (the sender's span and baggage; without
        one, a new trace)."""
        return self._current(name, self._kinds.CONSUMER, attributes, self._propagator.extract(headers or {}), links)

    @contextlib.contextmanager
    def _current(self, name: str, kind: Any, attributes: dict[str, Any], parent: Context | None = None,
                 links: Sequence[Link] = ()) -> Iterator[Span]:
        """A span made current in *parent* (default: the current context) until the block ends; an
        exception marks it failed. One attach and one generator, where ``start_as_current_span`` has
        more: this runs for every message sent and handled."""
        span = self._tracer.start_span(name, parent, kind=kind, attributes=attributes, links=links)
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f'{type(exc).__name__}: {exc}'))
            raise
        finally:
            self._context.detach(token)
            span.end()

    def _link(self, delivery: Delivery) -> list[Link]:
        """The link of a retry to its failed run: from the headers, or remembered (see :meth:`failed`)."""
        if delivery.attempt < 2:
            return []
        context = self._failed_runs.pop(delivery.message_id, None)
        parent = delivery.headers.get(FAILED_ATTEMPT)
        if parent:
            carried = self._trace.get_current_span(self._traceparent.extract({'traceparent': parent}))
            context = carried.get_span_context()
        if context is None or not context.is_valid:
            return []
        return [self._trace.Link(context, {'microagent.link': 'failed_attempt'})]

    # -- producers ---------------------------------------------------------------------

    @contextlib.contextmanager
    def producing(self, dsn: str, destination: str, message_id: str | None = None, *, count: int = 1,
                  operation: str = 'send') -> Iterator[dict[str, str]]:
        """A PRODUCER span around a send; yields the headers that carry it (merge them into the message's)."""
        attributes: dict[str, Any] = {SYSTEM: self._system(dsn), DESTINATION: destination,
                                      OPERATION_TYPE: 'send', OPERATION_NAME: operation}
        if message_id:
            attributes[MESSAGE_ID] = message_id
        if count != 1:
            attributes[BATCH_COUNT] = count
        with self._current(f'{operation} {destination}', self._kinds.PRODUCER, attributes):
            yield self.carrier()

    @contextlib.contextmanager
    def calling(self, dsn: str, signal: str) -> Iterator[Span]:
        """The CLIENT span of an RPC call (``bus.<signal>.call`` or ``waiter``), until its last response."""
        attributes = {SYSTEM: self._system(dsn), DESTINATION: signal, OPERATION_TYPE: 'send',
                      OPERATION_NAME: 'call', RPC: True}
        with self._tracer.start_as_current_span(f'call {signal}', kind=self._kinds.CLIENT,
                                                attributes=attributes) as span:
            yield span

    def responded(self, span: Span, headers: Mapping[str, str] | None) -> None:
        """An RPC response arrived: an event on the call's span, linked to the responder's span."""
        context = self.extract(headers)
        responder = self._trace.get_current_span(context).get_span_context() if context is not None else None
        if responder is not None and responder.is_valid:
            span.add_link(responder, {'microagent.link': 'response'})
        span.add_event('response')

    # -- consumers ---------------------------------------------------------------------

    @contextlib.contextmanager
    def processing(self, dsn: str, destination: str, handler: str, delivery: Delivery) -> Iterator[Run]:
        """The CONSUMER span of one handler run, child of the sender's span (a retry links to its failed run).

        Set ``run.error`` (an error type) when the run failed: it goes to the metrics.
        """
        headers = delivery.headers
        attributes = {SYSTEM: self._system(dsn), DESTINATION: destination, CONSUMER_GROUP: destination,
                      OPERATION_TYPE: 'process', OPERATION_NAME: 'process', MESSAGE_ID: delivery.message_id,
                      ATTEMPT: delivery.attempt, HANDLER: handler}
        instruments = self.instruments
        run = Run()
        started = time.perf_counter()
        try:
            with self._consuming(f'process {destination}', headers, attributes, self._link(delivery)):
                yield run
        finally:
            if instruments is not None:
                instruments.finished(handler, destination, time.perf_counter() - started, run.error)

    @contextlib.contextmanager
    def receiving(self, dsn: str, signal: str, handler: str, headers: Any, rpc: bool) -> Iterator[Span]:
        """The CONSUMER span of a receiver run, child of the signal's send (or the RPC call)."""
        attributes = {SYSTEM: self._system(dsn), DESTINATION: signal, OPERATION_TYPE: 'process',
                      OPERATION_NAME: 'process', HANDLER: handler, RPC: rpc}
        with self._consuming(f'process {signal}', headers if isinstance(headers, dict) else None,
                             attributes) as span:
            yield span

    def failed(self, exc: BaseException | str, delivery: Delivery | None = None) -> None:
        """Mark the current span failed; a *delivery* about to be retried or dead-lettered gets the link to it.

        The link goes in the headers (``microagent-failed-attempt``), for backends whose retry writes a new
        copy, and is remembered here by message id, for backends that redeliver the stored message itself
        (NATS naks with a delay): a retry this process takes links to its failed run either way.
        """
        span = self._trace.get_current_span()
        if isinstance(exc, BaseException):
            span.record_exception(exc)
            span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            description = f'{type(exc).__name__}: {exc}'
        else:
            span.set_attribute(ERROR_TYPE, 'rejected')
            description = exc
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description[:500]))
        context = span.get_span_context()
        if delivery is None or not context.is_valid:
            return
        delivery.headers = {**delivery.headers, FAILED_ATTEMPT: f'00-{context.trace_id:032x}-'
                                                                f'{context.span_id:016x}-{int(context.trace_flags):02x}'}
        self._failed_runs[delivery.message_id] = context
        if len(self._failed_runs) > _REMEMBERED:
            self._failed_runs.pop(next(iter(self._failed_runs)))

    @contextlib.contextmanager
    def settling(self, dsn: str, destination: str, handler: str, delivery: Delivery,
                 operation: str) -> Iterator[None]:
        """A span around an ack, retry, dead letter or release (acks only with ``settle_spans``)."""
        if operation == 'ack' and not self.settle_spans:
            yield
            return
        attributes = {SYSTEM: self._system(dsn), DESTINATION: destination, OPERATION_TYPE: 'settle',
                      OPERATION_NAME: operation, MESSAGE_ID: delivery.message_id, ATTEMPT: delivery.attempt}
        with self._tracer.start_as_current_span(f'{operation} {destination}', kind=self._kinds.CLIENT,
                                                attributes=attributes):
            yield

    def rpc_done(self, signal: str, seconds: float) -> None:
        """An RPC call got its first response (the ``microagent.rpc.duration`` histogram)."""
        if self.instruments is not None:
            self.instruments.rpc(signal, seconds)

    def watch(self, agent: MicroAgent) -> None:
        """Export *agent*'s counters and gauges through the metrics API (see :mod:`.metrics`)."""
        if self.instruments is not None:
            self.instruments.watch(agent)

    # -- schedules and hooks -----------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, name: str, kind: str, tick: float | None = None) -> Iterator[Span]:
        """An INTERNAL span of a periodic or cron run (``kind='schedule'``) or a hook (``'hook'``): a new trace."""
        attributes: dict[str, Any] = {HANDLER: name, SCHEDULE: kind == 'schedule'}
        if tick is not None:
            attributes[TICK] = tick
        # A schedule's run starts a trace of its own; a hook is part of whatever called start() or stop().
        context = self._trace.set_span_in_context(self._trace.INVALID_SPAN) if kind == 'schedule' else None
        with self._tracer.start_as_current_span(f'{kind} {name}', context, kind=self._kinds.INTERNAL,
                                                attributes=attributes) as span:
            yield span


def instrument(agent: MicroAgent, telemetry: Telemetry | None) -> None:
    """Give *telemetry* to an agent not started yet, its bus, broker and schedules (None: turn it off).

    What the launcher's ``--otel`` does to every agent it builds.

    Not run: installs process-wide logging or tracing, or needs a Redis server (tests/test_telemetry*.py).
    >>> instrument(agent, Telemetry())   # doctest: +SKIP
    """
    if agent.started:
        raise ConfigurationError(f'{type(agent).__name__}: instrument an agent before it starts')
    agent.telemetry = telemetry
    if telemetry is not None:
        telemetry.watch(agent)
    for backend in (agent.bus, agent.broker):
        if backend is not None:
            backend.telemetry = telemetry
    for task in agent.schedules:
        task.telemetry = telemetry
