"""Which connection failures are fatal at start: a refused login, an unknown host, nothing listening.

Every backend's client reports them its own way (redis-py's
``AuthenticationError``, aiormq's ``ProbableAuthenticationError`` or an errno
in the args, nats-py's ``'Authorization Violation'``, aiokafka's bare
``KafkaConnectionError``). :func:`cause_of` reads an exception, its chain and
its args for one of the three causes; :func:`connect_error` makes the
:class:`~microagent.exceptions.ConnectError` a bus or broker raises at once
instead of waiting out a timeout. Other failures (a reset, a timeout) are
not named here: they are retried as before.

>>> import socket
>>> cause_of(socket.gaierror(-2, 'Name or service not known'))
'unknown host'
>>> cause_of(RuntimeError('WRONGPASS invalid username-password pair or user is disabled.'))
'authentication refused'
>>> cause_of(TimeoutError()) is None
True
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

from ._dsn import mask_dsn, mask_text, password_of
from .exceptions import ConnectError

__all__ = ['AUTH', 'REFUSED', 'UNKNOWN_HOST', 'cause_of', 'connect_error']

AUTH = 'authentication refused'
UNKNOWN_HOST = 'unknown host'
REFUSED = 'connection refused'

# Lower-case phrases of the servers' and clients' refusals of a login.
_AUTH_TEXT = ('wrongpass', 'noauth', 'invalid password', 'invalid username-password', 'authentication required',
              'authentication failed', 'authenticationfailed', 'access_refused', 'access refused',
              'probableauthenticationerror', 'authorization violation', 'authentication timeout',
              'authenticationerror', 'sasl authentication')
_HOST_TEXT = ('name or service not known', 'nodename nor servname', 'temporary failure in name resolution',
              'no address associated with hostname')
_REFUSED_TEXT = ('connection refused', 'errno 111')
# getaddrinfo's errors, as negative numbers in args (aiormq re-raises them so).
_EAI = {getattr(socket, name) for name in ('EAI_NONAME', 'EAI_AGAIN', 'EAI_NODATA', 'EAI_FAIL')
        if hasattr(socket, name)}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """*exc*, its causes and contexts, and exceptions held in args (a few levels, no cycles)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
        todo.extend(a for a in item.args if isinstance(a, BaseException))
        todo.extend(getattr(item, 'exceptions', ()))  # ExceptionGroup, OSError of several addresses


def _cause_of_one(exc: BaseException) -> str | None:
    if isinstance(exc, socket.gaierror):
        return UNKNOWN_HOST
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    number = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if number == errno.ECONNREFUSED:
        return REFUSED
    if number in _EAI:
        return UNKNOWN_HOST
    text = f'{type(exc).__name__}: {exc}'.lower()
    for phrases, cause in ((_AUTH_TEXT, AUTH), (_HOST_TEXT, UNKNOWN_HOST), (_REFUSED_TEXT, REFUSED)):
        if any(phrase in text for phrase in phrases):
            return cause
    return None


def cause_of(exc: BaseException) -> str | None:
    """:data:`AUTH`, :data:`UNKNOWN_HOST` or :data:`REFUSED` when *exc* (or what it wraps) is one, else None."""
    found = [cause for cause in map(_cause_of_one, _chain(exc)) if cause is not None]
    # A refused login may come wrapped in a reset or a refusal of the next try: the login is the cause.
    return AUTH if AUTH in found else found[0] if found else None


def connect_error(owner: object, dsn: str, exc: BaseException) -> ConnectError | None:
    """The ConnectError of *owner* (a bus or broker, or its class name) for *exc*; None when not fatal.

    >>> connect_error('RedisBroker', 'redis://:secret@localhost:1/0', ConnectionRefusedError(111, 'no')).cause
    'connection refused'
    """
    cause = cause_of(exc)
    if cause is None:
        return None
    name = owner if isinstance(owner, str) else type(owner).__name__
    detail = mask_text(f'{type(exc).__name__}: {exc}', password_of(dsn))
    return ConnectError(name, mask_dsn(dsn), cause, detail)
