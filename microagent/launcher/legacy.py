"""microagent 1.9's launcher functions, on top of :mod:`microagent.launcher.settings`.

``load_configuration`` unfolds a settings module into one ``(name, (backend,
cfg))`` per agent, and ``init_agent`` builds a (not started) agent from one::

    for name, (backend, cfg) in load_configuration('examples.settings'):
        agent = init_agent(backend, cfg)
        await agent.start()

``marun`` / ``microagent run`` supervise a group; these two are for scripts
that run agents themselves.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..agent import MicroAgent
from ..exceptions import ConfigurationError
from .settings import BackendEntry, load_settings, resolve

__all__ = ['init_agent', 'load_configuration']

Config = tuple[str, dict[str, Any]]


def load_configuration(config_path: str) -> Iterator[tuple[str, Config]]:
    """Load settings module *config_path*; for each agent ``(name, (backend, cfg))``.

    ``cfg`` holds ``bus`` and ``broker`` as ``(backend, kwargs)`` (or None) and
    the agent's ``settings``. ``CONFIG`` and ``WIRE`` apply as in ``marun``.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> dict(load_configuration('examples.settings'))['emails'][0]   # doctest: +SKIP
    'examples.emails.EmailAgent'
    """
    group = load_settings(config_path)
    for name, entry in group.agents.items():
        cfg: dict[str, Any] = {
            'bus': _unfold(group.buses[entry.bus]) if entry.bus else None,
            'broker': _unfold(group.brokers[entry.broker]) if entry.broker else None,
            'settings': dict(entry.settings),
        }
        yield name, (_path(entry.cls), cfg)


def init_agent(backend: str, cfg: dict[str, Any]) -> MicroAgent:
    """A new, not started agent of class *backend* with the bus and broker *cfg* describes.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> agent = init_agent(*dict(load_configuration('examples.settings'))['emails'])   # doctest: +SKIP
    """
    cfg = dict(cfg)
    bus, broker = (_build(kind, cfg.pop(kind, None)) for kind in ('bus', 'broker'))
    cls = resolve(f'init_agent({backend!r})', backend)
    if not (isinstance(cls, type) and issubclass(cls, MicroAgent)):
        raise ConfigurationError(f'init_agent: {backend!r} is not a MicroAgent subclass')
    return cls(bus=bus, broker=broker, **cfg)


def _unfold(entry: BackendEntry) -> Config:
    return _path(entry.cls), dict(entry.kwargs)


def _build(kind: str, config: Any) -> Any:
    if config is None:
        return None
    if not isinstance(config, tuple | list) or len(config) != 2 or not isinstance(config[1], dict):
        raise ConfigurationError(f'init_agent: {kind} must be (backend, kwargs), got {config!r}')
    return resolve(f'init_agent: {kind}', config[0])(**config[1])


def _path(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'
