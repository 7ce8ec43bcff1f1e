"""The fast lane of an AMQP connection: hot frames handled where their bytes arrive, writes sent at once.

aiormq reads each frame in a task of the connection and queues it for a task
of its channel, which starts a task per delivered message; every publish and
ack goes through a queue to a writer task. One message through a queue (publish,
delivery, ack, confirm) so costs about eight event-loop rounds, and on a
latency-bound path, a send awaiting its confirm, those rounds are most of the
client's time.

The lane sits under aiormq as its transport (aiormq's ``TransportFactory``
extension point). The stream aiormq reads from first splits the incoming
bytes into frames: a frame on a channel that has a *sink* (publisher confirms,
a consumer's deliveries) is offered to the sink right there, in the protocol
callback; every other frame, and every frame a sink declines, reaches aiormq
unchanged and in order. Writes go straight to the socket when aiormq's write
queue is empty, so they never overtake a queued frame, else through that queue.

aiormq keeps everything else: the handshake, heartbeats, the channels'
lifecycle, declarations and other RPCs, closing. pamqp builds and reads the
frames. A sink that fails costs the connection (aborted, so the robust layer
reconnects and the broker redelivers what was unsettled), never a message.

    if lane_problem() is None:                 # amqp._compat: the aiormq it was written for
        lane = Lane(log)
        connection = aiormq.Connection(dsn, transport_factory=LaneTransport(lane))
        await connection.connect()
        lane.bind(connection)                  # False: use the connection as plain aiormq
    lane.attach(channel.number, sink)     # sink.take(frame) -> bool
    lane.write_now(data) or await lane.write(data)
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

if TYPE_CHECKING:
    from yarl import URL

    _TransportFactory = aiormq.TransportFactory
else:
    # Before aiormq 6.9.1 there is none: amqp._compat then keeps the lane off, and this class unused.
    _TransportFactory = getattr(aiormq, 'TransportFactory', object)

__all__ = ['Lane', 'LaneTransport', 'Sink', 'publish_frames']

_HEAD = struct.Struct('>BHI')
_FRAME_END = 0xCE
_KINDS = frozenset({1, 2, 3, 8})  # method, content header, content body, heartbeat
# aiormq judges a connection dead when it reads no frame for a while; when sinks take
# every frame, it is shown a heartbeat (which it ignores) at most this often.
_KEEPALIVE = 1.0
_HEARTBEAT = b'\x08\x00\x00\x00\x00\x00\x00\xce'
_HIGH_WATER = 256 * 1024
_MAX_FRAME = 1 << 28  # far above any frame_max a broker grants: a bigger length is not a frame
_MIN_FRAME_MAX = 4096  # AMQP 0-9-1: every peer accepts frames this big


class Sink(Protocol):
    """What takes frames of one channel off the lane (see ``amqp._wire`` for reading them)."""

    def take(self, kind: int, payload: bytes) -> bool:
        """Handle a frame (*kind* 1 method, 2 content header, 3 body) or return False to leave it to aiormq.

        Runs in the protocol callback: must not block.
        """


def publish_frames(number: int, method: bytes, body: bytes, properties: Basic.Properties, max_size: int) -> bytes:
    """The frames of one ``basic.publish`` on channel *number*: *method* (see :meth:`Lane.publish_method`),
    the content header and the body in pieces of at most *max_size* bytes."""
    parts = [method, pamqp.frame.marshal(ContentHeader(0, len(body), properties), number)]
    for start in range(0, len(body), max_size):
        parts.append(pamqp.frame.marshal(ContentBody(body[start:start + max_size]), number))
    return b''.join(parts)


class Lane:
    """One AMQP connection's fast lane; see the module docstring.

    Not run: needs a RabbitMQ server.
    >>> lane = Lane(logging.getLogger('amqp'))   # doctest: +SKIP
    """

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.sinks: dict[int, Sink] = {}
        self.max_content_size = 131_072 - 8
        self._buffer = bytearray()
        self._raw = False
        # After a sink failed: the connection is being aborted, nothing more is read.
        self._dropped = False
        self._passed = 0.0
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._queue: asyncio.Queue[ChannelFrame] | None = None
        self._methods: dict[tuple[int, str, str, bool], bytes] = {}

    # -- wiring ------------------------------------------------------------------------

    def connected(self, transport: asyncio.Transport, writer: asyncio.StreamWriter) -> None:
        self._transport = transport
        self._writer = writer

    def bind(self, connection: aiormq.Connection) -> bool:
        """After the handshake: share *connection*'s write queue and learn its frame size.

        False when *connection* has no write queue of the kind the lane shares (then nothing
        is ever written or taken by the lane: the caller reconnects without it).
        """
        queue = getattr(connection, 'write_queue', None)
        if not isinstance(queue, asyncio.Queue):
            return False
        frame_max = getattr(getattr(connection, 'connection_tune', None), 'frame_max', None)
        # The tune state unreadable: the smallest frame size any broker accepts is still right.
        size = frame_max if isinstance(frame_max, int) and frame_max >= _MIN_FRAME_MAX else _MIN_FRAME_MAX
        self.max_content_size = size - 8
        self._queue = queue
        return True

    def attach(self, number: int, sink: Sink) -> None:
        """Offer the frames of channel *number* to *sink* from now on."""
        self.sinks[number] = sink

    def detach(self, number: int, sink: Sink) -> None:
        """Stop offering channel *number*'s frames to *sink* (a closed channel's number is reused)."""
        if self.sinks.get(number) is sink:
            del self.sinks[number]

    # -- writing -----------------------------------------------------------------------

    def write_now(self, data: bytes) -> bool:
        """Write *data* at once unless frames are queued before it; False: ``await write(data)``."""
        transport = self._transport
        queue = self._queue
        if transport is None or queue is None or not queue.empty() or transport.is_closing():
            return False
        transport.write(data)
        return True

    async def send(self, data: bytes, timeout: float) -> None:
        """Write *data* at once if it can go now, else wait for room, at most *timeout* seconds."""
        if not self.write_now(data):
            async with asyncio.timeout(timeout):
                await self.write(data)

    async def write(self, data: bytes) -> None:
        """Write *data* after whatever aiormq queued; waits while the socket is backed up."""
        transport, writer, queue = self._transport, self._writer, self._queue
        if transport is None or writer is None or queue is None or transport.is_closing():
            raise aiormq.ChannelInvalidStateError('the AMQP connection is closed')
        if not queue.empty():
            await queue.put(ChannelFrame(payload=data, should_close=False))
            return
        transport.write(data)
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await writer.drain()

    def publish_method(self, number: int, exchange: str, key: str, *, mandatory: bool = True) -> bytes:
        """The ``basic.publish`` method frame for channel *number*, built once per target."""
        method = self._methods.get((number, exchange, key, mandatory))
        if method is None:
            frame = Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory)
            method = self._methods[(number, exchange, key, mandatory)] = pamqp.frame.marshal(frame, number)
            if len(self._methods) > 10_000:
                self._methods.clear()  # many one-off targets: a cache, not a leak
        return method

    # -- reading -----------------------------------------------------------------------

    def receive(self, data: bytes, passthrough: Any) -> None:
        """Split *data* into frames; sinks take theirs, ``passthrough(bytes)`` gets the rest in order."""
        if self._raw or self._dropped:
            if not self._dropped:
                passthrough(data)
            return
        buffer = self._buffer
        buffer += data
        sinks = self.sinks
        passed: list[bytes] = []
        taken = False
        pos, size = 0, len(buffer)
        while size - pos >= 8:
            kind, number, length = _HEAD.unpack_from(buffer, pos)
            end = pos + 8 + length
            if kind not in _KINDS or length > _MAX_FRAME or (end <= size and buffer[end - 1] != _FRAME_END):
                # Not AMQP framing as we know it: aiormq gets the rest and reports the error.
                self._raw = True
                passed.append(bytes(buffer[pos:]))
                pos = size
                break
            if end > size:
                break
            sink = sinks.get(number)
            if sink is None or not self._offer(sink, kind, bytes(buffer[pos + 7:end - 1])):
                passed.append(bytes(buffer[pos:end]))
            else:
                taken = True
            pos = end
            if self._dropped:
                return
        del buffer[:pos]
        self._pass(passed, taken, passthrough)

    def _offer(self, sink: Sink, kind: int, payload: bytes) -> bool:
        try:
            return sink.take(kind, payload)
        except Exception:
            # A sink that fails may have lost track of a message: reconnecting is the safe way on.
            self.log.exception('AMQP fast lane: a frame handler failed; dropping the connection')
            self._dropped = True
            self._buffer.clear()
            if self._transport is not None:
                self._transport.abort()
            return True

    def _pass(self, passed: list[bytes], taken: bool, passthrough: Any) -> None:
        now = time.monotonic()
        if passed:
            self._passed = now
            passthrough(b''.join(passed))
        elif taken and now - self._passed > _KEEPALIVE:
            self._passed = now
            passthrough(_HEARTBEAT)


class _LaneReader(asyncio.StreamReader):
    """The stream aiormq reads frames from, after the lane took its own."""

    def __init__(self, lane: Lane, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self._lane = lane
        self._feed = super().feed_data

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self._lane.receive(bytes(data), self._feed)


class LaneTransport(_TransportFactory):
    """aiormq's transport factory for a connection with a :class:`Lane` (TCP, or TLS for ``amqps``).

    Not run: needs a RabbitMQ server.
    >>> aiormq.Connection(dsn, transport_factory=LaneTransport(lane))   # doctest: +SKIP
    """

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop('ssl_context_provider', None)
        ssl_context = await provider.get_context() if url.scheme == 'amqps' and provider is not None else None
        loop = asyncio.get_running_loop()
        reader = _LaneReader(self.lane, loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(lambda: protocol, url.host or 'localhost', url.port or 5672,
                                                        ssl=ssl_context, **kwargs)
        except OSError as exc:
            raise aiormq.AMQPConnectionError(*exc.args) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.lane.connected(transport, writer)
        return reader, writer
