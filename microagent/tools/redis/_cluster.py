"""Redis Cluster: the DSN, a connector that routes by key, and the keys' hash tags.

DSN ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (or
``rediss+cluster://`` for TLS, certificates verified): the nodes to discover
the cluster from (any one that answers is enough; the rest is learnt from it).
A cluster has one database, so the path is empty or ``/0``.

The cluster client is redis-py's ``redis.asyncio.cluster.RedisCluster``: it
sends each command to the master of its key's slot and follows the cluster
through failovers (MOVED replies, a node that stops answering). Every command
is written through redis-py's public API: the fast write path of
:func:`microagent.tools.redis._connection.fast_writer` is for one server only.

A multi-key command or script must touch one slot: every key of one queue
carries the queue's name as a hash tag (``<prefix>:{<queue>}``,
``<prefix>:{<queue>}.dlq``, ``<prefix>:{<queue>}.delayed``), so a queue
lives on one master and its scripts run there whole.

>>> parse_cluster_dsn('redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7000').nodes
[('10.0.0.1', 7000), ('10.0.0.2', 7000)]
>>> is_cluster('redis+cluster://10.0.0.1:7000'), is_cluster('redis://localhost')
(True, False)
>>> hash_tagged('microagent', 'mailer')
'microagent:{mailer}'
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError  # noqa: A004

from ..._dsn import mask_dsn, split_dsn
from ...exceptions import BackendError, ConfigurationError, ConnectError
from ._connection import RedisConnector

__all__ = ['CLUSTER_SCHEMES', 'ClusterConnector', 'ClusterDSN', 'connector_for', 'hash_tagged', 'is_cluster',
           'parse_cluster_dsn']

CLUSTER_SCHEMES = ('redis+cluster', 'rediss+cluster')


def is_cluster(dsn: str) -> bool:
    """Whether *dsn* names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return dsn.partition('://')[0].lower() in CLUSTER_SCHEMES


def hash_tagged(prefix: str, name: str) -> str:
    """The key of queue *name* in a cluster: the name is the hash tag, so all of the queue's keys share a slot."""
    return f'{prefix}:{{{name}}}'


@dataclass(frozen=True)
class ClusterDSN:
    """The parts of a cluster DSN: startup nodes, credentials, TLS."""

    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def _bad(dsn: str, why: str) -> ConfigurationError:
    return ConfigurationError(f'bad Redis Cluster DSN {mask_dsn(dsn)!r}: {why}')


def parse_cluster_dsn(dsn: str) -> ClusterDSN:
    """Split ``redis+cluster://[user:password@]host:port[,host:port]`` (the password unquoted)."""
    parts = split_dsn(dsn)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ConfigurationError(f'a Redis Cluster DSN starts with redis+cluster:// or rediss+cluster://, '
                                 f'got {parts.scheme!r}')
    if parts.path not in ('', '/', '/0') or parts.query or parts.fragment:
        raise _bad(dsn, 'a cluster has database 0 only and takes no options in the DSN')
    nodes = []
    for item in parts.hosts or ('',):
        host, colon, port = item.strip().rpartition(':')
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(dsn, f'{item!r} is not host:port')
        nodes.append((host.strip('[]'), int(port)))
    return ClusterDSN(nodes, parts.user or None, parts.password, parts.scheme == 'rediss+cluster')


class _PublicConnection(Connection):
    """A bare connection written only through redis-py's public API (see ``fast_writer``)."""

    public_writes = True


class _PublicSSLConnection(SSLConnection):
    public_writes = True


