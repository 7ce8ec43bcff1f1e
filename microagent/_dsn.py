"""DSN handling: parse once, never print a password."""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

__all__ = ['DSNParts', 'mask_dsn', 'mask_text', 'password_of', 'scheme_of', 'split_dsn']

# Anchored on '://' (a scheme character just before it): every log line goes through this, and a
# pattern that starts with the scheme tries every letter of a long word and backtracks over the rest,
# which is quadratic (a 100 KB message body in a DEBUG line froze a worker for seconds).
_USERINFO = re.compile(r'(?<=[a-zA-Z0-9+.\-])://(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@')


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``.

    >>> mask_dsn('amqp://guest:secret@localhost:5672/')
    'amqp://guest:***@localhost:5672/'
    """
    return _USERINFO.sub(lambda m: f'://{m["user"]}:***@', dsn)


def mask_text(text: str, *secrets: str | None) -> str:
    """*text* with DSN passwords and each given secret replaced by ``***``."""
    text = mask_dsn(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, '***')
    return text


def password_of(dsn: str) -> str | None:
    """The password in *dsn*, if any (to mask it wherever it might leak)."""
    pw = urllib.parse.urlsplit(dsn).password
    return urllib.parse.unquote(pw) if pw else None


def scheme_of(dsn: str) -> str:
    """The lower-case scheme of *dsn* (``redis``, ``amqp``, ``memory``...)."""
    return urllib.parse.urlsplit(dsn).scheme.lower()


@dataclass(frozen=True)
class DSNParts:
    """A DSN cut into its pieces by :func:`split_dsn` (user and password percent-decoded)."""

    scheme: str
    userinfo: str | None  # raw; None without an '@'
    hosts: tuple[str, ...]
    path: str
    query: str
    fragment: str = ''

    def __repr__(self) -> str:  # never the password
        return f'<DSNParts {self.scheme}://{",".join(self.hosts)}{self.path}>'

    @property
    def user(self) -> str | None:
        """The user name (or token, without a ``:``), decoded; None without userinfo."""
        return None if self.userinfo is None else urllib.parse.unquote(self.userinfo.partition(':')[0])

    @property
    def password(self) -> str | None:
        """The password, decoded; None when the userinfo has no ``:``."""
        if self.userinfo is None:
            return None
        _, colon, secret = self.userinfo.partition(':')
        return urllib.parse.unquote(secret) if colon else None


def split_dsn(dsn: str) -> DSNParts:
    """``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?query]`` in pieces.

    One parser for every backend: unlike ``urllib.parse.urlsplit`` it takes a
    comma-separated list of hosts (Kafka bootstrap servers, NATS and AMQP
    clusters). No scheme (no ``://``) gives an empty scheme and no hosts.

    >>> parts = split_dsn('kafka://app:s%40cret@h1:9092,h2:9093/x?y=1')
    >>> parts.scheme, parts.user, parts.password, parts.hosts, parts.path, parts.query
    ('kafka', 'app', 's@cret', ('h1:9092', 'h2:9093'), '/x', 'y=1')
    """
    scheme, sep, rest = dsn.partition('://')
    if not sep:
        return DSNParts('', None, (), '', '')
    rest, _, fragment = rest.partition('#')
    rest, _, query = rest.partition('?')
    netloc, slash, path = rest.partition('/')
    userinfo, at, hosts = netloc.rpartition('@')
    return DSNParts(scheme.lower(), userinfo if at else None, tuple(hosts.split(',')) if hosts else (),
                    slash + path, query, fragment)
