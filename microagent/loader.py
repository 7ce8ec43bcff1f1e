"""Loading declarations from ``file://`` paths and ``http(s)://`` URLs.

Not run: reads files and URLs that are not here (tests/test_loader.py).
>>> signals = load_signals('file://signals.json')      # doctest: +SKIP
>>> queues = load_queues('https://example.com/queues.json')  # doctest: +SKIP
>>> signals.user_created, queues.mailer                # doctest: +SKIP

Loading several sources merges them into one catalog (the default unless
``catalog=`` is given): loading a file again, or signals and queues from
separate files, is fine; a conflicting redefinition raises
:class:`DoubleLoadError`. Every problem is a :class:`ConfigurationError` that
names the source and the place in it.

A document may also set ``"default_prefix"`` (the prefix of signal buses built
without ``prefix=``), ``"jsonlib"`` and ``"version"`` (accepted, as
microagent 1.9 files carry it). Other top-level keys are logged as a warning
naming them and otherwise ignored.

``configure(source)`` is microagent 1.9's way: load, return nothing, and use
``Signal.<name>`` / ``Queue.<name>``::

    configure('file://signals.json')
    Signal.user_created, Queue.mailer
"""
from __future__ import annotations

import collections
import json
import logging
import os
import ssl
import urllib.parse
import urllib.request
from typing import Any, NamedTuple

from ._dsn import mask_dsn
from .catalog import DEFAULT_CATALOG, Catalog
from .exceptions import ConfigurationError
from .queue import Queue
from .signal import Signal

__all__ = ['Stuff', 'configure', 'load_queues', 'load_signals', 'load_stuff', 'read_source']

log = logging.getLogger('microagent.loader')
MAX_SIZE = 4 * 1024 * 1024
TIMEOUT = 10.0
TOP_KEYS = {'signals', 'queues', 'jsonlib', 'default_prefix', 'version'}
ENTRY_KEYS = {
    'signals': {'name', 'providing_args', 'description'},
    'queues': {'name', 'exchange', 'topics'},
}


class Stuff(NamedTuple):
    """Both kinds of declarations from one source."""

    signals: Any
    queues: Any


def load_signals(source: str, *, catalog: Catalog | None = None) -> Any:
    """Load Signal-entities from file or by web; a named tuple of them, by name."""
    return load_stuff(source, catalog=catalog).signals


def load_queues(source: str, *, catalog: Catalog | None = None) -> Any:
    """Load Queue-entities from file or by web; a named tuple of them, by name."""
    return load_stuff(source, catalog=catalog).queues


def configure(source: str, *, catalog: Catalog | None = None) -> None:
    """Load the signals and queues of *source*; use them as ``Signal.<name>`` and ``Queue.<name>``.

    The microagent 1.9 entry point. Calling it again with the same or more
    declarations is fine; a conflicting redefinition raises DoubleLoadError.

    Not run: reads files and URLs that are not here (tests/test_loader.py).
    >>> configure('file://signals.json')   # doctest: +SKIP
    >>> Signal.user_created                # doctest: +SKIP
    Signal(name='user_created', providing_args=('user_id',), jsonlib='json')
    """
    load_stuff(source, catalog=catalog)


def load_stuff(source: str, *, catalog: Catalog | None = None) -> Stuff:
    """Load signals and queues declared in one source: ``(signals, queues)``."""
    data = parse(source, read_source(source))
    jsonlib = data.get('jsonlib', 'json')
    if not isinstance(jsonlib, str):
        raise ConfigurationError(f'{_where(source)}: "jsonlib" must be a string')
    cat = catalog or DEFAULT_CATALOG
    if 'default_prefix' in data:
        try:
            cat.set_default_prefix(data['default_prefix'])
        except ConfigurationError as exc:
            raise type(exc)(f'{_where(source)}: {exc}') from None
    built = {kind: [_build(source, kind, i, e, jsonlib=jsonlib, catalog=cat) for i, e in enumerate(data.get(kind, []))]
             for kind in ('signals', 'queues')}
    return Stuff(_named('Signals', built['signals']), _named('Queues', built['queues']))


