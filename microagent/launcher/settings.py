"""Launcher settings modules: ``BUS``, ``BROKER`` and ``AGENT`` dicts, validated before anything starts.

A settings module, as the reference uses it::

    BUS = {'default': {'backend': 'microagent.tools.redis.RedisSignalBus', 'dsn': 'redis://localhost/7'}}
    BROKER = {'default': {'backend': 'microagent.tools.redis.RedisBroker', 'dsn': 'redis://localhost/7'}}
    AGENT = {
        'users': {'backend': 'examples.users.UserAgent', 'bus': 'default', 'broker': 'default',
                  'replicas': 2, 'settings': {'greeting': 'hi'}},
    }

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> group = load_settings('examples.settings')        # doctest: +SKIP
>>> [a.name for a in group.agents]                    # doctest: +SKIP
['users', 'comments', 'emails']

Two optional module variables: ``CONFIG``, a declarations source (or a list
of them) loaded with :func:`microagent.configure` before the backends and
agents are imported (as microagent 1.9 does); ``WIRE``, the wire format of
every ``BUS``/``BROKER`` entry that does not set ``'wire'`` itself
(``'microagent1'`` in a fleet shared with microagent 1.9 agents, see
:mod:`microagent.wire`).

Every problem is a :class:`ConfigurationError` naming the module and the key.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from .._dsn import mask_text
from ..agent import MicroAgent
from ..broker import AbstractQueueBroker
from ..bus import AbstractSignalBus
from ..decorators import ConsumerSpec, ReceiverSpec
from ..exceptions import ConfigurationError
from ..loader import configure
from ..wire import check_wire

__all__ = ['AgentEntry', 'BackendEntry', 'GroupSettings', 'cwd_on_path', 'import_settings', 'load_settings',
           'module_name', 'resolve']

AGENT_KEYS = {'backend', 'bus', 'broker', 'replicas', 'settings'}
MEMORY_PREFIX = 'memory://'


@dataclass(frozen=True)
class BackendEntry:
    """One ``BUS`` or ``BROKER`` entry: a backend class and its keyword arguments.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> load_settings('examples.settings').default_broker().build()   # doctest: +SKIP
    <MemoryBroker memory://>
    """

    key: str
    cls: type[Any]
    kwargs: dict[str, Any]

    @property
    def in_memory(self) -> bool:
        return str(self.kwargs.get('dsn', '')).startswith(MEMORY_PREFIX) or 'memory' in self.cls.__module__

    def build(self) -> Any:
        """A new bus or broker instance (connections open lazily)."""
        return self.cls(**self.kwargs)


@dataclass(frozen=True)
class AgentEntry:
    """One ``AGENT`` entry.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> load_settings('examples.settings').agents['emails'].replicas   # doctest: +SKIP
    2
    """

    name: str
    cls: type[MicroAgent]
    bus: str | None
    broker: str | None
    replicas: int
    settings: dict[str, Any]


@dataclass
class GroupSettings:
    """A validated settings module.

    ``in_memory`` groups (a ``memory://`` bus or broker) run in one process:
    the memory hub does not cross processes.
    """

    module: str
    ref: str = ''  # as given: a module name or a path (workers load it the same way)
    buses: dict[str, BackendEntry] = field(default_factory=dict)
    brokers: dict[str, BackendEntry] = field(default_factory=dict)
    agents: dict[str, AgentEntry] = field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        return any(e.in_memory for e in (*self.buses.values(), *self.brokers.values()))

    def build_agent(self, name: str) -> MicroAgent:
        """A new instance of agent *name* with buses and brokers of its own.

        Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
        >>> agent = load_settings('examples.settings').build_agent('users')   # doctest: +SKIP
        """
        entry = self.agents[name]
        bus = self.buses[entry.bus].build() if entry.bus else None
        broker = self.brokers[entry.broker].build() if entry.broker else None
        return entry.cls(bus=bus, broker=broker, settings=dict(entry.settings))

    def default_bus(self, key: str | None = None) -> BackendEntry:
        """The ``BUS`` entry *key* (default: ``'default'`` or the only one)."""
        return _pick(self.module, 'BUS', self.buses, key)

    def default_broker(self, key: str | None = None) -> BackendEntry:
        """The ``BROKER`` entry *key* (default: ``'default'`` or the only one)."""
        return _pick(self.module, 'BROKER', self.brokers, key)


def _pick(module: str, kind: str, entries: dict[str, BackendEntry], key: str | None) -> BackendEntry:
    if key is None:
        key = 'default' if 'default' in entries or len(entries) != 1 else next(iter(entries))
    if key not in entries:
        raise ConfigurationError(f'settings {module!r}: {kind} has no entry {key!r} (have {sorted(entries)})')
    return entries[key]


def module_name(ref: str) -> str:
    """The module name of a settings reference: a dotted name or a path to a ``.py`` file.

    >>> module_name('examples/settings.py')
    'examples.settings'
    """
    if not ref.endswith('.py') and os.sep not in ref:
        return ref
    path = os.path.abspath(ref)
    stem = os.path.splitext(path)[0]
    cwd = os.getcwd()
    if stem.startswith(cwd + os.sep):
        return os.path.relpath(stem, cwd).replace(os.sep, '.')
    # Outside the working directory: importable from its own folder.
    folder = os.path.dirname(stem)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return os.path.basename(stem)


def cwd_on_path() -> None:
    """Make modules of the working directory importable, as ``python -m`` does (console scripts do not)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_settings(ref: str) -> Any:
    """Import the settings module *ref*; any failure is one ConfigurationError line."""
    cwd_on_path()
    name = module_name(ref)
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a settings error
        raise ConfigurationError(f'settings {name!r}: cannot import: {_describe(exc)}') from None


def load_settings(ref: str) -> GroupSettings:
    """Import and validate settings module *ref*; nothing is started or connected."""
    module = import_settings(ref)
    name = module.__name__
    _configure(name, getattr(module, 'CONFIG', None))
    wire = getattr(module, 'WIRE', None)
    if wire is not None:
        check_wire(f'settings {name!r}: WIRE', wire)
    group = GroupSettings(name, ref)
    group.buses = _backends(name, 'BUS', getattr(module, 'BUS', {}), AbstractSignalBus, wire)
    group.brokers = _backends(name, 'BROKER', getattr(module, 'BROKER', {}), AbstractQueueBroker, wire)
    agents = getattr(module, 'AGENT', None)
    if not isinstance(agents, dict) or not agents:
        raise ConfigurationError(f'settings {name!r}: AGENT must be a non-empty dict of agents')
    for key, entry in agents.items():
        group.agents[key] = _agent(group, key, entry)
    return group


def _configure(module: str, config: Any) -> None:
    """Load the declarations named by ``CONFIG`` (a source or a list of them)."""
    if config is None:
        return
    sources = [config] if isinstance(config, str) else config
    if not isinstance(sources, list | tuple) or not all(isinstance(s, str) for s in sources):
        raise ConfigurationError(f'settings {module!r}: CONFIG must be a declarations source or a list of them')
    for source in sources:
        try:
            configure(source)
        except ConfigurationError as exc:
            raise type(exc)(f'settings {module!r}: CONFIG: {exc}') from None


def _describe(exc: BaseException) -> str:
    text = f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__
    return mask_text(' '.join(text.split()))


def resolve(where: str, path: Any) -> Any:
    """The object at dotted *path* (``module.Class``); ConfigurationError naming *where* otherwise."""
    if not isinstance(path, str) or '.' not in path:
        raise ConfigurationError(f'{where}: "backend" must be a dotted path module.Class, got {path!r}')
    module_path, _, attr = path.rpartition('.')
    try:
        module = importlib.import_module(module_path)
    except Exception as exc:  # noqa: BLE001 - any import failure is a settings error
        raise ConfigurationError(f'{where}: cannot import {module_path!r}: {_describe(exc)}') from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f'{where}: unknown backend {path!r} ({module_path!r} has no {attr!r})') from None


