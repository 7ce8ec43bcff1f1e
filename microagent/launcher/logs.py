"""Logging set-up shared by the supervisor and its workers: plain text or one JSON object a line.

JSON lines (:class:`microagent.telemetry.logs.JsonFormatter`) name the agent, handler, message id,
attempt, trace and span of every line logged from a handler's context.

>>> configure('INFO', 'json', tag='users#0')     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .._dsn import mask_text
from ..exceptions import ConfigurationError
from ..telemetry.logs import HandlerContext, JsonFormatter

__all__ = ['FORMATS', 'JsonFormatter', 'configure']

FORMATS = ('text', 'json')
TEXT = '%(asctime)s %(levelname)-7s [%(tag)s] %(name)s: %(message)s'


class _Tag(logging.Filter):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.tag = self.tag
        return True


class _MaskingFormatter(logging.Formatter):
    """Masks DSN passwords in whatever a handler logs (they may quote a DSN)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class _LineHandler(logging.Handler):
    """Hands each formatted record to a callable (the supervisor's status display)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__()
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure(level: str, fmt: str, tag: str, write: Callable[[str], None] | None = None) -> None:
    """Send every log record to stderr (or *write*) at *level* in format *fmt* (``text`` or ``json``)."""
    if fmt not in FORMATS:
        raise ConfigurationError(f'log format must be one of {FORMATS}, got {fmt!r}')
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigurationError(f'unknown log level {level!r}')
    handler: logging.Handler = _LineHandler(write) if write else logging.StreamHandler(sys.stderr)
    handler.addFilter(_Tag(tag))
    if fmt == 'json':
        handler.addFilter(HandlerContext())
    handler.setFormatter(JsonFormatter() if fmt == 'json' else _MaskingFormatter(TEXT, '%H:%M:%S'))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