class _ClusterClient(RedisCluster):
    """``RedisCluster`` sending ``PUBLISH`` to any node that answers.

    Any node will do (classic pub/sub reaches every node): a random one each
    attempt, then each known node in turn. redis-py 5 sent it to its default
    node, and kept doing so for a while after that node died.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if args and args[0] == 'PUBLISH' and 'target_nodes' not in kwargs:
            return await self._publish(*args, **kwargs)
        return await super().execute_command(*args, **kwargs)

    async def _publish(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, target_nodes=self.RANDOM, **kwargs)
        except (ConnectionError, TimeoutError) as exc:
            failed: BaseException = exc
        for node in self.get_nodes():  # the cluster is failing over: whichever node answers
            try:
                return await super().execute_command(*args, target_nodes=node, **kwargs)
            except (ConnectionError, TimeoutError) as exc:
                failed = exc
        raise failed


class ClusterConnector(RedisConnector):
    """Redis Cluster clients for one DSN, made lazily per event loop.

    ``client()`` is a ``RedisCluster`` (commands routed by key, failovers
    followed); ``connection(key=...)`` a bare connection to the master of the
    key's slot (a queue's reader), or to any node that answers (the bus's
    subscriber: classic pub/sub reaches every node of a cluster).

    Not run: needs a Redis Cluster.
    >>> connector = ClusterConnector('redis+cluster://127.0.0.1:7000', 'microagent.bus.1')  # doctest: +SKIP
    >>> await connector.client().ping()                                                    # doctest: +SKIP
    """

    dedicated = False
    cluster = True

    def __init__(self, dsn: str, client_name: str, callbacks: dict[str, Any] | None = None,
                 **options: Any) -> None:
        self.parts = parse_cluster_dsn(dsn)
        super().__init__(dsn, client_name, callbacks, **options)
        if self.parts.tls:
            self.options.setdefault('ssl_check_hostname', True)
        self._next = 0  # which known node the next keyless connection tries first

    def check_dsn(self, dsn: str) -> None:
        parse_cluster_dsn(dsn)

    def client(self) -> RedisCluster:  # type: ignore[override]
        """The cluster client of the running loop (it discovers the cluster on its first command)."""
        client: Any = self._client
        if client is None or self._loop is not asyncio.get_running_loop():
            parts = self.parts
            client = _ClusterClient(startup_nodes=[ClusterNode(host, port) for host, port in parts.nodes],
                                  username=parts.username, password=parts.password, ssl=parts.tls,
                                  client_name=self.client_name, **self.options)
            for command, callback in self.callbacks.items():
                client.set_response_callback(command, callback)
            self._client, self._loop = client, asyncio.get_running_loop()
        cluster: RedisCluster = client
        return cluster

    async def connection(self, socket_timeout: float | None = None, key: str | None = None) -> Connection:
        """A new bare connection to the master of *key*'s slot, or (no key) to any node that answers."""
        client = self.client()
        if key is not None:
            try:
                # Through the cluster client first: after a failover or a slot move it finds the new master.
                await client.execute_command('EXISTS', key)
                node = client.get_node_from_key(key)
            except (RedisError, OSError) as exc:
                raise self.error(exc, f'no master for {key}') from None
            if node is None:
                raise BackendError(f'{self!r}: no master serves the slot of {key}')
            return await self._connect(node.host, int(node.port), socket_timeout)
        return await self._any_node(socket_timeout)

    async def _any_node(self, socket_timeout: float | None) -> Connection:
        known = [(node.host, int(node.port)) for node in self.client().get_nodes()]
        candidates = list(dict.fromkeys(known + self.parts.nodes))
        start, self._next = self._next % len(candidates), self._next + 1
        last: BackendError | None = None
        for host, port in candidates[start:] + candidates[:start]:
            try:
                return await self._connect(host, port, socket_timeout)
            except BackendError as exc:
                last = exc
        if isinstance(last, ConnectError):
            raise last  # a refused login (on every node): the caller may give up at once
        raise BackendError(f'{self!r}: no cluster node answers ({last})')

    async def _connect(self, host: str, port: int, socket_timeout: float | None) -> Connection:
        options = {**self.options, 'retry': Retry(NoBackoff(), 0), 'client_name': self.client_name,
                   'username': self.parts.username, 'password': self.parts.password}
        if socket_timeout is not None:
            options['socket_timeout'] = socket_timeout
        if self.parts.tls:
            conn: Connection = _PublicSSLConnection(host=host, port=port, **options)
        else:
            options = {k: v for k, v in options.items() if not k.startswith('ssl_')}
            conn = _PublicConnection(host=host, port=port, **options)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            raise self.error(exc, f'cannot connect to {host}:{port}') from None
        return conn


def connector_for(dsn: str, client_name: str, **options: Any) -> RedisConnector:
    """The connector serving *dsn*: a :class:`ClusterConnector` for a cluster DSN, else one server's."""
    if is_cluster(dsn):
        return ClusterConnector(dsn, client_name, **options)
    return RedisConnector(dsn, client_name, **options)
