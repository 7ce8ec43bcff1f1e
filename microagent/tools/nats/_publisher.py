"""Confirmed JetStream publishes: every send waits for the PubAck, retried through outages until its deadline.

A publish carries a ``Nats-Msg-Id`` of its own, kept across retries: when a
PubAck is lost (a cut, a server restart) and the publish is sent again, the
stream's de-duplication window stores the message once. So a send that
returned is stored (never lost), and one that raised may or may not be.

A stream is created the first time a publish finds no stream on its subject
(JetStream answers "no responders"), then the publish is sent again.
``publish_many`` pipelines: every message goes out, then all PubAcks are
awaited together (nats-py's ``publish_async``); the ones that did not come
back in time are sent again, with their ids.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import StreamConfig

from ...exceptions import BackendError, DeliveryError
from ._connection import NATSConnector
from ._topology import MSG_ID

__all__ = ['Outgoing', 'NATSPublisher', 'ensure_stream']

log = logging.getLogger('microagent.nats')

StreamFor = Callable[[], StreamConfig]
# Worth another try within the deadline: the connection or JetStream is (re)starting.
_TRANSIENT = (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError,
              nats.errors.StaleConnectionError, nats.js.errors.ServiceUnavailableError, TimeoutError)
_STREAM_IN_USE = 10058  # "stream name already in use with a different configuration"


@dataclass
class Outgoing:
    """One message of a batch: where it goes, its body and headers (with its ``Nats-Msg-Id``)."""

    subject: str
    data: bytes
    headers: dict[str, str]
    stream: StreamFor


async def ensure_stream(connector: NATSConnector, config: StreamConfig) -> None:
    """Create the stream of *config* unless it exists (an existing one is used as it is)."""
    js = await connector.jetstream()
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _STREAM_IN_USE:
            raise
        log.debug('NATS: stream %s exists with another configuration; used as it is', config.name)


class NATSPublisher:
    """Publishes of one broker: ids, PubAcks, retries, streams made on demand.

    Not run: needs a NATS server.
    >>> stream = lambda: queue_config(names, 'mailer', 1)                      # doctest: +SKIP
    >>> await publisher.publish('microagent.mailer', b'{}', {}, stream)       # doctest: +SKIP
    """

    def __init__(self, connector: NATSConnector, uid: str, *, timeout: float, attempt_timeout: float = 5.0) -> None:
        self.connector = connector
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._ids = itertools.count(1)
        self._prefix = f'{uid[:12]}.'

    def next_id(self) -> str:
        """A message id unique to this publisher (de-duplicates retried publishes)."""
        return f'{self._prefix}{next(self._ids)}'

    async def publish(self, subject: str, data: bytes, headers: dict[str, str], stream: StreamFor,
                      timeout: float | None = None) -> None:
        """Publish once the stream has it (PubAck); BackendError when the deadline passes first."""
        headers.setdefault(MSG_ID, self.next_id())
        await self.publish_many([Outgoing(subject, data, headers, stream)], timeout, single=True)

    async def publish_many(self, items: Sequence[Outgoing], timeout: float | None = None, *,
                           single: bool = False) -> None:
        """Publish every item, pipelined; returns once each has its PubAck."""
        loop = asyncio.get_running_loop()
        timeout = timeout or self.timeout
        deadline = loop.time() + timeout
        left = list(items)
        last: BaseException | None = None
        for item in left:
            item.headers.setdefault(MSG_ID, self.next_id())
        while left:
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = self.connector.describe(last) if last else 'no answer'
                raise BackendError(f'NATS: no PubAck for {left[0].subject} within {timeout}s ({reason})')
            wait = min(remaining, self.attempt_timeout)
            try:
                if single:
                    await self._one(left[0], wait)
                    return
                left, last = await self._round(left, wait, last)
            except nats.js.errors.NoStreamResponseError as exc:
                last = exc
                await self._ensure(left[0].stream, remaining)
            except _TRANSIENT as exc:
                last = exc
                await self._pause(exc, deadline)
            except nats.js.errors.APIError as exc:
                raise DeliveryError(self.connector.error(exc, f'JetStream refused a message to {left[0].subject}')
                                    .args[0]) from None
            except nats.errors.Error as exc:
                raise self.connector.error(exc, f'cannot publish to {left[0].subject}') from None

    async def _one(self, item: Outgoing, wait: float) -> None:
        js = await self.connector.jetstream()
        await js.publish(item.subject, item.data, timeout=wait, headers=item.headers)

    async def _round(self, items: list[Outgoing], wait: float,
                     last: BaseException | None) -> tuple[list[Outgoing], BaseException | None]:
        """Publish *items* pipelined; those without a PubAck after *wait* seconds, and the last error."""
        js = await self.connector.jetstream()
        futures = [await js.publish_async(i.subject, i.data, headers=i.headers) for i in items]
        _, pending = await asyncio.wait(futures, timeout=wait)
        for future in pending:
            future.cancel()  # nats-py forgets a cancelled publish (and frees its slot)
        again: list[Outgoing] = []
        for item, future in zip(items, futures, strict=True):
            if future in pending:
                again.append(item)
                last = TimeoutError('PubAck not received in time')
                continue
            problem = future.exception()
            if isinstance(problem, nats.js.errors.NoStreamResponseError):
                await self._ensure(item.stream, wait)
                again.append(item)
            elif problem is not None:
                raise problem
        return again, last

    async def _ensure(self, stream: StreamFor, wait: float) -> None:
        try:
            async with asyncio.timeout(wait):
                await ensure_stream(self.connector, stream())
        except (*_TRANSIENT, nats.errors.NoRespondersError) as exc:
            # JetStream not ready yet (a server starting): the next round tries again.
            log.debug('NATS: cannot create a stream yet: %s', self.connector.describe(exc))

    @staticmethod
    async def _pause(exc: BaseException, deadline: float) -> None:
        # An error that came at once (not a timeout) must not become a busy loop.
        if not isinstance(exc, TimeoutError):
            await asyncio.sleep(max(0.0, min(0.1, deadline - asyncio.get_running_loop().time())))
