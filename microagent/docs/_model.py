"""The system a settings module describes: servers, agents, what each receives, consumes, sends and runs.

Built from the settings and the agents' declarations alone: nothing connects.

Not run: reads the example application (examples/; tests/test_docs.py runs it).
>>> system = describe(load_settings('examples.settings'))      # doctest: +SKIP
>>> [a.key for a in system.agents]                              # doctest: +SKIP
['users', 'comments', 'emails']
"""
from __future__ import annotations

import inspect
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._dsn import mask_dsn, scheme_of
from ..catalog import DEFAULT_CATALOG, Catalog
from ._sends import sends_of

if TYPE_CHECKING:
    from ..agent import MicroAgent
    from ..launcher.settings import BackendEntry, GroupSettings
    from ..queue import Queue
    from ..signal import Signal

__all__ = ['Agent', 'Handler', 'Send', 'Server', 'System', 'describe', 'public_path', 'server']


@dataclass(frozen=True)
class Server:
    """A ``BUS`` or ``BROKER`` entry: where it is, without credentials."""

    key: str          # 'bus-default', 'broker-default'
    kind: str         # 'bus' or 'broker'
    backend: str      # the class, module.Class
    protocol: str     # the DSN scheme
    host: str         # host[:port][,host2:port], never user or password
    pathname: str


@dataclass(frozen=True)
class Handler:
    """A receiver (of a signal) or a consumer (of a queue)."""

    method: str
    kind: str         # 'receiver' or 'consumer'
    target: str       # signal or queue name
    timeout: float
    dto_class: Any = None
    replies: bool = False  # a receiver whose return value is an RPC response
    description: str = ''


@dataclass(frozen=True)
class Send:
    """A send found in the agent's source: to a ``signal``, ``queue`` or ``exchange``; ``rpc`` for calls."""

    kind: str
    target: str
    rpc: bool = False


@dataclass
class Agent:
    """One ``AGENT`` entry of the settings."""

    key: str
    backend: str
    replicas: int
    bus: str | None
    broker: str | None
    description: str
    handlers: list[Handler] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    hooks: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class System:
    """Everything :func:`describe` found; the input of the AsyncAPI document and the topology."""

    title: str
    servers: list[Server]
    agents: list[Agent]
    signals: dict[str, Signal]
    queues: dict[str, Queue]

    @property
    def exchanges(self) -> dict[str, list[Queue]]:
        """Exchange name -> the queues bound to it."""
        out: dict[str, list[Queue]] = {}
        for queue in self.queues.values():
            if queue.exchange:
                out.setdefault(queue.exchange, []).append(queue)
        return out

    def consumers_of(self, queue: str) -> list[tuple[Agent, Handler]]:
        return [(a, h) for a in self.agents for h in a.handlers if h.kind == 'consumer' and h.target == queue]


def describe(group: GroupSettings) -> System:
    """The :class:`System` of a loaded settings module (agents are built, never started)."""
    servers = [server(entry, 'bus') for entry in group.buses.values()]
    servers += [server(entry, 'broker') for entry in group.brokers.values()]
    catalog: Catalog | None = None
    agents = []
    for key, entry in group.agents.items():
        instance = group.build_agent(key)
        catalog = catalog or _catalog_of(instance)
        agents.append(_agent(Agent(key, public_path(entry.cls), entry.replicas, entry.bus, entry.broker,
                                   _first_line(entry.cls)), instance))
    catalog = catalog or DEFAULT_CATALOG
    for agent in agents:
        agent.sends = _resolve_sends(group.agents[agent.key].cls, catalog)
    return System(group.module, servers, agents, catalog.signals, catalog.queues)


def server(entry: BackendEntry, kind: str) -> Server:
    """The :class:`Server` of a settings entry; the DSN loses its credentials and query.

    >>> from microagent.launcher.settings import BackendEntry
    >>> server(BackendEntry('default', dict, {'dsn': 'amqp://bob:secret@mq:5672/vh?x=1'}), 'broker').host
    'mq:5672'
    """
    dsn = str(entry.kwargs.get('dsn', ''))
    parts = urllib.parse.urlsplit(mask_dsn(dsn))
    host = parts.netloc.rpartition('@')[2] or 'localhost'
    pathname = parts.path if parts.path not in ('', '/') else ''
    return Server(f'{kind}-{entry.key}', kind, public_path(entry.cls),
                  scheme_of(dsn) or 'unknown', host, pathname)


def public_path(cls: type) -> str:
    """``module.Class`` without private modules (packages re-export their classes).

    >>> from microagent.tools.memory import MemoryBroker
    >>> public_path(MemoryBroker)
    'microagent.tools.memory.MemoryBroker'
    """
    module = '.'.join(part for part in cls.__module__.split('.') if not part.startswith('_'))
    return f'{module}.{cls.__qualname__}'


def _catalog_of(agent: MicroAgent) -> Catalog | None:
    for backend in (agent.bus, agent.broker):
        catalog = getattr(backend, 'catalog', None)
        if isinstance(catalog, Catalog):
            return catalog
    return None


def _agent(agent: Agent, instance: MicroAgent) -> Agent:
    for rec in instance.receivers:
        agent.handlers.append(Handler(_name(rec.handler), 'receiver', rec.signal.name, rec.timeout,
                                      replies=_returns_value(rec.handler), description=_first_line(rec.handler)))
    for con in instance.consumers:
        agent.handlers.append(Handler(_name(con.handler), 'consumer', con.queue.name, con.timeout, con.dto_class,
                                      description=_first_line(con.handler)))
    agent.schedules = [task.info() for task in instance.schedules]
    agent.hooks = {event: [_name(h) for h in hooks] for event, hooks in instance.hooks.items() if hooks}
    return agent


def _resolve_sends(cls: type, catalog: Catalog) -> list[Send]:
    out = []
    for backend, name, rpc in sorted(sends_of(cls)):
        if backend == 'bus' and name in catalog.signals:
            out.append(Send('signal', name, rpc))
        elif backend == 'broker' and name in catalog.queues:
            out.append(Send('queue', name))
        elif backend == 'broker' and catalog.is_exchange(name):
            out.append(Send('exchange', name))
    return out


def _returns_value(handler: Any) -> bool:
    try:
        annotation = inspect.signature(handler).return_annotation
    except (TypeError, ValueError):
        return False
    return annotation not in (inspect.Signature.empty, None, 'None')


def _name(func: Any) -> str:
    return str(getattr(func, '__name__', func))


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ''
    return doc.strip().split('\n\n', 1)[0].replace('\n', ' ')
