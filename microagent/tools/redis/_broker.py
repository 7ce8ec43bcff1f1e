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

microagent 1.9 queues are lists named ``<queue>``. With ``wire='microagent1'``
the broker sends with ``RPUSH`` to them, and its consumers move list items into
the stream as they come (``_lists``). Native consumers move what is left in a
list into the stream when they bind and every second after
(``drain_lists=False`` turns that off); ``migrate_queue`` moves a whole list.

On a Redis Cluster (``redis+cluster://``, :mod:`._cluster`) a queue's keys
carry its name as a hash tag (``<prefix>:{<queue>}``...), so each queue lives
on one master and every script stays on one slot; an exchange's queues may
live on different masters, so ``publish`` adds to each in turn (not all or
none); microagent 1.9's lists are not served there. ``min_replicas=N``
confirms each send only once N replicas have it (``WAIT``, :mod:`._confirm`).
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
from ...exceptions import ConfigurationError, ConnectError
from ...wire import MICROAGENT1, check_migration
from ._cluster import connector_for, hash_tagged
from ._confirm import ConfirmedWriter
from ._connection import RedisLane, pack_args
from ._lists import PUSH_MANY, ListDrainer, draining_key
from ._reader import RedisQueueReader
from ._scripts import ADD_MANY, CLAIM_DEAD, QUEUE_LENGTH
from ._wire import dead_letter, fields

__all__ = ['RedisBroker']

_BATCH = 1000  # messages per script call in send_many / publish


class RedisBroker(AbstractQueueBroker):
    """At-least-once queue broker on Redis Streams with consumer groups.

    Options beyond the common ones: ``prefix`` of every key, ``heartbeat_interval``
    and ``heartbeat_ttl`` (a consumer silent for ``heartbeat_ttl`` seconds is dead
    and its messages are reclaimed), ``block`` (seconds a read waits for new
    messages), ``reconnect_delay``/``max_reconnect_delay`` (capped backoff),
    ``drain_lists`` (native consumers move what microagent 1.9 producers push to
    the list ``<queue>`` into the stream; default on), ``min_replicas`` (a send
    is confirmed only once that many replicas have it, within
    ``replicas_timeout`` seconds, else BackendError; 0: no wait; the native
    wire's sends only: ``docs/scaling.md``).

    Not run: needs a Redis server.
    >>> broker = RedisBroker('redis://localhost/7')     # doctest: +SKIP
    >>> await broker.user_created.send({'user_id': 1})  # doctest: +SKIP
    """

    def __init__(self, dsn: str, *, prefix: str = 'microagent', heartbeat_interval: float = 2.0,
                 heartbeat_ttl: float = 10.0, block: float = 1.0, reconnect_delay: float = 0.05,
                 max_reconnect_delay: float = 2.0, drain_lists: bool = True, min_replicas: int = 0,
                 replicas_timeout: float = 1.0, **options: Any) -> None:
        super().__init__(dsn, **options)
        if heartbeat_interval <= 0 or heartbeat_ttl < heartbeat_interval * 2 or block <= 0:
            raise ConfigurationError('RedisBroker: heartbeat_ttl must be at least twice heartbeat_interval (> 0), '
                                     'block > 0')
        if min_replicas < 0 or replicas_timeout <= 0:
            raise ConfigurationError('RedisBroker: min_replicas >= 0, replicas_timeout > 0')
        self.min_replicas = min_replicas
        self.replicas_timeout = replicas_timeout
        self.prefix = prefix
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.block = block
        self.retry_poll = 1.0  # how often due retries of other consumers (dead ones too) are looked for
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.drain_lists = drain_lists
        self.redis = connector_for(dsn, f'microagent.broker.{self.uid}', owner=type(self).__name__)
        if self.redis.cluster:
            if self.wire == MICROAGENT1:
                raise ConfigurationError("RedisBroker: microagent 1.9's lists (wire='microagent1') are not served "
                                         'on a Redis Cluster')
            self.drain_lists = False  # a 1.9 list lies in another slot than the stream: no script can move it
        # Senders and acks on lanes of their own: a producer and a consumer in one process never queue behind
        # each other. The ack lane is public: the queue readers settle their entries through it.
        self._lane = RedisLane(self.redis)
        self.ack_lane = RedisLane(self.redis)
        self._confirmed = ConfirmedWriter(self.redis)  # sends with min_replicas
        self._states: dict[str, RedisQueueReader] = {}
        self._heads: dict[str, bytes] = {}  # packed 'XADD <stream> * b' per queue: the send hot path
        self._pumps: dict[str, asyncio.Task[Any]] = {}
        self._drainers: dict[str, asyncio.Task[Any]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._keeper: asyncio.Task[Any] | None = None
        self.upkeep_rounds = 0

    async def execute(self, *args: Any) -> Any:
        """Run one Redis command on the pooled client (retried by redis-py on a lost connection)."""
        return await self.redis.client().execute_command(*args)  # type: ignore[no-untyped-call]

    @property
    def heartbeat_key(self) -> str:
        """The key whose TTL says this consumer is alive: ``<prefix>:consumer:<uid>``."""
        return f'{self.prefix}:consumer:{self.uid}'

    def stream(self, name: str) -> str:
        """The stream key of queue *name* (on a cluster, with the queue's name as hash tag)."""
        if self.redis.cluster:
            return hash_tagged(self.prefix, name)
        return f'{self.prefix}:{name}'

    # -- sending -------------------------------------------------------------------

    async def send(self, name: str, message: str, *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None, **options: Any) -> None:
        if options:
            self.check_options('send', options)
        if self.wire == MICROAGENT1:
            self._bare(name, headers)
            await self._push([name], [message])
            return
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        checked = check_headers(headers)
        try:
            if self.min_replicas:
                stream = self.stream(name)
                command = ('XADD', stream, '*', *fields(message, message_id, checked))
                await self._confirmed.write(stream, command, self.min_replicas, self.replicas_timeout)
                return
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
                        message_ids: Sequence[str] | None = None, **options: Any) -> None:
        if options:
            self.check_options('send_many', options)
        if self.wire == MICROAGENT1:
            self._bare(name, headers)
            await self._push([name] * len(messages), list(messages))
            return
        stream = self.stream(name)
        await self._add_many([stream] * len(messages), message_ids_for(messages, message_ids), list(messages),
                             check_headers(headers))

    async def publish(self, exchange: str, message: str, topic: str | None = None, *,
                      headers: Mapping[str, str] | None = None, message_id: str | None = None, **options: Any) -> None:
        # One script: every bound queue gets the message or none does, all with one id.
        if options:
            self.check_options('publish', options)
        names = [q.name for q in self.catalog.route(exchange, topic)]
        if self.wire == MICROAGENT1:
            self._bare(exchange, headers)
            await self._push(names, [message] * len(names))
            return
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        streams = [self.stream(name) for name in names]
        if self.redis.cluster:
            for stream in streams:  # each queue on its own slot: one at a time
                await self._add_many([stream], [message_id], [message], check_headers(headers))
            return
        await self._add_many(streams, [message_id] * len(streams), [message] * len(streams), check_headers(headers))

    def _bare(self, name: str, headers: Mapping[str, str] | None) -> None:
        """microagent 1.9's lists hold the body alone: headers (and message ids) are not carried."""
        if headers and ('headers', name) not in self._warned:
            self._warned.add(('headers', name))
            self.log.warning('RedisBroker: %s: wire microagent1 carries the body only, headers are not sent '
                             '(logged once)', name)

    async def _push(self, lists: list[str], messages: list[str]) -> None:
        """microagent 1.9's queues: RPUSH to the lists (in one script when several: all or none)."""
        try:
            if len(lists) == 1:
                await self._lane.execute('RPUSH', lists[0], messages[0])
                return
            for start in range(0, len(messages), _BATCH):
                await PUSH_MANY.run(self._lane.execute, lists[start:start + _BATCH], messages[start:start + _BATCH])
        except RedisError as exc:
            raise self.redis.error(exc, 'cannot send') from None

    async def _add_many(self, streams: list[str], ids: list[str], messages: list[str],
                        headers: dict[str, str]) -> None:
        # One script call per batch: one reply to parse instead of one per message.
        encoded = encode_headers(headers) if headers else ''
        try:
            for start in range(0, len(messages), _BATCH):
                args: list[str] = [encoded]
                for message_id, message in zip(ids[start:start + _BATCH], messages[start:start + _BATCH], strict=True):
                    args += (message_id, message)
                keys = streams[start:start + _BATCH]
                if self.min_replicas:
                    await self._confirmed.write(keys[0], ('EVAL', ADD_MANY.text, len(keys), *keys, *args),
                                                self.min_replicas, self.replicas_timeout)
                else:
                    await ADD_MANY.run(self._lane.execute, keys, args)
        except RedisError as exc:
            raise self.redis.error(exc, 'cannot send') from None

    # -- inspecting ----------------------------------------------------------------

    async def queue_length(self, name: str, **options: Any) -> int:
        """Messages waiting: in the stream, its retries, and the microagent 1.9 list of the queue."""
        stream = self.stream(name)
        keys = [stream, f'{stream}.delayed']
        if not self.redis.cluster:  # the 1.9 lists lie in other slots of a cluster (and are not served there)
            keys += [name, draining_key(self.prefix, name)]
        try:
            return int(await QUEUE_LENGTH.run(self.execute, keys, [name]))
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot measure {name}') from None

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        try:
            entries = await self.redis.client().xrange(f'{self.stream(name)}.dlq', count=limit)
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot read dead letters of {name}') from None
        return [dead_letter(found or {}) for _, found in entries or ()]

    # -- consuming -----------------------------------------------------------------

    async def migrate_queue(self, name: str) -> int:
        """Move every message of the microagent 1.9 list ``<name>`` into the stream; how many moved.

        Safe to run while producers and consumers of either version work:
        each message moves atomically (it is in the list or in the stream).

        Not run: needs a Redis server.
        >>> await broker.migrate_queue('mailer')   # doctest: +SKIP
        12
        """
        self.catalog.queue(name)  # QueueNotFound for an undeclared queue
        check_migration(repr(self), self.wire)
        if self.redis.cluster:
            raise ConfigurationError(f"{self!r}: microagent 1.9's lists are not served on a Redis Cluster (a list "
                                     'and its stream lie in different slots): migrate on one server first')
        try:
            return await ListDrainer(self, name).drain_all()
        except RedisError as exc:
            raise self.redis.error(exc, f'cannot migrate {name}') from None

    async def bind(self, name: str) -> None:
        reader = self._states[name] = RedisQueueReader(self, name)
        runner = self._runners[name]
        self._start_reader(name, reader.run(runner))
        self._pumps[name] = self._tasks.spawn(reader.pump(), name=f'RedisBroker retries {name}')
        drainer = ListDrainer(self, name)
        if self.wire == MICROAGENT1:
            self._drainers[name] = self._tasks.spawn(drainer.follow(runner, reader.next_read),
                                                     name=f'RedisBroker list {name}')
        elif self.drain_lists:
            self._drainers[name] = self._tasks.spawn(drainer.poll(self.retry_poll), name=f'RedisBroker list {name}')
        keeper = self._keeper
        if keeper is None or keeper.done() or keeper.get_loop() is not asyncio.get_running_loop():
            self._keeper = self._tasks.spawn(self._keep_alive(), name='RedisBroker heartbeat')
        try:
            # The first connection's outcome: a refused login or an unknown host fails the start at once.
            async with asyncio.timeout(self.block + 30):
                await asyncio.shield(reader.first)
        except ConnectError:
            await self.unbind(name, 0)
            raise
        except TimeoutError:
            reader.first.cancel()  # still connecting: the reader goes on, the consumer is not ready yet

    def consuming(self, name: str) -> bool:
        state = self._states.get(name)
        return state is not None and state.connected

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        await cancel_task(self._pumps.pop(name, None))
        await cancel_task(self._drainers.pop(name, None))
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
            # AttributeError: redis-py 5's cluster client right after a failed topology refresh (no default node).
            except (RedisError, OSError, TimeoutError, AttributeError) as exc:
                self.log.debug('RedisBroker: cannot remove heartbeat: %s', self.redis.describe(exc))
        await self._lane.close()
        await self.ack_lane.close()
        await self._confirmed.close()
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

    async def _claim_dead(self, state: RedisQueueReader) -> None:
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

    async def _claim_from(self, state: RedisQueueReader, dead: str) -> None:
        runner = self._runners.get(state.name)
        attempts = runner.max_attempts if runner is not None else self.max_attempts
        moved = int(await CLAIM_DEAD.run(self.execute, [state.stream, state.dlq], [state.name, dead, attempts, 1000]))
        if moved:
            self.log.warning('RedisBroker: queue %s: requeued %d messages of dead consumer %s (attempt counted)',
                             state.name, moved, dead)
