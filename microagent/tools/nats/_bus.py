"""The NATS signal bus: one core NATS subject per signal, one subscription per bound channel.

A channel ``PREFIX:name`` is the subject ``PREFIX.name``; RPC responses to a
bus arrive on ``PREFIX.response.<uid>``, one subscription per bus shared by
all its calls (NATS request/reply with a multiplexed inbox: every responder
answers there, each call picks its answers by correlation id, nothing is
subscribed per call). Core NATS is at most once, like every signal bus: a
signal sent while a receiver is disconnected is lost to it. nats-py
resubscribes after a reconnect by itself; each disconnect and reconnect is
logged (``microagent.tools.nats._connection``).
"""
from __future__ import annotations

import ssl
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ...bus import AbstractSignalBus
from ...exceptions import BackendError, ConfigurationError
from ._connection import NATSConnector, subject_token

__all__ = ['NATSSignalBus']


class NATSSignalBus(AbstractSignalBus):
    """Signal bus on core NATS, with RPC over it.

    Options beyond the common ones (``uid``, ``prefix``, ``log``, ``catalog``):
    ``connect_timeout``, ``reconnect_delay``, ``ping_interval``, ``ssl_context``
    (see :class:`NATSConnector`) and ``subscribe_timeout`` (how long ``bind``
    waits for the server to confirm a subscription).

    Not run: needs a NATS server.
    >>> bus = NATSSignalBus('nats://localhost:4222')              # doctest: +SKIP
    >>> await bus.user_created.send('user_agent', user_id=1)      # doctest: +SKIP
    >>> await bus.rpc_comments_count.call('api', user_id=1)       # doctest: +SKIP
    {'CommentAgent.count': 3}
    """

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0, reconnect_delay: float = 0.5,
                 ping_interval: float = 5.0, ssl_context: ssl.SSLContext | None = None,
                 subscribe_timeout: float = 10.0, **options: Any) -> None:
        super().__init__(dsn, **options)
        if subscribe_timeout <= 0:
            raise ConfigurationError('NATSSignalBus: subscribe_timeout must be > 0')
        for part in self.prefix.split('.'):
            subject_token('bus prefix part', part)
        self.subscribe_timeout = subscribe_timeout
        self.nats = NATSConnector(dsn, f'microagent.bus.{self.uid}', owner=type(self).__name__,
                                  connect_timeout=connect_timeout,
                                  reconnect_delay=reconnect_delay, ping_interval=ping_interval,
                                  ssl_context=ssl_context, log=self.log)
        self._subjects: dict[str, str] = {}
        self._subscriptions: dict[str, Subscription] = {}

    def lease_options(self) -> dict[str, Any]:
        """The lease connects like this bus: same TLS context."""
        return {'ssl_context': self.nats.ssl_context}

    def subject(self, channel: str) -> str:
        """The NATS subject of *channel* (``PREFIX:name`` -> ``PREFIX.name``)."""
        subject = self._subjects.get(channel)
        if subject is None:
            parts = channel.split(':')
            for part in parts[1:]:
                subject_token('channel part', part)
            subject = self._subjects[channel] = '.'.join(parts)
        return subject

    async def send(self, channel: str, message: str) -> None:
        try:
            client = self.nats.current() or await self.nats.client()
            await client.publish(self.subject(channel), message.encode())
        except nats.errors.Error as exc:
            raise self.nats.error(exc, f'cannot publish to {channel}') from None

    async def bind(self, channel: str) -> None:
        subject = self.subject(channel)
        if self.nats.current() is None:
            self._subscriptions.clear()  # made on a client that is gone (closed, or of another loop)
        client = await self.nats.client()
        if subject in self._subscriptions:
            return

        async def deliver(msg: Msg) -> None:
            try:
                self.receiver(channel, msg.data)
            except Exception:
                self.log.exception('NATSSignalBus: cannot dispatch a message on %s', channel)
        try:
            self._subscriptions[subject] = await client.subscribe(subject, cb=deliver)
            # The server has the subscription once it answered a PING sent after it.
            await client.flush(timeout=self.subscribe_timeout)  # type: ignore[arg-type]
        except (nats.errors.Error, TimeoutError) as exc:
            raise BackendError(f'{self!r}: NATS did not confirm the subscription to {channel}: '
                               f'{self.nats.describe(exc)}') from None

    def connected(self) -> bool:
        # nats-py subscribes again by itself on each reconnect.
        return not self._subscriptions or self.nats.connected()

    async def close(self) -> None:
        await super().close()
        subscriptions, self._subscriptions = self._subscriptions, {}
        client = self.nats.current()
        if client is not None:
            for subscription in subscriptions.values():
                try:
                    await subscription.unsubscribe()
                except nats.errors.Error as exc:
                    self.log.debug('NATSSignalBus: unsubscribe failed: %s', self.nats.describe(exc))
        await self.nats.close()