def parse(source: str, raw: bytes) -> dict[str, Any]:
    """Check the top level of a declarations document."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        data = _lenient(raw)
        if data is None:
            raise ConfigurationError(f'{_where(source)}: broken JSON: {exc}') from None
    if not isinstance(data, dict):
        raise ConfigurationError(f'{_where(source)}: top level must be an object with "signals"/"queues"')
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown and not {'signals', 'queues'} & set(data):
        raise ConfigurationError(f'{_where(source)}: declares nothing: unknown keys {unknown}, '
                                 f'expected {sorted(TOP_KEYS)}')
    if unknown:
        # A newer file may carry keys this version does not know: loading what we do know keeps a
        # rolling upgrade going; the warning says what was left out.
        log.warning('%s: ignoring unknown top-level keys %s (known: %s)', _where(source), unknown, sorted(TOP_KEYS))
    version = data.get('version', 1)
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise ConfigurationError(f'{_where(source)}: "version" must be a number or a string, got {version!r}')
    for key in ('signals', 'queues'):
        if not isinstance(data.get(key, []), list):
            raise ConfigurationError(f'{_where(source)}: "{key}" must be a list')
    return data


def _lenient(raw: bytes) -> Any:
    """Parse again without trailing commas (the documented samples have them); None if still broken."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    out, in_string, escaped = [], False, False
    for index, char in enumerate(text):
        if in_string:
            in_string = not (char == '"' and not escaped)
            escaped = char == '\\' and not escaped
        elif char == '"':
            in_string = True
        elif char == ',' and text[index + 1:].lstrip()[:1] in (']', '}'):
            continue
        out.append(char)
    try:
        return json.loads(''.join(out))
    except (ValueError, RecursionError):
        return None


def _build(source: str, kind: str, index: int, entry: Any, *, jsonlib: str, catalog: Catalog) -> Any:
    where = f'{_where(source)}: {kind}[{index}]'
    if not isinstance(entry, dict):
        raise ConfigurationError(f'{where}: must be an object')
    unknown = sorted(set(entry) - ENTRY_KEYS[kind])
    if unknown:
        raise ConfigurationError(f'{where}: unknown keys {unknown}, expected {sorted(ENTRY_KEYS[kind])}')
    if 'name' not in entry:
        raise ConfigurationError(f'{where}: "name" is required')
    try:
        if kind == 'signals':
            return Signal(jsonlib=jsonlib, catalog=catalog, **entry)
        return Queue(jsonlib=jsonlib, catalog=catalog, **entry)
    except ConfigurationError as exc:
        raise type(exc)(f'{where}: {exc}') from None  # a DoubleLoadError stays one
    except TypeError as exc:
        raise ConfigurationError(f'{where}: {exc}') from None


def _named(typename: str, items: list[Any]) -> Any:
    cls = collections.namedtuple(typename, [i.name for i in items], rename=True)  # type: ignore[misc]
    return cls(*items)


def _where(source: str) -> str:
    return mask_dsn(source)  # never echo credentials embedded in a URL (host and port stay)


def read_source(source: str, *, timeout: float | None = None, max_size: int | None = None) -> bytes:
    """Bytes of a ``file://`` path (or a plain path) or an ``http(s)://`` URL, size-capped."""
    timeout = timeout or TIMEOUT
    max_size = max_size or MAX_SIZE
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ('http', 'https'):
        return _fetch(source, timeout, max_size)
    if scheme not in ('file', ''):
        raise ConfigurationError(f'{_where(source)}: unsupported scheme {scheme!r} (file, http, https)')
    path = source[len('file://'):] if scheme == 'file' else source
    try:
        with open(path, 'rb') as fh:
            raw = fh.read(max_size + 1)
    except OSError as exc:
        raise ConfigurationError(f'{source}: cannot read: {exc.strerror}') from None
    if len(raw) > max_size:
        raise ConfigurationError(f'{source}: larger than {max_size} bytes')
    return raw


def _fetch(url: str, timeout: float, max_size: int) -> bytes:
    if url.startswith('http://'):
        if os.environ.get('MICROAGENT_FORBID_HTTP', '') not in ('', '0'):
            raise ConfigurationError(f'{_where(url)}: plain http is forbidden (MICROAGENT_FORBID_HTTP)')
        log.warning('Loading declarations over plain http from %s: use https', _where(url))
    context = ssl.create_default_context()
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
            raw: bytes = resp.read(max_size + 1)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f'{_where(url)}: cannot fetch: {exc}') from None
    if len(raw) > max_size:
        raise ConfigurationError(f'{_where(url)}: larger than {max_size} bytes')
    return raw
