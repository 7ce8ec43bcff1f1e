"""Publishing on a confirm-mode channel through the lane, confirms and returns read off it.

Contract (:class:`Publisher`). ``publish`` writes one ``basic.publish``
(mandatory) and returns its outcome: ``None`` once the broker confirmed the
message (it is routed and, persistent to durable queues, safe), or the reason
it refused it: ``'returned: <text>'`` (no queue is bound for it: RabbitMQ sends
the ``basic.return`` before the confirm) or ``'nack'``. If the channel closes
first, it raises the channel's error. ``publish_many`` writes a batch and
returns each outcome, or the error of each that failed, in order. Every
publish on the channel must go through one publisher. A publish whose message
id is in flight already waits for that one's outcome: a ``basic.return`` names
its message by id only.

:class:`Confirms` is the fast lane's: a publish is numbered (its delivery
tag) when its frames are written, so numbers and wire order agree even when a
write has to wait for aiormq's queue. :class:`PlainConfirms` is aiormq's own
``basic_publish`` (no lane: ``fast_lane=False``, or an aiormq the lane does
not fit). :func:`publisher` picks one for a channel.

Not run: needs a RabbitMQ server.
>>> confirms = publisher(channel, lane)                               # doctest: +SKIP
>>> refused = await confirms.publish('', 'mailer', b'{}', properties)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any, Protocol

import aiormq
from pamqp.commands import Basic

from . import _wire as wire
from ._lane import publish_frames

if TYPE_CHECKING:
    from ._lane import Lane

__all__ = ['Confirms', 'PlainConfirms', 'Publisher', 'publisher']

Outcome = str | None


class Publisher(Protocol):
    """Publishing with confirms on one channel; see the module docstring."""

    channel: aiormq.abc.AbstractChannel

    @property
    def is_open(self) -> bool: ...

    async def publish(self, exchange: str, key: str, body: bytes, properties: Basic.Properties) -> Outcome: ...

    async def publish_many(self, exchange: str, key: str, items: list[tuple[bytes, Basic.Properties]]
                           ) -> list[Outcome | BaseException]: ...


def publisher(channel: aiormq.abc.AbstractChannel, lane: Lane | None) -> Publisher:
    """The publisher for a confirm-mode *channel*: through its connection's *lane*, or plain aiormq."""
    return PlainConfirms(channel) if lane is None else Confirms(channel, lane)


