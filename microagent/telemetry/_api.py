"""The one place that imports OpenTelemetry: nothing else in microagent does at import time.

``require()`` is called when a :class:`~microagent.telemetry.Telemetry` is
made, so a program that never makes one never imports (or pays for)
OpenTelemetry, installed or not.
"""
from __future__ import annotations

from types import ModuleType

from ..exceptions import BackendNotInstalled

__all__ = ['require', 'require_sdk']


def require() -> ModuleType:
    """``opentelemetry.trace`` after importing the API; BackendNotInstalled naming the extra if absent."""
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise BackendNotInstalled('tracing needs opentelemetry-api: pip install "microagent[otel]"') from exc
    return trace


def require_sdk() -> ModuleType:
    """``opentelemetry.sdk.trace`` (the launcher's and the tests' exporters need the SDK)."""
    try:
        from opentelemetry.sdk import trace
    except ImportError as exc:
        raise BackendNotInstalled('exporting spans needs the OpenTelemetry SDK: '
                                  'pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http') from exc
    return trace
