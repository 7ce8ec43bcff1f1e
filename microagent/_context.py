"""Which handler is running: a context variable the runner, the bus, schedules and hooks set.

Read by the JSON log lines (``microagent.telemetry.logs``) to name the agent
and handler of every line a handler logs. Each handler call runs in a context
of its own (a task, or a signal lane's copy), so the variable is that call's alone;
elsewhere it is ``''``.

>>> current_handler()
''
>>> token = set_handler('EmailAgent.send_email'); current_handler()
'EmailAgent.send_email'
>>> reset_handler(token)
"""
from __future__ import annotations

import contextvars

__all__ = ['current_handler', 'reset_handler', 'set_handler']

_HANDLER: contextvars.ContextVar[str] = contextvars.ContextVar('microagent_handler', default='')


def current_handler() -> str:
    """``'<AgentClass>.<method>'`` of the handler running in this context, ``''`` outside one."""
    return _HANDLER.get()


# Mark the rest of this context as handler *label*'s (a token for reset_handler). The variable's own
# method, not a wrapper: it runs for every message.
set_handler = _HANDLER.set


def reset_handler(token: contextvars.Token[str]) -> None:
    """Undo :func:`set_handler` (for code that runs handlers inline, such as hooks)."""
    _HANDLER.reset(token)
