"""The NATS queue broker: a JetStream stream per queue, a durable pull consumer per queue, PubAcks on every send.

Why a stream per queue rather than one stream with a subject per queue: a
queue is then a unit JetStream manages on its own (work-queue retention
deletes what was acknowledged, so ``queue_length`` is the stream's message
count; limits, replicas and purges apply per queue; a busy queue's disk
writes never hold up another's), and a queue's dead letters are a stream of
their own that outlives it. The price, a stream per queue on the server, is
what JetStream is built for (thousands per server).

Exchanges route with the catalog (:mod:`microagent.routing`, the same AMQP
semantics as every backend, ``#`` in the middle of a pattern included):
``publish`` sends one copy to each bound queue whose patterns match, all
pipelined, and returns once every copy has its PubAck. This is not atomic
across queues: a publisher that dies half way leaves some queues with the
message. JetStream could only route natively with overlapping stream
subjects, which it forbids, or with every queue reading one exchange stream
and filtering client-side.

See :mod:`._topology` for names and headers, :mod:`._reader` for consuming,
attempts and the crash count, :mod:`._publisher` for confirms and retries.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
from nats.js.api import StreamConfig

from ..._message import check_headers, check_message_id, message_ids_for, new_message_id
from ..._tasks import cancel_task
from ...broker import AbstractQueueBroker
from ...delivery import DeadLetter
from ...exceptions import ConfigurationError, SerializingError
from ._connection import NATSConnector
from ._publisher import NATSPublisher, Outgoing, ensure_stream
from ._reader import NATSQueueReader
from ._topology import (
    ATTEMPT_BASE,
    ATTEMPTS,
    ERROR,
    MESSAGE_ID,
    MSG_ID,
    NATS_PREFIX,
    Names,
    dlq_config,
    queue_config,
    received_headers,
)

__all__ = ['NATSBroker']


class NATSBroker(AbstractQueueBroker):
    """At-least-once queue broker on NATS JetStream.

    Options beyond the common ones: ``prefix`` of every stream and subject
    (``microagent``), ``ack_wait`` (seconds a consumer that stopped answering
    keeps its messages before the server gives them to another, 30; live
    handlers renew it), ``max_ack_pending`` (the consumer group's unacknowledged
    messages, retries waiting for their delay included, 1000),
    ``publish_timeout`` (seconds a send waits for its PubAck, through
    reconnects, 30), ``replicas`` (of new streams, 1), ``pull_expires`` and
    ``pull_heartbeat`` (seconds: pull requests' lifetime and heartbeat),
    ``connect_timeout``, ``reconnect_delay``, ``ping_interval``, ``ssl_context``.
    Send options besides ``headers`` and ``message_id``: ``timeout`` (seconds,
    instead of ``publish_timeout``). Headers named ``Nats-*`` are refused: the
    server acts on them.

    Not run: needs a NATS server.
    >>> broker = NATSBroker('nats://localhost:4222')       # doctest: +SKIP
    >>> await broker.mailer.send({'to': 'a@b.c'})          # doctest: +SKIP
    >>> await broker.mailer.length()                       # doctest: +SKIP
    1
    """

    def __init__(self, dsn: str = 'nats://localhost:4222', *, prefix: str = 'microagent', ack_wait: float = 30.0,
                 max_ack_pending: int = 1000, publish_timeout: float = 30.0, replicas: int = 1,
                 pull_expires: float = 10.0, pull_heartbeat: float = 2.0, connect_timeout: float = 5.0,
                 reconnect_delay: float = 0.5, ping_interval: float = 5.0, ssl_context: ssl.SSLContext | None = None,
                 **options: Any) -> None:
        super().__init__(dsn, **options)
        if ack_wait < 1 or max_ack_pending < 1 or publish_timeout <= 0 or replicas < 1:
            raise ConfigurationError('NATSBroker: ack_wait >= 1, max_ack_pending >= 1, publish_timeout > 0, '
                                     'replicas >= 1')
        if pull_heartbeat <= 0 or pull_expires <= 2 * pull_heartbeat:
            raise ConfigurationError('NATSBroker: pull_expires must exceed twice pull_heartbeat (> 0)')
        self.names = Names(prefix)
        self.ack_wait = float(ack_wait)
        self.max_ack_pending = max_ack_pending
        self.replicas = replicas
        self.pull_expires = pull_expires
        self.pull_heartbeat = pull_heartbeat
        self.nats = NATSConnector(dsn, f'microagent.broker.{self.uid}', owner=type(self).__name__,
                                  connect_timeout=connect_timeout,
                                  reconnect_delay=reconnect_delay, ping_interval=ping_interval,
                                  ssl_context=ssl_context, log=self.log)
        self.publisher = NATSPublisher(self.nats, self.uid, timeout=publish_timeout)
        self._subjects: dict[str, str] = {}
        self._queue_readers: dict[str, NATSQueueReader] = {}
        self._keepers: dict[str, asyncio.Task[Any]] = {}

    def lease_options(self) -> dict[str, Any]:
        """The lease connects like this broker: same TLS context."""
        return {'ssl_context': self.nats.ssl_context}

    def _subject(self, name: str) -> str:
        subject = self._subjects.get(name)
        if subject is None:
            self.names.stream(name)  # checks the name
            subject = self._subjects[name] = self.names.subject(name)
        return subject

    # -- sending -------------------------------------------------------------------

    send_options: ClassVar[frozenset[str]] = frozenset({'timeout'})

    async def send(self, name: str, message: str | bytes, *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None, timeout: float | None = None, **options: Any) -> None:
        """Publish to queue *name*; returns once JetStream stored it (PubAck)."""
        if options:
            self.check_options('send', options)
        own = _headers(headers)
        own[MESSAGE_ID] = _message_id(message_id)
        data = message.encode() if isinstance(message, str) else message
        await self.publisher.publish(self._subject(name), data, own, self._stream(name), timeout)

    async def send_many(self, name: str, messages: Sequence[str | bytes], *, headers: Mapping[str, str] | None = None,
                        message_ids: Sequence[str] | None = None, timeout: float | None = None, **options: Any) -> None:
        """Publish every message pipelined (each with its own id), then wait for all their PubAcks."""
        if options:
            self.check_options('send_many', options)
        subject, stream = self._subject(name), self._stream(name)
        base = _headers(headers)
        items = [Outgoing(subject, m.encode() if isinstance(m, str) else m, {**base, MESSAGE_ID: message_id}, stream)
                 for m, message_id in zip(messages, message_ids_for(messages, message_ids), strict=True)]
        await self.publisher.publish_many(items, timeout)

    async def publish(self, exchange: str, message: str | bytes, topic: str | None = None, *,
                      headers: Mapping[str, str] | None = None, message_id: str | None = None,
                      timeout: float | None = None, **options: Any) -> None:
        """One copy (one message id) to every queue bound to *exchange* that accepts *topic*, each acked."""
        if options:
            self.check_options('publish', options)
        own = _headers(headers)
        own[MESSAGE_ID] = _message_id(message_id)
        data = message.encode() if isinstance(message, str) else message
        items = [Outgoing(self._subject(q.name), data, dict(own), self._stream(q.name))
                 for q in self.catalog.route(exchange, topic)]
        await self.publisher.publish_many(items, timeout)

    def _stream(self, name: str) -> Any:
        return lambda: queue_config(self.names, name, self.replicas)

    async def publish_dead_letter(self, name: str, data: bytes, headers: dict[str, str], error: str,
                                  attempts: int) -> None:
        """Store a dead letter of queue *name* (with its error and attempt count)."""
        extra = {**headers, ERROR: _header_text(error), ATTEMPTS: str(attempts), MSG_ID: self.publisher.next_id()}
        await self.publisher.publish(self.names.dlq_subject(name), data, extra,
                                     lambda: dlq_config(self.names, name, self.replicas))

    async def publish_copy(self, name: str, data: bytes, headers: dict[str, str], attempts: int) -> None:
        """Put a copy back at the end of queue *name* that counts *attempts* made already."""
        extra = {**headers, ATTEMPT_BASE: str(max(0, attempts)), MSG_ID: self.publisher.next_id()}
        await self.publisher.publish(self._subject(name), data, extra, self._stream(name))

    async def ensure(self, config: StreamConfig) -> None:
        """Create the stream of *config* unless it exists."""
        try:
            await ensure_stream(self.nats, config)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self.nats.error(exc, f'cannot create stream {config.name}') from None

    # -- inspecting ----------------------------------------------------------------

    async def queue_length(self, name: str, **options: Any) -> int:
        """Messages stored for *name*: waiting, waiting for a retry, or being handled (acked ones are gone)."""
        return await self._count(self.names.stream(name))

    async def _count(self, stream: str) -> int:
        try:
            js = await self.nats.jetstream()
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return 0
        except (nats.errors.Error, TimeoutError) as exc:
            raise self.nats.error(exc, f'cannot read stream {stream}') from None
        return int(info.state.messages)

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        """Up to *limit* dead letters of *name*, oldest first (read without removing them)."""
        stream = self.names.dlq_stream(name)
        letters: list[DeadLetter] = []
        seq = 0
        try:
            js = await self.nats.jetstream()
            while len(letters) < limit:
                raw = await js.get_msg(stream, seq=seq + 1, subject=self.names.dlq_subject(name), next=True)
                seq = int(raw.seq or seq + 1)
                letters.append(_dead_letter(raw.data or b'', raw.headers or {}))
        except nats.js.errors.NotFoundError:
            pass  # no stream, or no message after seq: the end
        except (nats.errors.Error, TimeoutError) as exc:
            raise self.nats.error(exc, f'cannot read the dead letters of {name}') from None
        return letters

    # -- consuming -----------------------------------------------------------------

    async def bind(self, name: str) -> None:
        reader = NATSQueueReader(self, name, self._runners[name])
        await reader.start()
        self._queue_readers[name] = reader
        self._start_reader(name, reader.run())
        self._keepers[name] = self._tasks.spawn(reader.keep_alive(), name=f'NATSBroker in-progress {name}')

    def consuming(self, name: str) -> bool:
        reader = self._queue_readers.get(name)
        return reader is not None and not reader.setup_needed and self.nats.connected()

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        """Stop reading *name*, let handlers finish until *timeout* (the rest are given back), stop listening."""
        reader = self._queue_readers.pop(name, None)
        cut = await super().unbind(name, timeout)
        await cancel_task(self._keepers.pop(name, None))
        if reader is not None:
            await reader.close()
        return cut

    async def close(self) -> None:
        """Stop consumers (unfinished messages are given back), then close the connection."""
        await super().close()
        await self.nats.close()


def _headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's *headers*, checked, as NATS headers."""
    checked = check_headers(headers)
    refused = [name for name in checked if name.startswith(NATS_PREFIX)]
    if refused:
        raise SerializingError(f'NATSBroker: headers {refused} are refused: the NATS server acts on Nats-* headers')
    if any('\r' in value or '\n' in value for value in checked.values()):
        raise SerializingError('NATSBroker: a header value cannot contain a line break')
    return checked


def _message_id(message_id: str | None) -> str:
    return check_message_id(message_id) if message_id is not None else new_message_id()


def _header_text(text: str) -> str:
    # A header value is one line: the error's newlines (tracebacks) become spaces.
    return ' '.join(text.split())[:4096]


def _dead_letter(data: bytes, headers: dict[str, str]) -> DeadLetter:
    attempts = headers.get(ATTEMPTS, '1')
    return DeadLetter(data.decode('utf-8', 'replace'), headers.get(ERROR, ''),
                      int(attempts) if attempts.isdigit() else 1, headers.get(MESSAGE_ID, ''),
                      received_headers(headers))