class PlainConfirms:
    """Publishing with confirms through aiormq's channel API (the channel opened with ``on_return_raises``).

    Not run: needs a RabbitMQ server.
    >>> refused = await PlainConfirms(channel).publish('', 'mailer', b'{}', properties)   # doctest: +SKIP
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        # Message id -> done when its publish has its outcome: aiormq, too, maps a return by id only.
        self._flying: dict[str, asyncio.Future[None]] = {}

    @property
    def is_open(self) -> bool:
        return not self.channel.is_closed

    async def publish(self, exchange: str, key: str, body: bytes, properties: Basic.Properties) -> Outcome:
        message_id = str(properties.message_id)
        while (twin := self._flying.get(message_id)) is not None:
            await asyncio.wait([twin])
        done = self._flying[message_id] = asyncio.get_running_loop().create_future()
        try:
            await self.channel.basic_publish(body, exchange=exchange, routing_key=key, properties=properties,
                                             mandatory=True)
        except aiormq.exceptions.PublishError as exc:
            return f'returned: {getattr(exc.frame, "reply_text", "") or "unroutable"}'
        except aiormq.exceptions.DeliveryError:
            return 'nack'
        finally:
            del self._flying[message_id]
            done.set_result(None)
        return None

    async def publish_many(self, exchange: str, key: str, items: list[tuple[bytes, Basic.Properties]]
                           ) -> list[Outcome | BaseException]:
        # aiormq numbers and writes them in call order; gather awaits every confirm at once.
        return await asyncio.gather(*(self.publish(exchange, key, body, props) for body, props in items),
                                    return_exceptions=True)


class Confirms:
    """The publishes awaiting a confirm on one channel; see the module docstring."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, lane: Lane) -> None:
        self.channel = channel
        self.lane = lane
        self.number = channel.number
        self._tag = 0
        self._pending: dict[int, tuple[asyncio.Future[str | None], str]] = {}
        self._ids: dict[str, int] = {}
        self._returned: dict[int, str] = {}
        # While a basic.return's content is read: its reply text, and body bytes still due.
        self._returning: str | None = None
        self._left = 0
        self._lock = asyncio.Lock()
        lane.attach(self.number, self)
        channel.closing.add_done_callback(self._closed)

    @property
    def is_open(self) -> bool:
        return not self.channel.is_closed

    async def publish(self, exchange: str, key: str, body: bytes, properties: Basic.Properties) -> Outcome:
        """Write one publish and wait for its outcome (see the module docstring)."""
        return await (await self._write_one(exchange, key, body, properties))

    async def publish_many(self, exchange: str, key: str, items: list[tuple[bytes, Basic.Properties]]
                           ) -> list[Outcome | BaseException]:
        """Write many publishes in one go (a pipelined confirm window); their outcomes in order."""
        message_ids = [str(props.message_id) for _, props in items]
        futures = None
        if len(set(message_ids)) == len(message_ids):
            futures = await self._write_numbered(self._frames(exchange, key, items), message_ids)
        if futures is None:
            # An id twice in the batch, or already in flight: one at a time (see _after_twin).
            futures = [await self._write_one(exchange, key, body, props) for body, props in items]
        return await asyncio.gather(*futures, return_exceptions=True)

    async def _write_one(self, exchange: str, key: str, body: bytes,
                         properties: Basic.Properties) -> asyncio.Future[Outcome]:
        """Write one publish; the future of its outcome."""
        message_id = str(properties.message_id)
        while True:
            await self._after_twin(message_id)
            data = self._frames(exchange, key, [(body, properties)])
            if not self._lock.locked() and self.lane.write_now(data):
                return self._register(message_id)
            futures = await self._write_numbered(data, [message_id])
            if futures is not None:
                return futures[0]

    async def _after_twin(self, message_id: str) -> None:
        """Wait while a publish with the same message id is unconfirmed.

        A ``basic.return`` names its message by id only: two of them in flight
        with one id could not be told apart. Callers rarely reuse an id
        (their own ``message_id=`` sent again), so waiting costs nothing else.
        """
        while (tag := self._ids.get(message_id)) is not None:
            await asyncio.wait([self._pending[tag][0]])

    def _frames(self, exchange: str, key: str, items: list[tuple[bytes, Basic.Properties]]) -> bytes:
        if self.channel.is_closed:
            raise aiormq.ChannelInvalidStateError(f'AMQP channel {self.number} is closed')
        method = self.lane.publish_method(self.number, exchange, key)
        size = self.lane.max_content_size
        return b''.join(publish_frames(self.number, method, body, props, size) for body, props in items)

    async def _write_numbered(self, data: bytes, message_ids: list[str]) -> list[asyncio.Future[str | None]] | None:
        """Number the publishes in *data* and write it, maybe after aiormq's queued frames.

        None, with nothing written, when one of *message_ids* is in flight by then (see ``_after_twin``).
        """
        async with self._lock:
            if any(message_id in self._ids for message_id in message_ids):
                return None
            # Nobody else numbers a publish while these wait to be queued.
            first = self._tag
            futures = [self._register(message_id) for message_id in message_ids]
            try:
                await self.lane.write(data)
            except BaseException:
                # Never written: the broker never numbered them, so the next publish reuses the numbers.
                for tag in range(first + 1, self._tag + 1):
                    self._unregister(tag)
                self._tag = first
                raise
            return futures

    def _register(self, message_id: str) -> asyncio.Future[str | None]:
        self._tag += 1
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[self._tag] = (future, message_id)
        self._ids[message_id] = self._tag
        return future

    def _unregister(self, tag: int) -> tuple[asyncio.Future[str | None], str] | None:
        entry = self._pending.pop(tag, None)
        if entry is not None:
            self._ids.pop(entry[1], None)
        return entry

    # -- frames from the lane ----------------------------------------------------------

    def take(self, kind: int, payload: bytes) -> bool:
        if kind == wire.METHOD:
            method = wire.method_id(payload)
            if method in (wire.ACK, wire.NACK):
                tag, multiple = wire.ack(payload)
                self._settle(tag, multiple, None if method == wire.ACK else 'nack')
            elif method == wire.RETURN:
                frame = wire.method(payload)
                self._returning = f'returned: {frame.reply_text or frame.reply_code}'
            else:
                return False
        elif self._returning is not None:
            self._read_return(kind, payload)
        else:
            return False
        return True

    def _read_return(self, kind: int, payload: bytes) -> None:
        if kind == wire.HEADER:
            content = wire.header(payload)
            tag = self._ids.get(str(content.properties.message_id))
            if tag is not None and self._returning is not None:
                self._returned[tag] = self._returning
            self._left = content.body_size
        else:
            self._left -= len(payload)
        if self._left <= 0:
            self._returning = None

    def _settle(self, tag: int, multiple: bool, refused: str | None) -> None:
        tags = list(itertools.takewhile(lambda t: t <= tag, self._pending)) if multiple else [tag]
        for done in tags:
            entry = self._unregister(done)
            reason = self._returned.pop(done, None) or refused
            if entry is not None and not entry[0].done():
                entry[0].set_result(reason)

    def _closed(self, closing: asyncio.Future[Any]) -> None:
        self.lane.detach(self.number, self)
        error: BaseException | None = None
        if not closing.cancelled():
            error = closing.exception()
        if not isinstance(error, Exception):
            error = aiormq.ChannelInvalidStateError(f'AMQP channel {self.number} closed')
        pending, self._pending = self._pending, {}
        self._ids.clear()
        self._returned.clear()
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)
