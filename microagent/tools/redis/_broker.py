"""The Redis queue broker: one stream per queue, one consumer group per stream.

Keys, under ``prefix`` (default ``microagent``): ``<prefix>:<queue>`` (the
stream; group = queue name, consumer = broker uid; entry fields in
``redis._wire``), ``<prefix>:<queue>.dlq`` (dead letters: body ``b``, error
``e``, attempts ``a``, message id ``i``, headers ``h``),
``<prefix>:<queue>.delayed`` (retries waiting for their time, a ZSET) and
``<prefix>:consumer:<uid>`` (the liveness heartbeat of a consumer).

An acknowledged entry is XACKed and XDELed in one round trip, so the stream
only holds what is waiting or in flight. A consumer whose heartbeat key has
expired is dead: live consumers XCLAIM its pending entries and handle them.
A live consumer's long-running message is never taken away from it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from ..._message import check_headers, check_message_id, encode_headers, message_ids_for, new_message_id
from ..._tasks import cancel_task
from ...broker import AbstractQueueBroker
from ...delivery import DeadLetter
from ...exceptions import ConfigurationError
from ._connection import Lane, RedisConnector, pack_args
from ._reader import QueueReader
from ._scripts import ADD_MANY, CLAIM_DEAD, QUEUE_LENGTH
from ._wire import dead_letter, fields

__all__ = ['RedisBroker']

_BATCH = 1000  # messages per script call in send_many / publish


class RedisBroker(AbstractQueueBroker):
    """At-least-once queue broker on Redis Streams with consumer groups.

    Options beyond the common ones: ``prefix`` of every key, ``heartbeat_interval``
    and ``heartbeat_ttl`` (a consumer silent for ``heartbeat_ttl`` seconds is dead
    and its messages are reclaimed), ``block`` (seconds a read waits for new
    messages), ``reconnect_delay``/``max_reconnect_delay`` (capped backoff).

    >>> broker = RedisBroker('redis://localhost/7')     # doctest: +SKIP
    >>> await broker.user_created.send({'user_id': 1})  # doctest: +SKIP
    """

    def __init__(self, dsn: str, *, prefix: str = 'microagent', heartbeat_interval: float = 2.0,
                 heartbeat_ttl: float = 10.0, block: float = 1.0, reconnect_delay: float = 0.05,
                 max_reconnect_delay: float = 2.0, **options: Any) -> None:
        super().__init__(dsn, **options)
        if heartbeat_interval <= 0 or heartbeat_ttl < heartbeat_interval * 2 or block <= 0:
            raise ConfigurationError('RedisBroker: heartbeat_ttl must be at least twice heartbeat_interval (> 0), '
                                     'block > 0')
        self.prefix = prefix
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.block = block
        self.retry_poll = 1.0  # how often due retries of other consumers (dead ones too) are looked for
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.redis = RedisConnector(dsn, f'microagent.broker.{self.uid}')
        # Senders and acks on lanes of their own: a producer and a consumer in one process never queue behind
        # each other.
        self._lane = Lane(self.redis)
        self._ack_lane = Lane(self.redis)
        self._states: dict[str, QueueReader] = {}
        self._heads: dict[str, bytes] = {}  # packed 'XADD <stream> * b' per queue: the send hot path
        self._pumps: dict[str, asyncio.Task[Any]] = {}
        self._keeper: asyncio.Task[Any] | None = None
        self.upkeep_rounds = 0

    async def _execute(self, *args: Any) -> Any:
        return await self.redis.client().execute_command(*args)  # type: ignore[no-untyped-call]

    @property
    def heartbeat_key(self) -> str:
        """The key whose TTL says this consumer is alive: ``<prefix>:consumer:<uid>``."""
        return f'{self.prefix}:consumer:{self.uid}'

    def stream(self, name: str) -> str:
        """The stream key of queue *name*."""
        return f'{self.prefix}:{name}'

    # -- sending -------------------------------------------------------------------

    async def send(self, name: str, message: str, *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None) -> None:
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        checked = check_headers(headers)
        try:
            if checked:
                await self._lane.execute('XADD', self.stream(name), '*', *fields(message, message_id, checked))
                return
            head = self._heads.get(name)
            if head is None:
                head = self._heads[name] = b'*7\r\n' + pack_args('XADD', self.stream(name), '*', 'b')
            data, mid = message.encode(), message_id.encode()
            await self._lane.execute('XADD', self.stream(name), '*', 'b', message, 'i', message_id,
                                     raw=b'%s$%d\r\n%s\r\n$1\r\ni\r\n$%d\r\n%s\r\n' % (
                                         head, len(data), data, len(mid), mid))
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot send to {name}') from None

    async def send_many(self, name: str, messages: Sequence[str], *, headers: Mapping[str, str] | None = None,
                        message_ids: Sequence[str] | None = None) -> None:
        stream = self.stream(name)
        await self._add_many([stream] * len(messages), message_ids_for(messages, message_ids), list(messages),
                             check_headers(headers))

    async def publish(self, exchange: str, message: str, topic: str | None = None, *,
                      headers: Mapping[str, str] | None = None, message_id: str | None = None) -> None:
        # One script: every bound queue gets the message or none does, all with one id.
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        streams = [self.stream(q.name) for q in self.catalog.route(exchange, topic)]
        await self._add_many(streams, [message_id] * len(streams), [message] * len(streams), check_headers(headers))

    async def _add_many(self, streams: list[str], ids: list[str], messages: list[str],
                        headers: dict[str, str]) -> None:
        # One script call per batch: one reply to parse instead of one per message.
        encoded = encode_headers(headers) if headers else ''
        try:
            for start in range(0, len(messages), _BATCH):
                args: list[str] = [encoded]
                for message_id, message in zip(ids[start:start + _BATCH], messages[start:start + _BATCH], strict=True):
                    args += (message_id, message)
                await ADD_MANY.run(self._lane.execute, streams[start:start + _BATCH], args)
        except RedisError as exc:
            raise self.redis.error(exc, 'cannot send') from None

    # -- inspecting ----------------------------------------------------------------

    async def queue_length(self, name: str, **options: Any) -> int:
        stream = self.stream(name)
        try:
            return int(await QUEUE_LENGTH.run(self._execute, [stream, f'{stream}.delayed'], [name]))
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot measure {name}') from None

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        try:
            entries = await self.redis.client().xrange(f'{self.stream(name)}.dlq', count=limit)
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot read dead letters of {name}') from None
        return [dead_letter(found or {}) for _, found in entries or ()]

    # -- consuming -----------------------------------------------------------------

    async def bind(self, name: str) -> None:
        reader = self._states[name] = QueueReader(self, name)
        self._start_reader(name, reader.run(self._runners[name]))
        self._pumps[name] = self._tasks.spawn(reader.pump(), name=f'RedisBroker retries {name}')
        keeper = self._keeper
        if keeper is None or keeper.done() or keeper.get_loop() is not asyncio.get_running_loop():
            self._keeper = self._tasks.spawn(self._keep_alive(), name='RedisBroker heartbeat')

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        await cancel_task(self._pumps.pop(name, None))
        cut = await super().unbind(name, timeout)
        reader = self._states.pop(name, None)
        if reader is not None:
            await reader.give_back()
        return cut

    async def close(self) -> None:
        """Stop consumers (unfinished messages go back to the stream), then close connections."""
        await super().close()
        await cancel_task(self._keeper)
        self._keeper = None
        if self.redis.active():
            try:
                async with asyncio.timeout(2):
                    await self.redis.client().delete(self.heartbeat_key)
            except (RedisError, TimeoutError) as exc:
                self.log.debug('RedisBroker: cannot remove heartbeat: %s', self.redis.describe(exc))
        await self._lane.close()
        await self._ack_lane.close()
        await self.redis.close()

    async def _keep_alive(self) -> None:
        """Refresh our heartbeat and claim the pending entries of dead consumers."""
        while self._runners:
            await asyncio.sleep(self.heartbeat_interval)  # each reader set the heartbeat when it started
            try:
                client = self.redis.client()
                await client.set(self.heartbeat_key, b'1', px=int(self.heartbeat_ttl * 1000))
                for state in list(self._states.values()):
                    await self._claim_dead(state)
            except (RedisError, OSError) as exc:
                self.log.warning('RedisBroker: heartbeat failed: %s', self.redis.describe(exc))
            self.upkeep_rounds += 1

    async def _claim_dead(self, state: QueueReader) -> None:
        client = self.redis.client()
        try:
            consumers = await client.xinfo_consumers(state.stream, state.name)
        except ResponseError:
            return  # no stream or group yet
        for info in consumers:
            name = info['name'].decode() if isinstance(info['name'], bytes) else str(info['name'])
            if name == self.uid or await client.exists(f'{self.prefix}:consumer:{name}'):
                continue
            if not info['pending']:
                await client.xgroup_delconsumer(state.stream, state.name, name)
                continue
            await self._claim_from(state, name)

    async def _claim_from(self, state: QueueReader, dead: str) -> None:
        runner = self._runners.get(state.name)
        attempts = runner.max_attempts if runner is not None else self.max_attempts
        moved = int(await CLAIM_DEAD.run(self._execute, [state.stream, state.dlq], [state.name, dead, attempts, 1000]))
        if moved:
            self.log.warning('RedisBroker: queue %s: requeued %d messages of dead consumer %s (attempt counted)',
                             state.name, moved, dead)
