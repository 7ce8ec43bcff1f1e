"""PostgresEffects: exactly-once effects for consumers, with an inbox and a transactional outbox.

    effects = PostgresEffects('postgresql://app@db/app')

    class Orders(MicroAgent):
        @consumer(queues.orders, effects=effects)
        async def handle(self, tx, order_id: int, **_):
            await tx.execute('INSERT INTO orders (id) VALUES ($1)', order_id)
            await tx.broker.billing.send({'order_id': order_id})

Per delivery, on one pooled connection: ``BEGIN`` and the inbox row of the
message in one round trip (its key, a UUID digest, is the only value put into
the SQL text); if the row was already there the message was handled and
committed before, so the transaction is rolled back and the delivery acked
without calling the handler. Otherwise the handler runs with ``tx``; its
staged sends are written to the outbox and ``NOTIFY`` + ``COMMIT`` go in one
more round trip. Any exception, a timeout or a cancellation rolls the whole
transaction back (a cancelled one by closing the connection, with no further
round trip) and the runner retries the message as it would any failure.
See docs/exactly-once.md.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._dsn import mask_dsn
from .._tasks import TaskSet
from ..catalog import DEFAULT_CATALOG, Catalog
from ..exceptions import BackendNotInstalled, ConfigurationError, EffectsError
from ._contract import delivery_id
from ._guard import rolled_back_on_error
from ._ids import inbox_key
from ._outbox import write_staged
from ._schema import SCHEMA_VERSION, Tables, schema_version
from ._transaction import Transaction

if TYPE_CHECKING:
    import asyncpg

    from ..broker import Consumer
    from ..delivery import Delivery
    from ._relay import Relay
    from ._types import Connection

__all__ = ['ISOLATION_LEVELS', 'PostgresEffects']

ISOLATION_LEVELS = {'read committed': 'READ COMMITTED', 'repeatable read': 'REPEATABLE READ',
                    'serializable': 'SERIALIZABLE'}
DAY = 86400.0
_QUEUE_NAME = re.compile(r'^[a-z_][a-z0-9_]*$')


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        raise BackendNotInstalled('PostgresEffects needs asyncpg: pip install "microagent[postgres]"') from exc
    return asyncpg


class PostgresEffects:
    """The ``effects=`` of consumers whose writes and sends must happen once: a PostgreSQL database.

    ``dsn``: ``postgresql://user:pw@host:5432/db`` (asyncpg's URI; PG* variables fill the gaps).
    ``prefix``/``schema``: where the tables are (``microagent db init`` creates them).
    ``isolation``: ``'read committed'`` (default), ``'repeatable read'`` or ``'serializable'``
    (serialization failures are retried like any failure). ``retention``: seconds an inbox row is kept
    (default 7 days; it must outlast any redelivery). ``relay``: agents run a relay for this outbox
    (default True); ``relay_options`` go to :class:`Relay`. ``statement_timeout``: for the library's own
    statements; ``connect_timeout``. Other keywords go to ``asyncpg.create_pool`` (``min_size`` 1,
    ``max_size`` 10, ``statement_cache_size``...).

    Not run: needs PostgreSQL (and the backends of the broker and bus).
    >>> effects = PostgresEffects('postgresql://app@localhost/app', max_size=20)   # doctest: +SKIP
    >>> async with effects.transaction() as tx:                                   # doctest: +SKIP
    ...     await tx.execute('INSERT INTO signups (email) VALUES ($1)', email)
    ...     await tx.broker.mailer.send({'to': email})
    """

    def __init__(self, dsn: str, *, prefix: str = 'microagent_', schema: str | None = None,
                 isolation: str = 'read committed', retention: float = 7 * DAY, relay: bool = True,
                 relay_options: dict[str, Any] | None = None, statement_timeout: float = 30.0,
                 connect_timeout: float = 10.0, catalog: Catalog | None = None,
                 log: logging.Logger | None = None, **pool_options: Any) -> None:
        if isolation.lower() not in ISOLATION_LEVELS:
            raise ConfigurationError(f'effects: isolation {isolation!r}, expected one of {sorted(ISOLATION_LEVELS)}')
        if retention <= 0 or statement_timeout <= 0 or connect_timeout <= 0:
            raise ConfigurationError('effects: retention, statement_timeout and connect_timeout must be > 0')
        self.dsn = dsn
        self.tables = Tables(prefix, schema)
        self.isolation = ISOLATION_LEVELS[isolation.lower()]
        self.retention = float(retention)
        self.relay_enabled = relay
        self.relay_options = dict(relay_options or {})
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.catalog = catalog or DEFAULT_CATALOG
        self.log = log or logging.getLogger('microagent.effects')
        # Connections come back to the pool at the end of a transaction (COMMIT, ROLLBACK or closed), so the
        # pool skips asyncpg's reset query (a round trip per use); see docs/exactly-once.md on session state.
        self.pool_options = {'min_size': 1, 'max_size': 10, 'reset': _transaction_scoped, **pool_options}
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._agents: list[Any] = []
        self._relay: Relay | None = None
        self._reapers = TaskSet('effects: abandoned backends')
        self._begin = f'BEGIN ISOLATION LEVEL {self.isolation}'
        self._inbox_statement = f'microagent_inbox_{self.tables.schema or ""}_{self.tables.prefix}'
        self._notify_commit = f'NOTIFY {self.tables.channel}; COMMIT'

    def __repr__(self) -> str:
        return f'<PostgresEffects {mask_dsn(self.dsn)} tables={self.tables.prefix}*>'

    __str__ = __repr__

    # -- connections ---------------------------------------------------------------

    async def pool(self) -> asyncpg.Pool:
        """The connection pool of the running event loop (opened on first use, tables checked once)."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is not None and self._loop is loop:
            return pool
        if self._loop is not loop:
            # A pool belongs to one event loop; one made in another loop (a previous test) is dropped.
            self._loop, self._pool, self._opening = loop, None, asyncio.Lock()
        opening = self._opening
        if opening is None:
            raise EffectsError('effects: no pool lock for this event loop')
        async with opening:
            if self._pool is None:
                self._pool = await self._open_pool()
            return self._pool

    async def _open_pool(self) -> asyncpg.Pool:
        # The tables first, on a connection of its own: the pool's connections prepare a statement on them.
        connection = await self.connect()
        try:
            version = await schema_version(connection, self.tables, timeout=self.statement_timeout)
        finally:
            await connection.close(timeout=self.statement_timeout)
        if version != SCHEMA_VERSION:
            raise ConfigurationError(f'effects tables {self.tables.prefix}* are missing or at version {version} '
                                     f'(expected {SCHEMA_VERSION}): run `microagent db init`')
        options = {'server_settings': {'application_name': 'microagent'}, **self.pool_options}
        options['init'] = self._initializer(options.get('init'))
        pool: asyncpg.Pool = await _asyncpg().create_pool(self.dsn, timeout=self.connect_timeout, **options)
        return pool

    def _initializer(self, theirs: Any) -> Any:
        """The pool's ``init``: prepare the inbox insert on each new connection (then the caller's ``init``)."""
        prepare = (f'PREPARE {self._inbox_statement}(uuid, text) AS INSERT INTO {self.tables.inbox} (key, queue) '
                   'VALUES ($1, $2) ON CONFLICT DO NOTHING')

        async def init(connection: Any) -> None:
            # A generic plan, made once per connection: the hot path then only binds and executes it.
            await connection.execute(prepare, timeout=self.statement_timeout)
            if theirs is not None:
                await theirs(connection)
        return init

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own (not pooled) with the same settings: the relay's LISTEN, the CLI."""
        connection: asyncpg.Connection = await _asyncpg().connect(
            self.dsn, timeout=self.connect_timeout, server_settings={'application_name': 'microagent'})
        return connection

    async def close(self) -> None:
        """Stop the relay and close the pool (both come back when used again)."""
        relay, self._relay = self._relay, None
        if relay is not None:
            await relay.stop()
        await self._reapers.drain(self.statement_timeout)
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await _close_pool(pool)

    # -- consumers (the Effects protocol of microagent.delivery) ------------------------

    async def run(self, consumer: Consumer, delivery: Delivery, kwargs: dict[str, Any]) -> bool:
        """Handle *delivery* in a transaction with its inbox row; False if it was handled before."""
        queue = consumer.queue.name
        if not _QUEUE_NAME.match(queue):
            raise ConfigurationError(f'effects: queue name {queue!r} must match [a-z_][a-z0-9_]*')
        message_id = delivery_id(delivery)
        key = inbox_key(queue, message_id)
        # One round trip: BEGIN and the inbox row (the statement prepared on every pooled connection). Only
        # the UUID and the checked queue name enter the text.
        begin = f"{self._begin}; EXECUTE {self._inbox_statement}('{key}', '{queue}')"
        pool = await self.pool()
        # No timeout per statement here: the consumer's timeout (its watchdog) bounds the whole call.
        async with pool.acquire() as connection, self.guard(connection):
            if await self._begin_with_inbox(connection, begin) == 'INSERT 0 0':
                await connection.execute('ROLLBACK')
                self.log.info('%s: message %s was handled before: acked without running the handler again',
                              queue, message_id)
                return False
            catalog = getattr(consumer.agent.broker, 'catalog', None) or self.catalog
            tx = Transaction(connection, catalog, message_id, queue)
            await consumer.handler(**kwargs, tx=tx)
            await self._commit(connection, tx, None)
        return True

    async def _begin_with_inbox(self, connection: Connection, begin: str) -> str:
        try:
            return str(await connection.execute(begin))
        except _asyncpg().InvalidSQLStatementNameError:
            # The prepared statement is gone (DEALLOCATE or DISCARD on tx.connection): this connection is
            # closed, and the retry gets a fresh one from the pool, prepared again.
            connection.terminate()
            raise

    async def start(self, agent: Any) -> None:
        """An agent starts consuming with these effects: the first one starts the relay (``relay=True``)."""
        self._agents.append(agent)
        if self.relay_enabled and self._relay is None and getattr(agent, 'broker', None) is not None:
            self._relay = self.relay(agent.broker, getattr(agent, 'bus', None), **self.relay_options)
            await self._relay.start()

    async def stop(self, agent: Any) -> None:
        """An agent stopped: the last one stops the relay and closes the pool."""
        self._agents = [a for a in self._agents if a is not agent]
        if not self._agents:
            await self.close()

    # -- transactions ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self, *, catalog: Catalog | None = None,
                          timeout: float | None = None) -> AsyncIterator[Transaction]:
        """A transaction outside handlers (a web request): commits when the block ends, or rolls back.

        ``timeout`` bounds the wait for a pooled connection (default ``statement_timeout``).

        Not run: needs PostgreSQL (and the backends of the broker and bus).
        >>> async with effects.transaction() as tx:                    # doctest: +SKIP
        ...     await tx.execute('INSERT INTO users (email) VALUES ($1)', email)
        ...     await tx.broker.welcome.send({'email': email})
        """
        pool = await self.pool()
        async with pool.acquire(timeout=timeout or self.statement_timeout) as connection, self.guard(connection):
            await connection.execute(self._begin, timeout=self.statement_timeout)
            tx = Transaction(connection, catalog or self.catalog, uuid.uuid4().hex)
            yield tx
            await self._commit(connection, tx, self.statement_timeout)

    def relay(self, broker: Any, bus: Any = None, **options: Any) -> Relay:
        """A relay publishing this outbox through *broker* (queues, exchanges) and *bus* (signals).

        Not run: needs PostgreSQL (and the backends of the broker and bus).
        >>> relay = effects.relay(broker, bus)    # doctest: +SKIP
        >>> await relay.start()                   # doctest: +SKIP
        """
        from ._relay import Relay
        return Relay(self, broker, bus, **options)

    async def _commit(self, connection: Connection, tx: Transaction, timeout: float | None) -> None:
        if tx.staged:
            await write_staged(connection, self.tables, tx.staged, timeout=timeout)
            status = await connection.execute(self._notify_commit, timeout=timeout)
        else:
            status = await connection.execute('COMMIT', timeout=timeout)
        if status != 'COMMIT':
            # COMMIT of a transaction in which a statement failed (and the handler caught it) is a ROLLBACK.
            raise EffectsError(f'the database rolled the transaction back ({status}): a statement in it failed')

    def guard(self, connection: Connection) -> contextlib.AbstractAsyncContextManager[None]:
        """Roll back if the block raises; if it is cancelled, close *connection* and end its backend."""
        return rolled_back_on_error(connection, self.statement_timeout, self.log, self._reap)

    def _reap(self, pid: int) -> None:
        self._reapers.spawn(self._terminate_backend(pid), name=f'effects: end backend {pid}')

    async def _terminate_backend(self, pid: int) -> None:
        try:
            async with asyncio.timeout(self.statement_timeout):
                pool = await self.pool()
                await pool.execute('SELECT pg_terminate_backend($1)', pid)
        except Exception as exc:  # noqa: BLE001 - then the backend ends with its statement
            self.log.debug('effects: cannot end backend %d: %s', pid, type(exc).__name__)


async def _transaction_scoped(connection: Any) -> None:
    """The pool's reset: none beyond asyncpg's own (it rolls back a transaction left open)."""


async def _close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, OSError):
        pool.terminate()
