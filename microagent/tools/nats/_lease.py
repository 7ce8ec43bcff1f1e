"""Singleton lease on NATS: a key in a JetStream key-value bucket, updated only at the revision it was read at.

The lease ``name`` is the key ``lease`` of the bucket ``microagent-lease-<name>``
(``ttl`` is the bucket's max age: a key not written for ``ttl`` seconds
expires on the server). A replica takes the lease by *creating* the key (only
possible when it does not exist: never written, expired, or deleted by a
holder that stopped) and renews it by *updating* it at the revision of its
last write. An update at a stale revision fails: someone else holds it now.
The revision of the creating write is the fencing token (revisions only grow).

Each tick is also claimed on the server: the key ``tick`` of the shared bucket
``microagent-lease-ticks`` (no expiry) holds the last tick run; a replica runs a
tick only after renewing its holding and moving that key forward to the tick
at its current revision, so two replicas never run one tick, whatever the
clocks do.

Guarantee: with one server (or an R3 cluster, later) each tick runs at most
once. A holder that dies is replaced once its key expires: within ``ttl +
ttl / 3``. A holder that stops deletes the key: the next one takes over at its
next attempt.

Not run: needs a NATS server.
>>> lease = NATSLease('nats://localhost:4222', 'Agent.report', ttl=5)   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import re
import ssl
import uuid
from typing import Any

import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from ...lease import Lease
from ._connection import NATSConnector

__all__ = ['NATSLease']

TICKS_BUCKET = 'microagent-lease-ticks'
_BUCKET_CHARS = re.compile(r'[^A-Za-z0-9_-]')


def bucket_of(name: str) -> str:
    """A valid bucket name for lease *name* (readable, and unique through a short hash).

    >>> bucket_of('Agent.report')
    'microagent-lease-Agent_report-500f3f1c'
    """
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f'microagent-lease-{_BUCKET_CHARS.sub("_", name)[:48]}-{digest}'


class NATSLease(Lease):
    """A lease held by whoever last wrote its key at the right revision (own connection, lazy).

    Not run: needs a NATS server.
    >>> lease = NATSLease('nats://localhost:4222', 'Agent.report', ttl=5)   # doctest: +SKIP
    >>> await lease.start()                                                # doctest: +SKIP
    """

    def __init__(self, dsn: str, name: str, ttl: float, *, ssl_context: ssl.SSLContext | None = None,
                 **options: Any) -> None:
        super().__init__(dsn, name, ttl, **options)
        self.owner = uuid.uuid4().hex.encode()
        self.bucket = bucket_of(name)
        self.tick_key = bucket_of(name).removeprefix('microagent-lease-')
        self.revision: int | None = None
        timeout = max(1.0, self.renew_interval)
        self.nats = NATSConnector(dsn, f'microagent.lease.{name}', connect_timeout=timeout, ssl_context=ssl_context)
        self._kv: KeyValue | None = None
        self._ticks: KeyValue | None = None

    async def _connect(self) -> None:
        await self._open()

    async def _open(self) -> tuple[KeyValue, KeyValue]:
        if self.nats.current() is None:
            self._kv = self._ticks = None
        if self._kv is None or self._ticks is None:
            js = await self.nats.jetstream()
            self._kv = await _bucket(js, self.bucket, self.ttl)
            self._ticks = await _bucket(js, TICKS_BUCKET, None)
        return self._kv, self._ticks

    async def _attempt(self) -> bool:
        kv, _ = await self._open()
        if self.revision is not None:
            try:
                self.revision = await kv.update('lease', self.owner, last=self.revision)
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                self.revision = None  # taken by another replica after ours expired
        try:
            self.revision = await kv.create('lease', self.owner)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self.token = self.revision
        return True

    async def claim(self, tick: float) -> bool:
        """Held locally, still ours on the server, and *tick* moved the tick key forward."""
        if not self.held(tick) or not await self._attempt():
            return False
        _, ticks = await self._open()
        value = f'{tick:.6f}'.encode()
        try:
            entry = await ticks.get(self.tick_key)
        except nats.js.errors.KeyNotFoundError:
            try:
                await ticks.create(self.tick_key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            return True
        # Both sides as written (6 decimals): a tick rounded down must still equal itself.
        if entry.value and float(entry.value) >= float(value):
            return False
        try:
            await ticks.update(self.tick_key, value, last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def _release(self, was_held: bool) -> None:
        revision, self.revision = self.revision, None
        if was_held and revision is not None and self._kv is not None:
            await self._kv.delete('lease', last=revision)

    async def _close(self) -> None:
        self._kv = self._ticks = None
        await self.nats.close()


async def _bucket(js: Any, bucket: str, ttl: float | None) -> KeyValue:
    try:
        kv: KeyValue = await js.key_value(bucket)
        return kv
    except nats.js.errors.BucketNotFoundError:
        pass
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE)
    made: KeyValue = await js.create_key_value(config)
    return made
