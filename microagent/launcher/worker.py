"""A worker process: runs one or more agents of a settings module until told to stop.

The supervisor starts a fresh interpreter per worker (never a fork of a
process that has an event loop)::

    python -m microagent.launcher.worker --settings examples.settings --agent users:0 \
        --status-fd 5 --grace 10 --parent-pid 4242

SIGTERM or SIGINT: stop intake, drain in-flight handlers for ``--grace``
seconds, run pre_stop hooks, close connections, exit 0. A second signal
exits at once. The worker dies with its supervisor: ``PR_SET_PDEATHSIG`` on
Linux, and EOF on stdin (a pipe the supervisor holds) everywhere.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Sequence

from .._starting import start_agent
from .._tasks import TaskSet
from ..agent import MicroAgent
from ..exceptions import ConfigurationError, MicroAgentError
from . import logs
from .codes import ExitCode
from .report import Reporter
from .settings import load_settings

__all__ = ['Worker', 'main']

log = logging.getLogger('microagent.launcher')
PR_SET_PDEATHSIG = 1
_EARLY_STOP: list[int] = []  # signals that came while importing, before the event loop existed


class Worker:
    """Runs agent instances in this process; ``await Worker(...).run()`` returns an exit code.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> code = await Worker(reporter, grace=10).run()    # doctest: +SKIP
    """

    def __init__(self, reporter: Reporter, grace: float, interval: float = 1.0) -> None:
        self.reporter = reporter
        self.grace = grace
        self.interval = interval
        self.agents: list[MicroAgent] = [agent for _, _, agent in reporter.instances]
        self._stop = asyncio.Event()
        self._signals = 0
        self._code = ExitCode.OK
        self._starts = TaskSet('worker agents')
        self._side = TaskSet('worker side tasks')

    def request_stop(self, signum: int | None = None) -> None:
        """First call: graceful stop. Second signal: exit at once."""
        self._signals += signum is not None
        if self._signals > 1:
            log.warning('second signal: exiting without draining')
            os._exit(ExitCode.FORCED)
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        if _EARLY_STOP:
            log.info('stopped before any agent started')
            return int(ExitCode.OK)
        self._side.spawn(_watch_parent(), name='parent watchdog')
        await self.reporter.send('starting')
        for index, agent in enumerate(self.agents):
            self._starts.spawn(self._start(index, agent), name=f'start {type(agent).__name__}')
        self._side.spawn(self._report_loop(), name='status reports')
        await self._stop.wait()
        await self._shutdown()
        return int(self._code)

    async def _start(self, index: int, agent: MicroAgent) -> None:
        name = type(agent).__name__
        try:
            await start_agent(agent, self._side)
            self.reporter.ready[index] = True
            log.info('%s started', name)
            await self.reporter.send('running' if all(self._ready()) else 'starting')
        except Exception:
            log.exception('%s failed to start', name)
            self._code = ExitCode.CRASHED
            self._stop.set()

    def _ready(self) -> list[bool]:
        return [self.reporter.ready.get(i, False) for i in range(len(self.agents))]

    async def _report_loop(self) -> None:
        while True:
            state = 'stopping' if self._stop.is_set() else 'running' if all(self._ready()) else 'starting'
            if not await self.reporter.send(state):
                log.error('the supervisor is gone: exiting')
                os._exit(ExitCode.ORPHANED)
            await asyncio.sleep(self.interval)  # a reporting period, not synchronisation

    async def _shutdown(self) -> None:
        log.info('stopping: draining in-flight handlers for up to %ss', self.grace)
        deadline = time.monotonic() + self.grace
        # An agent still starting finishes starting first, so stop() finds everything it must undo.
        await self._starts.drain(self.grace)
        self.reporter.ready.clear()
        await self.reporter.send('stopping')
        left = max(0.0, deadline - time.monotonic())
        results = await asyncio.gather(*(a.stop(timeout=left) for a in self.agents), return_exceptions=True)
        for agent, result in zip(self.agents, results, strict=True):
            if isinstance(result, BaseException):
                log.error('%s: stop failed: %s', type(agent).__name__, result)
        await self._side.cancel()
        await self.reporter.send('stopped')
        log.info('stopped')


async def _watch_parent() -> None:
    """Exit when stdin (a pipe the supervisor holds open) reaches EOF: the supervisor died."""
    try:
        if not stat.S_ISFIFO(os.fstat(0).st_mode):
            return  # stdin is not a pipe (run by hand): only PDEATHSIG watches
    except OSError:
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    log.error('the supervisor is gone: exiting')
    os._exit(ExitCode.ORPHANED)


def die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit if it is already gone.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> die_with_parent(os.getppid())   # doctest: +SKIP
    """
    if sys.platform.startswith('linux'):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the stdin watchdog still covers it
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(ExitCode.ORPHANED)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='microagent.launcher.worker')
    parser.add_argument('--settings', required=True)
    parser.add_argument('--agent', action='append', required=True, help='NAME:REPLICA, repeatable')
    parser.add_argument('--status-fd', type=int)
    parser.add_argument('--grace', type=float, default=10.0)
    parser.add_argument('--interval', type=float, default=1.0)
    parser.add_argument('--parent-pid', type=int)
    parser.add_argument('--log-level', default='INFO')
    parser.add_argument('--log-format', default='text')
    parser.add_argument('--otel', help='span exporter (see microagent.telemetry.sdk)')
    return parser.parse_args(argv)


def _instances(settings_ref: str, specs: list[str]) -> list[tuple[str, int, MicroAgent]]:
    group = load_settings(settings_ref)
    out = []
    for spec in specs:
        name, _, replica = spec.rpartition(':')
        if name not in group.agents or not replica.isdigit():
            raise ConfigurationError(f'settings {group.module!r}: no agent {spec!r}')
        out.append((name, int(replica), group.build_agent(name)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m microagent.launcher.worker``.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> main(['--settings', 'examples.settings', '--agent', 'users:0'])   # doctest: +SKIP
    """
    args = _parse(argv)
    die_with_parent(args.parent_pid)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda num, _frame: _EARLY_STOP.append(num))
    tag = ','.join(args.agent) if len(args.agent) < 3 else f'{args.settings} ({len(args.agent)} agents)'
    logs.configure(args.log_level, args.log_format, tag)
    try:
        instances = _instances(args.settings, args.agent)
    except MicroAgentError as exc:
        log.error('%s', exc)
        return ExitCode.CONFIG
    if args.otel:
        from ..telemetry import instrument, sdk

        try:
            telemetry = sdk.configure(args.otel, service_name=tag)
        except MicroAgentError as exc:
            log.error('%s', exc)
            return ExitCode.CONFIG
        for _, _, agent in instances:
            instrument(agent, telemetry)
    reporter = Reporter(args.status_fd, instances)
    try:
        return asyncio.run(Worker(reporter, args.grace, args.interval).run())
    finally:
        if args.otel:
            sdk.shutdown()


if __name__ == '__main__':
    sys.exit(main())
