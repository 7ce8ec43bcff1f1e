"""AMQP DSNs naming several hosts of one cluster: ``amqp://user:pass@h1:5672,h2:5673/vhost``.

Every node of a RabbitMQ cluster serves every queue, so a client that loses
its node can go on through another. One DSN names them all, comma-separated
in its host part (the form libpq and MongoDB use); credentials, virtual host
and query are shared. A list of single-host DSNs is the same thing, once they
agree on everything but the host (:func:`dsn_of`).

>>> hosts_of('amqp://guest:guest@h1:5672,h2:5673/vhost?heartbeat=10')
['amqp://guest:guest@h1:5672/vhost?heartbeat=10', 'amqp://guest:guest@h2:5673/vhost?heartbeat=10']
>>> dsn_of(['amqp://guest:guest@h1:5672/', 'amqp://guest:guest@h2:5673/'])
'amqp://guest:guest@h1:5672,h2:5673/'
"""
from __future__ import annotations

from collections.abc import Sequence

from ..._dsn import DSNParts, mask_dsn, split_dsn
from ...exceptions import ConfigurationError

__all__ = ['dsn_of', 'hosts_of']


def _split(dsn: str) -> DSNParts:
    parts = split_dsn(dsn)
    if not all(host.strip() for host in parts.hosts):
        raise ConfigurationError(f'AMQP DSN {mask_dsn(dsn)!r} has an empty host in its host list')
    return parts


def _join(parts: DSNParts, hosts: Sequence[str]) -> str:
    userinfo = '' if parts.userinfo is None else f'{parts.userinfo}@'
    query = f'?{parts.query}' if parts.query else ''
    fragment = f'#{parts.fragment}' if parts.fragment else ''
    return f'{parts.scheme}://{userinfo}{",".join(hosts)}{parts.path}{query}{fragment}'


def hosts_of(dsn: str) -> list[str]:
    """One single-host DSN per host named in *dsn*, in its order (the DSN itself for one host).

    >>> hosts_of('amqp://localhost/')
    ['amqp://localhost/']
    """
    parts = _split(dsn)
    if len(parts.hosts) <= 1:
        return [dsn]
    return [_join(parts, [host.strip()]) for host in parts.hosts]


def dsn_of(dsn: str | Sequence[str]) -> str:
    """*dsn* as one string: a list of DSNs that differ only in their host becomes one multi-host DSN.

    >>> dsn_of('amqp://localhost/')
    'amqp://localhost/'
    """
    if isinstance(dsn, str):
        return dsn
    if not dsn:
        raise ConfigurationError('AMQP: an empty list of DSNs')
    first = _split(dsn[0])
    hosts: list[str] = []
    for one in dsn:
        parts = _split(one)
        if (parts.scheme, parts.userinfo, parts.path, parts.query, parts.fragment) != (
                first.scheme, first.userinfo, first.path, first.query, first.fragment):
            raise ConfigurationError(f'AMQP: the DSNs of one cluster differ in more than their host: '
                                     f'{mask_dsn(dsn[0])!r} and {mask_dsn(one)!r}')
        hosts.extend(host.strip() for host in parts.hosts)
    return _join(first, hosts)
