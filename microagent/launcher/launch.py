"""Run a group of agents from settings modules: what ``marun`` and ``microagent run`` call.

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> code = launch(['examples.settings'], Options(duration=15))   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
import sys

from .._tasks import TaskSet
from ..exceptions import ConfigurationError
from . import logs
from .codes import ExitCode
from .metrics import serve
from .settings import GroupSettings, load_settings
from .status import Display
from .supervisor import Options, Supervisor

__all__ = ['launch', 'load_groups']

log = logging.getLogger('microagent.launcher')


def load_groups(refs: list[str]) -> list[GroupSettings]:
    """Load and validate every settings module; agent names must be unique across them.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> [g.module for g in load_groups(['examples/settings.py'])]   # doctest: +SKIP
    ['examples.settings']
    """
    groups = [load_settings(ref) for ref in refs]
    seen: dict[str, str] = {}
    for group in groups:
        for name in group.agents:
            if name in seen and seen[name] != group.module:
                raise ConfigurationError(f'settings {group.module!r}: AGENT[{name!r}] is also in {seen[name]!r}')
            seen[name] = group.module
    return groups


def launch(refs: list[str], options: Options, table: bool | None = None) -> int:
    """Validate everything, then run the group until stopped; the exit code.

    ``table``: the live status table (default: when stderr is a TTY).
    Raises :class:`ConfigurationError` (nothing started) on bad settings.
    """
    groups = load_groups(refs)
    return asyncio.run(_run(groups, options, sys.stderr.isatty() if table is None else table))


async def _run(groups: list[GroupSettings], options: Options, table: bool) -> int:
    supervisor = Supervisor(groups, options)
    display = Display(lambda: supervisor.slots, table=table)
    supervisor.display = display
    logs.configure(options.log_level, options.log_format, 'launcher', write=display.write)
    for group in groups:
        if group.in_memory:
            log.info('%s uses memory:// backends: its agents share one process', group.module)
    side = TaskSet('launcher side tasks')
    server = None
    if options.http_port is not None:
        server = await serve(supervisor, options.http_host, options.http_port)
        host, port = server.sockets[0].getsockname()[:2]
        log.info('health and metrics on http://%s:%d (/ status page, /status.json /healthz /readyz /metrics)',
                 host, port)
    side.spawn(display.run(), name='status display')
    try:
        code = await supervisor.run()
    finally:
        await side.cancel()
        if server is not None:
            server.close()
        display.close()
    log.info('exit %d (%s)', code, ExitCode(code).name)
    return int(code)
