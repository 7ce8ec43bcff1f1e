"""Observability: OpenTelemetry traces and metrics, JSON log lines with the handler's ids.

Nothing here imports OpenTelemetry until a :class:`Telemetry` is made (the
``otel`` extra: ``pip install "microagent[otel]"``); a broker, bus or agent
without one pays a single ``None`` check per message.

Not run: installs process-wide logging or tracing, or needs a Redis server (tests/test_telemetry*.py).
>>> from microagent.telemetry import Telemetry, sdk         # doctest: +SKIP
>>> sdk.configure('console')                                # doctest: +SKIP
>>> broker = RedisBroker('redis://localhost/7', telemetry=Telemetry())   # doctest: +SKIP
"""
from .logs import HandlerContext, JsonFormatter
from .tracing import FAILED_ATTEMPT, Run, Telemetry, instrument

__all__ = ['FAILED_ATTEMPT', 'HandlerContext', 'JsonFormatter', 'Run', 'Telemetry', 'instrument']
