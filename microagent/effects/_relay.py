"""The relay: publishes committed outbox rows through a broker and a bus, then deletes them.

One pass, in one transaction on a pooled connection::

    lock the oldest row of up to `destinations` destinations  FOR UPDATE SKIP LOCKED
    read up to `batch` rows of those destinations              in seq order
    publish them, each destination in order (destinations side by side)
    delete what was published; COMMIT

Holding a destination's oldest row is holding the destination: another relay
(a replica) skips it and takes other destinations, so the work is shared and
each destination's rows go out in their order. A relay that dies after
publishing and before its commit leaves the rows in place and unlocked: they
are published again, under the same message ids, and the receiving inbox
keeps one. A failed publish stops its destination (what went out before it is
deleted) and the relay backs off.

The relay wakes at once on ``NOTIFY`` from a committing transaction (a
``LISTEN`` connection of its own, reopened when lost) and polls every
``poll_interval`` seconds anyway, so a lost notification or listener only
delays a row. Every ``prune_interval`` it also deletes inbox rows older than
the effects' ``retention``.

Not run: needs PostgreSQL (and the backends of the broker and bus).
>>> relay = effects.relay(broker, bus, poll_interval=1.0)   # doctest: +SKIP
>>> await relay.start(); ...; await relay.stop()            # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .._backoff import Backoff
from .._dsn import mask_text
from .._tasks import TaskSet, cancel_task
from ..exceptions import ConfigurationError
from ._contract import publish
from ._outbox import Staged
from ._schema import prune_inbox

if TYPE_CHECKING:
    import asyncpg

    from ._effects import PostgresEffects

__all__ = ['Relay']


class Relay:
    """Publishes the outbox of *effects* through *broker* and *bus*; see the module docstring.

    ``batch``: rows per pass (100); ``destinations``: destinations locked per pass (16);
    ``poll_interval`` (1 s); ``publish_timeout`` per message (10 s); ``max_backoff`` after failures
    (10 s); ``prune_interval`` (600 s; 0: never prune).

    Not run: needs PostgreSQL (and the backends of the broker and bus).
    >>> relay = Relay(effects, broker, bus)   # doctest: +SKIP
    >>> await relay.run_once()                # doctest: +SKIP
    3
    """

    def __init__(self, effects: PostgresEffects, broker: Any, bus: Any = None, *, batch: int = 100,
                 destinations: int = 16, poll_interval: float = 1.0, publish_timeout: float = 10.0,
                 max_backoff: float = 10.0, prune_interval: float = 600.0,
                 log: logging.Logger | None = None) -> None:
        if batch < 1 or destinations < 1 or poll_interval <= 0 or publish_timeout <= 0 or prune_interval < 0:
            raise ConfigurationError('relay: batch and destinations must be >= 1, poll_interval and '
                                     'publish_timeout > 0, prune_interval >= 0')
        self.effects = effects
        self.broker = broker
        self.bus = bus
        self.batch = batch
        self.destinations = destinations
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self._failures = Backoff(0.1, max_backoff, floor=0.05)
        self.prune_interval = prune_interval
        self.log = log or effects.log
        self.published = 0
        self._tasks = TaskSet('effects relay')
        self._loop_task: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._pruned_at = time.monotonic()
        tables = effects.tables
        # The CTE is materialized so its row locks are taken once, before the rows are read.
        self._claim = (
            f'WITH heads AS MATERIALIZED (SELECT o.destination FROM (SELECT DISTINCT ON (destination) seq '
            f'FROM {tables.outbox} ORDER BY destination, seq) h JOIN {tables.outbox} o USING (seq) '
            f'FOR UPDATE OF o SKIP LOCKED LIMIT $1) '
            f'SELECT seq, destination, topic, body, message_id, headers FROM {tables.outbox} '
            f'WHERE destination IN (SELECT destination FROM heads) ORDER BY seq LIMIT $2')
        self._delete = f'DELETE FROM {tables.outbox} WHERE seq = ANY($1::bigint[])'

    def __repr__(self) -> str:
        return f'<Relay {self.effects!r} published={self.published}>'

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection is up (a NOTIFY wakes the relay at once)."""
        return self._listener is not None and not self._listener.is_closed()

    async def start(self) -> None:
        """Run the relay in the background until :meth:`stop`."""
        if not self.running:
            self._wake = asyncio.Event()
            self._loop_task = self._tasks.spawn(self._run(), name='effects relay')

    async def stop(self) -> None:
        """Stop the relay (a pass in progress is abandoned: its rows stay for the next relay)."""
        await cancel_task(self._loop_task)
        self._loop_task = None
        await self._tasks.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.terminate()

    def wake(self) -> None:
        """Run a pass now (what a NOTIFY does)."""
        self._wake.set()

    async def run_once(self) -> int:
        """One pass (see the module docstring); how many rows were published. Raises if a publish failed."""
        timeout = self.effects.statement_timeout
        pool = await self.effects.pool()
        async with pool.acquire(timeout=timeout) as connection, self.effects.guard(connection):
            await connection.execute('BEGIN', timeout=timeout)
            rows = await connection.fetch(self._claim, self.destinations, self.batch, timeout=timeout)
            done, error = await self._publish(rows)
            if done:
                await connection.execute(self._delete, done, timeout=timeout)
            await connection.execute('COMMIT', timeout=timeout)
        self.published += len(done)
        if error is not None:
            raise error
        return len(done)

    async def drain(self, timeout: float = 60.0) -> int:
        """Run passes until the outbox is empty (or *timeout*); how many rows were published."""
        total = 0
        async with asyncio.timeout(timeout):
            while published := await self.run_once():
                total += published
        return total

    async def _publish(self, rows: list[Any]) -> tuple[list[int], Exception | None]:
        groups: dict[str, list[Any]] = {}
        for row in rows:
            groups.setdefault(row['destination'], []).append(row)
        done: list[int] = []
        errors: list[Exception] = []

        async def in_order(group: list[Any]) -> None:
            for row in group:
                staged = Staged(row['destination'], row['body'], row['message_id'], row['topic'],
                                json.loads(row['headers']))
                try:
                    await publish(self.broker, self.bus, staged, self.publish_timeout)
                except Exception as exc:  # noqa: BLE001 - the rest of this destination waits for the next pass
                    errors.append(exc)
                    return
                done.append(row['seq'])

        # A TaskGroup owns the per-destination tasks and waits for all of them.
        async with asyncio.TaskGroup() as group:
            for rows_of_one in groups.values():
                group.create_task(in_order(rows_of_one))
        return done, errors[0] if errors else None

    # -- the background loop -----------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            await self._listen()
            try:
                while await self.run_once() >= self.batch:
                    pass
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the relay outlives database and broker outages
                failures += 1
                self.log.warning('effects relay: pass failed (%d in a row): %s', failures,
                                 mask_text(f'{type(exc).__name__}: {exc}'))
            await self._prune()
            delay = self.poll_interval if not failures else self._backoff(failures)
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _backoff(self, failures: int) -> float:
        # Full jitter: relays of a fleet do not come back in lock-step after a database restart.
        return self._failures.delay(failures)

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection; a failure is logged: the poll goes on without it."""
        if self._listener is not None and not self._listener.is_closed():
            return
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None
        try:
            self._listener = await self._open_listener()
        except Exception as exc:  # noqa: BLE001 - without notifications the relay still polls
            self.log.warning('effects relay: cannot LISTEN (polling every %gs): %s', self.poll_interval,
                             mask_text(f'{type(exc).__name__}: {exc}'))
            return
        self.wake()  # rows committed while nobody listened: one pass at once

    async def _open_listener(self) -> Any:
        listener = await self.effects.connect()
        try:
            await listener.add_listener(self.effects.tables.channel, self._notified)
        except BaseException:
            listener.terminate()
            raise
        return listener

    def _notified(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        self._wake.set()

    async def _prune(self) -> None:
        if not self.prune_interval or time.monotonic() - self._pruned_at < self.prune_interval:
            return
        self._pruned_at = time.monotonic()
        try:
            pool = await self.effects.pool()
            async with pool.acquire(timeout=self.effects.statement_timeout) as connection:
                pruned = await prune_inbox(connection, self.effects.tables, self.effects.retention)
        except Exception as exc:  # noqa: BLE001 - pruning waits for the next interval
            self.log.warning('effects relay: inbox pruning failed: %s', mask_text(f'{type(exc).__name__}: {exc}'))
            return
        if pruned:
            self.log.info('effects relay: pruned %d inbox rows older than %gs', pruned, self.effects.retention)
