"""The tables of the effects: their names, the migration that creates them, and the upkeep queries.

Three tables per *prefix* (default ``microagent_``), in a schema of the
user's choice (default: the connection's ``search_path``)::

    <prefix>inbox    key uuid (queue + message id), queue, handled_at     one row per handled message
    <prefix>outbox   seq, destination, topic, body, message_id, headers   one row per send not yet published
    <prefix>meta     key, value                                           schema_version

``microagent db init`` runs :func:`migrate`; it is idempotent (every
statement is ``IF NOT EXISTS``) and runs under an advisory lock, so several
processes may run it at once.

>>> Tables().inbox
'microagent_inbox'
>>> Tables(prefix='billing_', schema='app').outbox
'app.billing_outbox'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError

if TYPE_CHECKING:

    from ._types import Connection

__all__ = ['SCHEMA_VERSION', 'Tables', 'migrate', 'prune_inbox', 'schema_version', 'statements', 'status']

SCHEMA_VERSION = 1
_IDENTIFIER = re.compile(r'^[a-z_][a-z0-9_]*$')
# Taken around the migration so that replicas starting together do not race on CREATE ... IF NOT EXISTS.
_MIGRATION_LOCK = 0x6D6963726F  # 'micro'
PRUNE_BATCH = 10_000


def _identifier(what: str, value: str) -> str:
    # Names are put into SQL text, so only plain lower-case identifiers are allowed (no quoting games).
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or len(value) > 40:
        raise ConfigurationError(f'effects: {what} {value!r} must match [a-z_][a-z0-9_]* (at most 40 characters)')
    return value


@dataclass(frozen=True)
class Tables:
    """Where the effects tables live: ``prefix`` of the table names, ``schema`` (None: the search path)."""

    prefix: str = 'microagent_'
    schema: str | None = None

    def __post_init__(self) -> None:
        _identifier('prefix', self.prefix)
        if self.schema is not None:
            _identifier('schema', self.schema)

    def _name(self, table: str) -> str:
        return f'{self.schema}.{self.prefix}{table}' if self.schema else f'{self.prefix}{table}'

    @property
    def inbox(self) -> str:
        return self._name('inbox')

    @property
    def outbox(self) -> str:
        return self._name('outbox')

    @property
    def meta(self) -> str:
        return self._name('meta')

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel that wakes the relays of this outbox."""
        return f'{self.schema}_{self.prefix}outbox' if self.schema else f'{self.prefix}outbox'


def statements(tables: Tables) -> list[str]:
    """The DDL of schema version :data:`SCHEMA_VERSION`, one statement per item (what ``db init --sql`` prints)."""
    inbox, outbox, meta = tables.inbox, tables.outbox, tables.meta
    index = f'{tables.prefix}'
    out = [f'CREATE SCHEMA IF NOT EXISTS {tables.schema}'] if tables.schema else []
    return [
        *out,
        f'CREATE TABLE IF NOT EXISTS {meta} (key text PRIMARY KEY, value text NOT NULL)',
        # The key is a digest of (queue, message id): fixed size whatever the id, and the only value put
        # into the SQL text of the hot path (a UUID cannot carry a quote).
        f'CREATE TABLE IF NOT EXISTS {inbox} (key uuid PRIMARY KEY, queue text NOT NULL, '
        'handled_at timestamptz NOT NULL DEFAULT now())',
        # BRIN: rows arrive in time order, so pruning finds old rows at almost no cost per insert.
        f'CREATE INDEX IF NOT EXISTS {index}inbox_handled_at ON {inbox} USING brin (handled_at)',
        f'CREATE TABLE IF NOT EXISTS {outbox} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, '
        'destination text NOT NULL, topic text, body text NOT NULL, message_id text NOT NULL, '
        "headers jsonb NOT NULL DEFAULT '{}'::jsonb, created_at timestamptz NOT NULL DEFAULT now())",
        f'CREATE INDEX IF NOT EXISTS {index}outbox_destination ON {outbox} (destination, seq)',
        f"INSERT INTO {meta} (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}') "
        'ON CONFLICT (key) DO NOTHING',
    ]


async def migrate(connection: Connection, tables: Tables, timeout: float = 60.0) -> int:
    """Create the tables (idempotent); the schema version now in the database.

    Not run: needs PostgreSQL (and the backends of the broker and bus).
    >>> await migrate(await asyncpg.connect(dsn), Tables())   # doctest: +SKIP
    1
    """
    async with connection.transaction():
        await connection.execute('SELECT pg_advisory_xact_lock($1)', _MIGRATION_LOCK, timeout=timeout)
        for statement in statements(tables):
            await connection.execute(statement, timeout=timeout)
    version = await schema_version(connection, tables, timeout=timeout)
    if version is None or version > SCHEMA_VERSION:
        raise ConfigurationError(f'effects tables {tables.prefix}*: schema version {version} in the database, '
                                 f'this microagent knows {SCHEMA_VERSION}')
    return version


async def schema_version(connection: Connection, tables: Tables, timeout: float = 30.0) -> int | None:
    """The schema version recorded in the database, or None when the tables do not exist."""
    found = await connection.fetchval('SELECT to_regclass($1) IS NOT NULL', tables.meta, timeout=timeout)
    if not found:
        return None
    value = await connection.fetchval(f"SELECT value FROM {tables.meta} WHERE key = 'schema_version'",
                                      timeout=timeout)
    return int(value) if value is not None else None


async def prune_inbox(connection: Connection, tables: Tables, older_than: float,
                      timeout: float = 60.0) -> int:
    """Delete inbox rows handled more than *older_than* seconds ago, in batches; how many were deleted.

    A message redelivered after its row was pruned is handled again: *older_than* must be longer than any
    message can stay in a queue (dead-letter replays included).
    """
    total = 0
    while True:
        # Batches keep each transaction (and its locks and WAL) small on a big backlog.
        status = await connection.execute(
            f'DELETE FROM {tables.inbox} WHERE key IN (SELECT key FROM {tables.inbox} '
            f"WHERE handled_at < now() - make_interval(secs => $1) LIMIT {PRUNE_BATCH})",
            float(older_than), timeout=timeout)
        deleted = int(status.rsplit(' ', 1)[-1])
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


async def status(connection: Connection, tables: Tables, timeout: float = 30.0) -> dict[str, Any]:
    """What ``microagent db status`` prints: the version, inbox rows, pending outbox rows per destination."""
    version = await schema_version(connection, tables, timeout=timeout)
    if version is None:
        return {'tables': tables.prefix, 'schema_version': None, 'hint': 'run: microagent db init'}
    inbox = await connection.fetchrow(f'SELECT count(*) AS n, min(handled_at) AS oldest FROM {tables.inbox}',
                                      timeout=timeout)
    if inbox is None:  # an aggregate always returns one row
        raise ConfigurationError(f'effects tables {tables.prefix}*: cannot count the inbox')
    pending = await connection.fetch(f'SELECT destination, count(*) AS n, min(created_at) AS oldest '
                                     f'FROM {tables.outbox} GROUP BY destination ORDER BY destination',
                                     timeout=timeout)
    return {'tables': tables.prefix, 'schema': tables.schema, 'schema_version': version,
            'inbox_rows': inbox['n'], 'inbox_oldest': inbox['oldest'],
            'outbox_pending': {row['destination']: {'rows': row['n'], 'oldest': row['oldest']} for row in pending}}
