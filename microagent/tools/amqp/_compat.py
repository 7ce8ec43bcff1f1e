"""Whether the installed aiormq and pamqp are what the AMQP fast lane was written for.

The lane (``amqp._lane``) works under aiormq rather than through its public
API: it is aiormq's transport (``aiormq.TransportFactory``, from aiormq 6.9.1),
shares its write queue of :class:`aiormq.abc.ChannelFrame` items, reads the
negotiated frame size from its tune state, feeds its stuck-connection watch
(``Connection.is_connection_was_stuck``) with heartbeats, and reads and writes
the hot frames itself (``amqp._wire``), checked here against pamqp's own
encoding. :func:`lane_problem` checks all of that once per process, without a
server; a connection whose lane cannot bind after the handshake is reported
through :func:`report` as well. Where anything differs, the AMQP backends use
plain aiormq (complete, slower) and log ONE warning per process saying why.

The verdict, and whether the warning was logged, are kept for the life of the
process (the installed packages do not change under it); tests that fake
another aiormq start afresh with :func:`forget`.

>>> lane_problem() is None or isinstance(lane_problem(), str)
True
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import inspect
import logging
import threading

import aiormq
import aiormq.abc
import pamqp.frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from . import _wire as wire

__all__ = ['forget', 'lane_problem', 'report']

_log = logging.getLogger('microagent.amqp')
_reported = threading.Event()


@functools.cache
def lane_problem() -> str | None:
    """Why the fast lane cannot run on the installed aiormq (None: it can); warns once when it cannot."""
    problem = _aiormq_problem() or _wire_problem()
    if problem is not None:
        report(problem)
    return problem


def report(problem: str) -> None:
    """Log, once per process, that the fast lane is off and why."""
    if not _reported.is_set():
        _reported.set()
        _log.warning('AMQP fast lane off, using plain aiormq: aiormq %s is not what the lane was written for (%s)',
                     _version('aiormq'), problem)


def forget() -> None:
    """Check again on the next call, and warn again (for tests that fake another aiormq)."""
    lane_problem.cache_clear()
    _reported.clear()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return '(unknown version)'


def _aiormq_problem() -> str | None:
    factory = getattr(aiormq, 'TransportFactory', None)
    if not inspect.isclass(factory) or not inspect.iscoroutinefunction(getattr(factory, 'create', None)):
        return 'no aiormq.TransportFactory with an async create()'
    connection = getattr(aiormq, 'Connection', None)
    if not inspect.isclass(connection):
        return 'no aiormq.Connection class'
    if 'transport_factory' not in inspect.signature(connection).parameters:
        return 'aiormq.Connection takes no transport_factory'
    declared = {name for cls in connection.__mro__ for name in getattr(cls, '__annotations__', {})}
    for name in ('write_queue', 'connection_tune'):
        if name not in declared:
            return f'aiormq.Connection declares no {name}'
    if not isinstance(getattr(connection, 'is_connection_was_stuck', None), property):
        return 'aiormq.Connection has no is_connection_was_stuck watch'
    frame = getattr(aiormq.abc, 'ChannelFrame', None)
    fields = {f.name for f in dataclasses.fields(frame)} if dataclasses.is_dataclass(frame) else set()
    if not {'payload', 'should_close'} <= fields:
        return 'aiormq.abc.ChannelFrame is not a dataclass with payload and should_close'
    return None


def _wire_problem() -> str | None:
    """The lane's own frame reading and writing, compared with pamqp's on sample frames."""
    try:
        deliver = pamqp.frame.marshal(Basic.Deliver('ctag', 7, True, 'ex', 'key'), 3)
        if wire.method_id(wire.payload_of(deliver)) != wire.DELIVER:
            return 'basic.deliver has another method id'
        if wire.deliver(wire.payload_of(deliver)) != ('ctag', 7, True, 'ex', 'key'):
            return 'basic.deliver has another layout'
        if wire.ack_frame(3, 9) != pamqp.frame.marshal(Basic.Ack(delivery_tag=9), 3):
            return 'basic.ack has another layout'
        nack = pamqp.frame.marshal(Basic.Nack(delivery_tag=5, multiple=True), 3)
        if (wire.method_id(wire.payload_of(nack)), wire.ack(wire.payload_of(nack))) != (wire.NACK, (5, True)):
            return 'basic.nack has another layout'
        returned = wire.method(wire.payload_of(pamqp.frame.marshal(Basic.Return(312, 'NO_ROUTE', 'e', 'k'), 3)))
        if wire.method_id(wire.payload_of(pamqp.frame.marshal(returned, 3))) != wire.RETURN:
            return 'basic.return has another method id'
        header = pamqp.frame.marshal(ContentHeader(0, 11, Basic.Properties(message_id='m1')), 3)
        content = wire.header(wire.payload_of(header))
        if (content.body_size, content.properties.message_id) != (11, 'm1'):
            return 'content headers read differently'
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, UnicodeError) as exc:
        return f'pamqp frames differ: {type(exc).__name__}: {exc}'
    return None

