"""DSN handling: parse once, never print a password."""
from __future__ import annotations

import re
import urllib.parse

__all__ = ['mask_dsn', 'mask_text', 'scheme_of']

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
