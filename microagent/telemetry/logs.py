"""JSON log lines that say which agent, handler, message, attempt, trace and span a line belongs to.

Plain :mod:`logging` underneath, no dependency: :class:`JsonFormatter` writes
one JSON object a line, and inside a handler's context (a consumer, a
receiver, a periodic or cron run) adds ``agent``, ``handler`` and, for queue
messages, ``message_id`` and ``attempt``; ``trace_id`` and ``span_id`` when a
span is current (only if OpenTelemetry is already imported: logging never
imports it). DSN passwords are masked (``microagent._dsn.mask_text``). The
launcher's ``--log-format json`` uses it; elsewhere::

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)

>>> import logging
>>> record = logging.LogRecord('app', logging.INFO, __file__, 1, 'hello %s', ('redis://u:pw@h/0',), None)
>>> line = json.loads(JsonFormatter().format(record)); line['msg'], line['level']
('hello redis://u:***@h/0', 'INFO')
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from .._context import current_handler
from .._dsn import mask_text
from ..delivery import current_delivery

__all__ = ['CONTEXT_FIELDS', 'HandlerContext', 'JsonFormatter', 'handler_context']

CONTEXT_FIELDS = ('agent', 'handler', 'message_id', 'attempt', 'trace_id', 'span_id')


def handler_context() -> dict[str, Any]:
    """The ids of the handler running in this context (empty outside one).

    >>> handler_context()
    {}
    """
    out: dict[str, Any] = {}
    label = current_handler()
    if label:
        agent, _, handler = label.rpartition('.')
        out.update(agent=agent, handler=handler)
        delivery = current_delivery()
        if delivery is not None:
            out.update(message_id=delivery.message_id, attempt=delivery.attempt)
    trace = sys.modules.get('opentelemetry.trace')
    if trace is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            out.update(trace_id=f'{context.trace_id:032x}', span_id=f'{context.span_id:016x}')
    return out


class HandlerContext(logging.Filter):
    """Copies :func:`handler_context` onto each record, where it is made (for handlers that format later,
    such as a ``QueueHandler``'s listener).

    Not run: installs process-wide logging or tracing, or needs a Redis server (tests/test_telemetry*.py).
    >>> logging.getLogger().handlers[0].addFilter(HandlerContext())   # doctest: +SKIP
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, 'microagent'):
            record.microagent = handler_context()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, tag (process), pid, msg, the handler's ids, exc.

    Not run: installs process-wide logging or tracing, or needs a Redis server (tests/test_telemetry*.py).
    >>> logging.getLogger().handlers[0].setFormatter(JsonFormatter())   # doctest: +SKIP
    """

    def format(self, record: logging.LogRecord) -> str:
        out = {
            'ts': dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec='milliseconds'),
            'level': record.levelname,
            'logger': record.name,
            'tag': getattr(record, 'tag', ''),
            'pid': record.process,
            'msg': record.getMessage(),
        }
        context = getattr(record, 'microagent', None)
        out.update(context if isinstance(context, dict) else handler_context())
        if record.exc_info:
            out['exc'] = self.formatException(record.exc_info)
        return mask_text(json.dumps(out, ensure_ascii=False, default=str))
