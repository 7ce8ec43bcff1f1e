"""microagent 1.9's Redis queues: lists written with RPUSH and read with BLPOP, beside our streams.

A 1.9 queue is the list ``<queue>`` (no prefix), each item a JSON body. Ours is
the stream ``<prefix>:<queue>``. This module moves messages from the list into
the stream, where our consumers take them with every guarantee of the stream
(acks, retries, dead letters, a dead consumer's messages reclaimed):

* :data:`DRAIN` pops up to N items and XADDs each in one Lua script: Redis runs
  a script as a whole, so an item is in the list or in the stream, never lost
  between them and never in both;
* a consumer in ``microagent1`` mode waits for new items with ``BLMOVE`` into
  ``<prefix>:<queue>.draining`` (the only way to block on a list), then drains.
  A crash between the two leaves the item in ``.draining``, which every drain
  empties first: nothing is lost;
* a consumer drains no more than it has room for (the stream's backlog is kept
  under its ``max_inflight``), so 1.9 consumers of the same list keep their share;
* ``microagent migrate-queue SETTINGS NAME`` and native consumers (on bind, then
  every second) move whatever is left: a fleet moves to streams without losing
  what 1.9 producers still push.

Not run: needs a Redis server.
>>> drainer = ListDrainer(broker, 'mailer')   # doctest: +SKIP
>>> await drainer.drain()                      # doctest: +SKIP
12
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, ResponseError

from ..._backoff import Backoff
from ...exceptions import BackendError
from ._connection import close_connection, command
from ._scripts import Lua

if TYPE_CHECKING:
    from ...delivery import ConsumerRunner
    from ._broker import RedisBroker

__all__ = ['DRAIN', 'PUSH_MANY', 'ListDrainer', 'draining_key']

# KEYS: list, draining list, stream. ARGV: at most this many, consumer group, backlog cap (0: none).
# The draining list first: what a consumer took with BLMOVE and did not move yet (it may have died).
# Returns how many moved, or -1 when the stream's backlog (entries no consumer took yet) is at the cap.
DRAIN = Lua("""
local limit, cap = tonumber(ARGV[1]), tonumber(ARGV[3])
if cap > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  local backlog = redis.call('XLEN', KEYS[3])
  local p = redis.pcall('XPENDING', KEYS[3], ARGV[2])
  if type(p) == 'table' and not p.err then backlog = backlog - p[1] end
  if backlog >= cap then return -1 end
  limit = math.min(limit, cap - backlog)
end
local n = 0
for _, key in ipairs({KEYS[2], KEYS[1]}) do
  if n < limit and redis.call('TYPE', key)['ok'] == 'list' then
    local items = redis.call('LPOP', key, limit - n)
    if items then
      for _, body in ipairs(items) do redis.call('XADD', KEYS[3], '*', 'b', body) end
      n = n + #items
    end
  end
end
return n
""")

# KEYS: lists (one per body). ARGV: bodies. Every list gets its message or none does (an exchange's queues).
PUSH_MANY = Lua("""
for i = 1, #ARGV do redis.call('RPUSH', KEYS[i], ARGV[i]) end
return #ARGV
""")


def draining_key(prefix: str, name: str) -> str:
    """Where a ``microagent1`` consumer's BLMOVE puts an item before it is drained into the stream."""
    return f'{prefix}:{name}.draining'


class ListDrainer:
    """Moves the 1.9 list of one queue into its stream, for one broker."""

    def __init__(self, broker: RedisBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.keys = [name, draining_key(broker.prefix, name), broker.stream(name)]

    async def drain(self, limit: int = 1000, cap: int = 0) -> int:
        """Move up to *limit* items (a stream backlog under *cap*, 0: no cap); how many moved, -1: at the cap."""
        return int(await DRAIN.run(self.broker.execute, self.keys, [limit, self.name, cap]))

    async def drain_all(self) -> int:
        """Move everything there is now; how many moved."""
        total = 0
        while (moved := await self.drain()) > 0:
            total += moved
        return total

    async def poll(self, interval: float) -> None:
        """Native consumers: drain now, then every *interval* seconds (what 1.9 producers still push)."""
        while True:
            try:
                moved = await self.drain_all()
                if moved:
                    self.broker.log.info('RedisBroker: moved %d messages of the microagent 1.9 list %s into its '
                                         'stream', moved, self.name)
            except RedisError as exc:
                # Debug only: the stream reader of the same queue reports a lost connection already.
                self.broker.log.debug('RedisBroker: cannot drain the list %s: %s', self.name,
                                      self.broker.redis.describe(exc))
            await asyncio.sleep(interval)  # a poll period, not synchronisation

    async def follow(self, runner: ConsumerRunner, took: Any) -> None:
        """``microagent1`` consumers: take list items as they come, no more than there is room for.

        *took* is awaited (with a timeout) after a full backlog: it returns once
        the stream reader took entries, so there may be room again.
        """
        backoff = Backoff(self.broker.reconnect_delay, self.broker.max_reconnect_delay)
        while runner.active:
            conn: Connection | None = None
            started = time.monotonic()
            try:
                conn = await self.broker.redis.connection(socket_timeout=self.broker.block + 10)
                await self._follow(conn, runner, took)
            except ResponseError as exc:  # e.g. the key holds another type: not ours to fix, keep trying
                self.broker.log.error('RedisBroker: cannot read the list %s: %s', self.name, exc)
                await asyncio.sleep(self.broker.retry_poll)  # a poll period, not synchronisation
            except (RedisError, OSError, BackendError) as exc:
                if time.monotonic() - started > self.broker.max_reconnect_delay:
                    backoff.reset()
                delay = backoff.next()
                self.broker.log.warning('RedisBroker: list %s: %s; retrying in %.2fs', self.name,
                                        self.broker.redis.describe(exc), delay)
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            finally:
                await close_connection(conn)

    async def _follow(self, conn: Connection, runner: ConsumerRunner, took: Any) -> None:
        cap = runner.max_inflight
        while runner.active:
            free = await runner.wait_slots()
            moved = await self.drain(free, cap)
            if moved > 0:
                continue
            if moved < 0:
                await took(self.broker.block)
                continue
            # Empty: block until an item comes. It lands in .draining; the next drain moves it.
            await command(conn, 'BLMOVE', self.name, self.keys[1], 'LEFT', 'RIGHT', self.broker.block,
                          timeout=self.broker.block + 10)
