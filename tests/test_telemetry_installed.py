"""The trace tests skip where the OpenTelemetry SDK is missing; CI must never be such a place."""
from __future__ import annotations

import importlib.util

import pytest

from .services import IN_CI


@pytest.mark.skipif(not IN_CI, reason='locally the trace tests may skip without the SDK')
def test_ci_has_the_sdk_so_the_trace_tests_run() -> None:
    assert importlib.util.find_spec('opentelemetry.sdk') is not None, 'install the dev extra (otel-export)'