def _backends(module: str, kind: str, table: Any, base: type, wire: str | None) -> dict[str, BackendEntry]:
    if not isinstance(table, dict):
        raise ConfigurationError(f'settings {module!r}: {kind} must be a dict')
    out = {}
    for key, entry in table.items():
        where = f'settings {module!r}: {kind}[{key!r}]'
        if not isinstance(entry, dict) or 'backend' not in entry:
            raise ConfigurationError(f'{where}: must be a dict with a "backend" key')
        kwargs = {k: v for k, v in entry.items() if k != 'backend'}
        cls = resolve(where, entry['backend'])
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigurationError(f'{where}: {entry["backend"]!r} is not a {base.__name__}')
        if wire is not None and 'wire' not in kwargs and _takes(cls, 'wire'):
            kwargs['wire'] = wire
        _check_call(where, cls, kwargs)
        out[key] = BackendEntry(key, cls, kwargs)
    return out


def _takes(cls: type, name: str) -> bool:
    """Whether *cls*'s constructor takes keyword *name* (a backend of one's own may not)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_call(where: str, cls: type, kwargs: dict[str, Any]) -> None:
    try:
        inspect.signature(cls).bind(**kwargs)
        # Backends connect lazily: building one checks its arguments without touching the network.
        cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any constructor failure is a settings error
        raise ConfigurationError(f'{where}: bad arguments: {_describe(exc)}') from None


def _agent(group: GroupSettings, key: str, entry: Any) -> AgentEntry:
    where = f'settings {group.module!r}: AGENT[{key!r}]'
    if not isinstance(entry, dict) or 'backend' not in entry:
        raise ConfigurationError(f'{where}: must be a dict with a "backend" key')
    unknown = sorted(set(entry) - AGENT_KEYS)
    if unknown:
        raise ConfigurationError(f'{where}: unknown keys {unknown}, expected {sorted(AGENT_KEYS)}')
    cls = resolve(where, entry['backend'])
    if not (isinstance(cls, type) and issubclass(cls, MicroAgent)):
        raise ConfigurationError(f'{where}: {entry["backend"]!r} is not a MicroAgent subclass')
    bus = _ref(where, 'bus', entry.get('bus'), group.buses)
    broker = _ref(where, 'broker', entry.get('broker'), group.brokers)
    kinds = {type(spec) for _, spec in cls._handlers}
    if ReceiverSpec in kinds and bus is None:
        raise ConfigurationError(f'{where}: {cls.__name__} has receivers, so "bus" is required')
    if ConsumerSpec in kinds and broker is None:
        raise ConfigurationError(f'{where}: {cls.__name__} has consumers, so "broker" is required')
    replicas = entry.get('replicas', 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigurationError(f'{where}: "replicas" must be a positive integer, got {replicas!r}')
    settings = entry.get('settings', {})
    if not isinstance(settings, dict):
        raise ConfigurationError(f'{where}: "settings" must be a dict')
    return AgentEntry(key, cls, bus, broker, replicas, settings)


def _ref(where: str, kind: str, key: Any, table: dict[str, BackendEntry]) -> str | None:
    if key is None:
        return None
    if key not in table:
        upper = 'BUS' if kind == 'bus' else 'BROKER'
        raise ConfigurationError(f'{where}: "{kind}" names {key!r}, which is not in {upper} {sorted(table)}')
    return str(key)
