"""Reading one Redis stream for a consumer: fetch, hand to the runner, settle.

Acks of handlers that finish quickly ride along with the reader's next
XREADGROUP (one write, one round trip for both); others are batched per loop
turn. Retries wait in a ZSET that :meth:`RedisQueueReader.pump` moves back into the
stream when due. Entries left in our pending list (a read cut by a lost
connection, a failed ack, a claim from a dead consumer) are read again from
``0`` before new ones, skipping those still in flight.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..._backoff import Backoff
from ..._message import NO_HEADERS, decode_headers, encode_headers
from ...delivery import ConsumerRunner, Delivery
from ...exceptions import BackendError, ConnectError
from ._connection import close_connection, command, pack
from ._scripts import ACK, DEAD_LETTER, FETCH, GIVE_BACK, PROMOTE, RELEASE, RETRY
from ._wire import Entry, entry, retry_member, unpack

if TYPE_CHECKING:
    from ._broker import RedisBroker

__all__ = ['RedisQueueReader']


class RedisQueueReader:
    """Reads one queue for one broker: fetching, acks, settling, retries due.

    Not run: needs a Redis server.
    >>> reader = RedisQueueReader(broker, 'mailer')            # doctest: +SKIP
    >>> broker._start_reader('mailer', reader.run(runner))  # doctest: +SKIP
    """

    def __init__(self, broker: RedisBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.stream = broker.stream(name)
        self.dlq = f'{self.stream}.dlq'
        self.delayed = f'{self.stream}.delayed'
        self.inflight: set[str] = set()
        self.rescan = True          # re-read our own pending entries before new ones
        self.scanning = False
        self.settled: set[str] = set()  # settled while a rescan reply may be on its way
        self.cursor = '0'
        self.retry_due = asyncio.Event()
        self.acks: list[str] = []   # acks collected by the current leader (see _ack)
        self.acked: asyncio.Future[None] | None = None
        self.collecting = False     # the reader is about to read: acks may ride along with its read
        self.riders: list[str] = []  # acked entries waiting to ride along with the next read
        self.backlog = False        # the last read was full: read the next batch without blocking
        self.reads = 0
        self.read_done = asyncio.Event()  # set after every read (a list drainer waits for room)
        self.connected = False  # connected and reading (readiness)
        # The outcome of the first connection: None (reading, or retrying a passing failure) or why it cannot.
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self, runner: ConsumerRunner) -> None:
        """The reader task: (re)connect with capped backoff, then read until stopped."""
        backoff = Backoff(self.broker.reconnect_delay, self.broker.max_reconnect_delay)
        lost_at: float | None = None
        while runner.active:
            conn: Connection | None = None
            reads = self.reads
            try:
                # A connection of its own: a blocking read never holds up sends or acks.
                conn = await self.broker.redis.connection(socket_timeout=self.broker.block + 10, key=self.stream)
                await self._prepare(conn)
                self._connected(True)
                if lost_at is not None:
                    self.broker.log.warning('RedisBroker: queue %s reading again after %.3fs', self.name,
                                            time.monotonic() - lost_at)
                    lost_at = None
                await self._consume(runner, conn)
            except (RedisError, OSError, BackendError) as exc:
                self.connected = False
                if isinstance(exc, ConnectError) and not self.first.done():
                    self.first.set_exception(exc)  # a refused login, an unknown host: bind raises it
                    return
                self._connected(False)
                if lost_at is None and self.reads > reads:
                    backoff.reset()  # it worked for a while: a fresh start
                lost_at = lost_at or time.monotonic()
                delay = backoff.next()
                self.broker.log.warning('RedisBroker: queue %s: %s; retrying in %.2fs', self.name,
                                        self.broker.redis.describe(exc), delay)
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            finally:
                await close_connection(conn)

    def _connected(self, up: bool) -> None:
        self.connected = up
        if not self.first.done():
            self.first.set_result(None)

    async def _prepare(self, conn: Connection) -> None:
        # The heartbeat exists before we own any entry: nobody may think us dead. Both in one write.
        heartbeat = ('SET', self.broker.heartbeat_key, b'1', 'PX', int(self.broker.heartbeat_ttl * 1000))
        create = pack('XGROUP', 'CREATE', self.stream, self.name, '0', 'MKSTREAM')
        first = pack(*heartbeat)
        if self.broker.redis.cluster:
            # The heartbeat key lies in another slot (on another master, maybe): through the cluster client.
            await self.broker.execute(*heartbeat)
            first = pack('PING')  # the same two replies to read below
        await command(conn, raw=first + create)
        try:
            await conn.read_response()
        except ResponseError as exc:
            if 'BUSYGROUP' not in str(exc):
                raise
        self.rescan, self.cursor = True, '0'

    async def _consume(self, runner: ConsumerRunner, conn: Connection) -> None:
        try:
            while runner.active:
                if not runner.free_slots:
                    await self._flush_riders()  # no read will come soon for them to ride on
                free = await runner.wait_slots()
                if free < runner.max_inflight // 2:
                    # Handlers finishing in this loop turn free their slots too: read one bigger batch.
                    await asyncio.sleep(0)
                    free = runner.free_slots or await runner.wait_slots()
                entries = await self._fetch(conn, free)
                for item in entries:
                    self.inflight.add(item[0])
                    runner.submit(_RedisDelivery(self, item))
                if entries:
                    # Quick handlers finish within one loop turn: their acks go out with the next read.
                    self.collecting = True
                    try:
                        await asyncio.sleep(0)
                    finally:
                        self.collecting = False
        finally:
            await self._flush_riders()

    async def _fetch(self, conn: Connection, count: int) -> list[Entry]:
        if self.rescan:
            await self._flush_riders()
            return await self._fetch_own(conn, count)
        backlog = self.backlog
        if backlog:  # more is waiting: a packed batch, no need to block
            read = pack('EVALSHA', FETCH.sha, 1, self.stream, self.name, self.broker.uid, count)
        else:
            read = pack('XREADGROUP', 'GROUP', self.name, self.broker.uid, 'COUNT', count,
                        'BLOCK', int(self.broker.block * 1000), 'STREAMS', self.stream, '>')
        try:
            if self.riders:
                reply = await self._ride(conn, read)
            else:
                reply = await command(conn, raw=read, timeout=self.broker.block + 10)
        except NoScriptError:
            # Loaded on this connection: the node that runs the reads (a cluster's new master after a failover).
            await command(conn, 'SCRIPT', 'LOAD', FETCH.text)
            return []
        entries = unpack(reply) if backlog else [entry(*item) for item in reply[0][1]] if reply else []
        self.backlog = len(entries) >= count
        self.reads += 1
        self.read_done.set()
        return entries

    async def _ride(self, conn: Connection, read: bytes) -> Any:
        """Send the waiting acks and the next read in one write: one round trip for both."""
        riders, self.riders = self.riders, []
        ack = pack('EVALSHA', ACK.sha, 1, self.stream, self.name, *riders)
        landed = False
        try:
            try:
                await command(conn, raw=ack + read)
                landed = True
            except NoScriptError:
                await ACK.run(self.broker.ack_lane.execute, [self.stream], [self.name, *riders])
                landed = True
            except asyncio.CancelledError:
                # Stopping: the acks were written and their reply is on its way; take it before leaving.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(2):
                        await conn.read_response()
                    landed = True
                raise
        finally:
            self._landed(riders, ok=landed)
        return await conn.read_response(timeout=self.broker.block + 10)

    async def _flush_riders(self) -> None:
        riders, self.riders = self.riders, []
        if not riders:
            return
        try:
            await ACK.run(self.broker.ack_lane.execute, [self.stream], [self.name, *riders])
        except BaseException as exc:
            self._landed(riders, ok=False)
            self.broker.log.warning('RedisBroker: queue %s: %d acks failed (%s); the messages come again',
                                    self.name, len(riders), self.broker.redis.describe(exc))
            if not isinstance(exc, Exception):
                raise
        else:
            self._landed(riders, ok=True)

    def _landed(self, riders: list[str], ok: bool) -> None:
        """Riders leave the in-flight set once their ack's fate is known; a lost ack means a rescan."""
        self.inflight.difference_update(riders)
        if not ok:
            self.rescan = True

    async def next_read(self, timeout: float) -> None:
        """Return after the next read of the stream, or after *timeout* seconds."""
        self.read_done.clear()
        try:
            async with asyncio.timeout(timeout):
                await self.read_done.wait()
        except TimeoutError:
            pass

    async def _fetch_own(self, conn: Connection, count: int) -> list[Entry]:
        """Our pending entries not in flight: reads cut by a lost connection, failed acks, claims."""
        self.scanning = True
        self.settled.clear()
        try:
            reply = await command(conn, 'XREADGROUP', 'GROUP', self.name, self.broker.uid, 'COUNT', count,
                                  'STREAMS', self.stream, self.cursor)
        finally:
            self.scanning = False
        entries = reply[0][1] if reply else []
        if len(entries) < count:
            self.rescan, self.cursor = False, '0'
        else:
            self.cursor = entries[-1][0].decode()
        found = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if entry_id in self.inflight or entry_id in self.settled:
                continue
            if not fields:  # deleted under us: nothing to handle, just forget it
                await self.broker.redis.client().xack(self.stream, self.name, entry_id)
                continue
            found.append(entry(raw_id, fields))
        return found

    async def settle(self, entry_id: str, script: Any) -> None:
        """Ack *entry_id* (``script`` None) or run ``(lua, keys, args)`` that settles it atomically."""
        if script is None and self.collecting:
            # The reader sends this ack with its next read, right after this loop turn. The handler
            # need not wait: the entry stays in flight (never read again) until the ack has landed,
            # and a lost ack only means the message comes again (at least once).
            self.riders.append(entry_id)
            return
        try:
            if script is None:
                await self._ack(entry_id)
            else:
                lua, keys, args = script
                await lua.run(self.broker.ack_lane.execute, keys, args)
        except BaseException:
            self.rescan = True  # still ours and pending: read it again
            raise
        finally:
            self.inflight.discard(entry_id)
            if self.scanning:
                self.settled.add(entry_id)

    async def _ack(self, entry_id: str) -> None:
        """Acks of handlers finishing in the same loop turn go out as one XACK + XDEL.

        The first becomes the leader: it lets the turn finish, then sends the
        batch; the others wait for its outcome. No task per ack.
        """
        acked = self.acked
        if acked is not None:
            self.acks.append(entry_id)
            await asyncio.shield(acked)
            return
        if len(self.inflight) <= 1:  # nobody else could join a batch
            await ACK.run(self.broker.ack_lane.execute, [self.stream], [self.name, entry_id])
            return
        acked = self.acked = asyncio.get_running_loop().create_future()
        acked.add_done_callback(_retrieve)
        self.acks = [entry_id]
        try:
            await asyncio.sleep(0)
            ids, self.acks, self.acked = self.acks, [], None
            await ACK.run(self.broker.ack_lane.execute, [self.stream], [self.name, *ids])
        except BaseException as exc:
            if self.acked is acked:
                self.acks, self.acked = [], None
            acked.set_exception(self.broker.redis.error(exc, f'cannot ack on {self.name}'))
            raise
        acked.set_result(None)

    async def give_back(self) -> None:
        """Requeue what we still own after the consumer stopped (reads cut mid-flight)."""
        try:
            async with asyncio.timeout(5):
                await GIVE_BACK.run(self.broker.execute, [self.stream], [self.name, self.broker.uid, 1000])
        except (RedisError, TimeoutError) as exc:
            self.broker.log.warning('RedisBroker: queue %s: cannot give back pending entries (%s); they are '
                                    'reclaimed when our heartbeat expires', self.name, self.broker.redis.describe(exc))

    async def pump(self) -> None:
        """Move due retries back into the stream, waking at the next due time."""
        wait = self.broker.retry_poll  # the first look waits too: start-up belongs to the reader
        while True:
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self.retry_due.wait()
                except TimeoutError:
                    pass
            self.retry_due.clear()
            wait = self.broker.retry_poll
            try:
                left = int(await PROMOTE.run(self.broker.execute, [self.stream, self.delayed], [100]))
                if left >= 0:
                    wait = min(wait, left / 1000)
            except RedisError as exc:
                self.broker.log.debug('RedisBroker: queue %s: cannot move retries: %s', self.name,
                                      self.broker.redis.describe(exc))


class _RedisDelivery(Delivery):
    __slots__ = ('_decoded', '_headers', '_reader')

    def __init__(self, reader: RedisQueueReader, item: Entry) -> None:
        entry_id, body, attempt, message_id, headers = item
        super().__init__(body, attempt, entry_id, message_id, decode_headers(headers) if headers else NO_HEADERS)
        self._reader = reader
        self._headers = headers  # as stored: copies keep them byte for byte
        self._decoded = self.headers

    def _stored(self) -> bytes:
        # Copies carry the headers as stored, unless the runner replaced them (a link to a failed attempt).
        if self.headers is self._decoded:
            return self._headers
        return encode_headers(self.headers).encode() if self.headers else b''

    async def ack(self) -> None:
        await self._reader.settle(self.copy_id, None)

    async def retry(self, delay: float, error: str) -> None:
        reader = self._reader
        member = retry_member(self.attempt + 1, self.copy_id, self.message_id, self._stored(), _bytes(self.body))
        args = [reader.name, self.copy_id, max(0, int(delay * 1000)), member]
        await reader.settle(self.copy_id, (RETRY, [reader.stream, reader.delayed], args))
        reader.retry_due.set()

    async def dead_letter(self, error: str) -> None:
        reader = self._reader
        args = [reader.name, self.copy_id, self.body, error, self.attempt, self.message_id, self._stored()]
        await reader.settle(self.copy_id, (DEAD_LETTER, [reader.stream, reader.dlq], args))

    async def release(self) -> None:
        reader = self._reader
        args = [reader.name, self.copy_id, self.body, self.attempt, self.message_id, self._headers]
        await reader.settle(self.copy_id, (RELEASE, [reader.stream], args))


def _bytes(body: bytes | str) -> bytes:
    return body if isinstance(body, bytes) else body.encode()


def _retrieve(future: asyncio.Future[None]) -> None:
    # Waiters may all be gone (cancelled): the error was handled by marking the queue for a rescan.
    if not future.cancelled():
        future.exception()
