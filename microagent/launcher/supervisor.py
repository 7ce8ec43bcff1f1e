"""The supervisor: one worker process per agent replica, restarted with capped backoff.

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> groups = [load_settings('examples.settings')]                # doctest: +SKIP
>>> code = await Supervisor(groups, Options(grace=5)).run()      # doctest: +SKIP

Groups on ``memory://`` backends run all their agents in one worker (the
memory hub does not cross processes). SIGTERM or SIGINT stops the group
gracefully within ``grace`` seconds; a second signal kills every worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._backoff import Backoff
from .._dsn import mask_text
from .._tasks import TaskSet
from .codes import ExitCode
from .slot import Slot

if TYPE_CHECKING:
    from .settings import GroupSettings
    from .status import Display

__all__ = ['Options', 'Supervisor', 'make_slots']

log = logging.getLogger('microagent.launcher')
STREAM_LIMIT = 1024 * 1024
KILL_MARGIN = 0.75  # for pre_stop hooks and closing connections after the drain


@dataclass
class Options:
    """Launcher options (the ``marun`` command line).

    >>> Options(grace=5, fail_fast=True).grace
    5
    """

    grace: float = 10.0
    fail_fast: bool = False
    duration: float | None = None
    restart_delay: float = 0.5
    max_restart_delay: float = 30.0
    stable_after: float = 10.0
    interval: float = 1.0
    log_level: str = 'INFO'
    log_format: str = 'text'
    http_host: str = '127.0.0.1'
    http_port: int | None = None
    otel: str | None = None


def make_slots(groups: list[GroupSettings]) -> list[Slot]:
    """Worker slots: one per agent replica, or one for a whole ``memory://`` group.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> [s.label for s in make_slots([load_settings('tests.launcher_settings_procs')])]  # doctest: +SKIP
    ['ticker#0', 'ticker#1', 'slow']
    """
    slots = []
    for group in groups:
        replicas = {name: entry.replicas for name, entry in group.agents.items()}
        instances = [(name, r) for name, entry in group.agents.items() for r in range(entry.replicas)]
        if group.in_memory:
            slots.append(Slot(f'{group.module} (in one process)', group.ref, instances, replicas))
            continue
        for name, replica in instances:
            label = f'{name}#{replica}' if replicas[name] > 1 else name
            slots.append(Slot(label, group.ref, [(name, replica)], replicas))
    return slots


class Supervisor:
    """Starts, watches, restarts and stops the worker processes of one or more settings groups.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> supervisor = Supervisor([load_settings('examples.settings')], Options(duration=5))  # doctest: +SKIP
    >>> await supervisor.run()                                                            # doctest: +SKIP
    <ExitCode.OK: 0>
    """

    def __init__(self, groups: list[GroupSettings], options: Options, display: Display | None = None) -> None:
        self.options = options
        self.slots = make_slots(groups)
        self.display = display
        self.code = ExitCode.OK
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._signals = 0
        self._loops = TaskSet('supervisor slots')
        self._io = TaskSet('supervisor pipes')
        self._slot_tasks: list[asyncio.Task[None]] = []
        self._restarts = Backoff(options.restart_delay, options.max_restart_delay)

    # -- life cycle ------------------------------------------------------------

    async def run(self) -> ExitCode:
        """Run the group until a signal, ``duration``, fail-fast or every worker ended; the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.on_signal, signum)
        try:
            self._slot_tasks = [self._loops.spawn(self._supervise(slot), name=f'supervise {slot.label}')
                                for slot in self.slots]
            await self._until_done()
            await self.shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        return self.code

    async def _until_done(self) -> None:
        deadline = None if self.options.duration is None else time.monotonic() + self.options.duration
        while not self.stopping.is_set() and len(self._loops):
            self._wake.clear()
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                log.info('duration of %ss reached: stopping', self.options.duration)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def on_signal(self, signum: int) -> None:
        """First SIGTERM/SIGINT: graceful stop. Second: kill every worker now."""
        self._signals += 1
        if self._signals == 1:
            log.info('%s: stopping (grace %ss; signal again to kill)', signal.Signals(signum).name,
                     self.options.grace)
            self.request_stop()
            return
        log.warning('second signal: killing every agent process')
        self.code = ExitCode.FORCED
        self._kill_all()

    def request_stop(self, code: ExitCode | None = None) -> None:
        if code is not None and self.code == ExitCode.OK:
            self.code = code
        self.stopping.set()
        self._wake.set()

    async def shutdown(self) -> None:
        """Ask every worker to drain; kill those still running after grace (+ a margin)."""
        self.stopping.set()
        for slot in self.slots:
            self._terminate(slot)
        cut = await self._wait_loops()
        if cut:
            log.warning('%d worker(s) killed at the grace deadline', cut)
        await self._io.drain(1.0)

    async def _wait_loops(self) -> int:
        # Waiting on the slot loops (not cancelling them): each ends when its process is reaped.
        pending = {t for t in self._slot_tasks if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.options.grace + KILL_MARGIN)
        if pending:
            self._kill_all()
            await asyncio.wait(pending, timeout=5)
        return len(pending)

    def _terminate(self, slot: Slot) -> None:
        if slot.alive and slot.proc is not None:
            slot.state = 'stopping'
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.alive and slot.proc is not None:
                slot.state = 'killed'
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()

    # -- one slot ----------------------------------------------------------------

    async def _supervise(self, slot: Slot) -> None:
        failures = 0
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                code = await self._run_once(slot)
                if self.stopping.is_set():
                    break
                if code == 0:
                    log.info('%s: exited', slot.label)
                    break
                if self.options.fail_fast:
                    log.error('%s: exited with %s: --fail-fast, stopping the group', slot.label, code)
                    self.request_stop(ExitCode.AGENT_FAILED)
                    break
                failures = 1 if time.monotonic() - started >= self.options.stable_after else failures + 1
                await self._backoff(slot, code, failures)
        finally:
            self._wake.set()

    async def _backoff(self, slot: Slot, code: int, failures: int) -> None:
        delay = self._restarts.delay(failures - 1)
        slot.state = 'backoff'
        slot.restarts += 1
        log.warning('%s: exited with %s, restart %d in %.1fs', slot.label, code, slot.restarts, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)

    async def _run_once(self, slot: Slot) -> int:
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(slot, write_fd), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True,
                limit=STREAM_LIMIT)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        slot.spawned(proc)
        log.info('%s: started, pid %d', slot.label, proc.pid)
        if self.stopping.is_set():
            self._terminate(slot)
        pipes = {self._io.spawn(self._read_status(slot, read_fd), name=f'status {slot.label}')}
        if proc.stdout is not None:
            pipes.add(self._io.spawn(self._relay(slot, proc.stdout), name=f'output {slot.label}'))
        code = await proc.wait()
        await asyncio.wait(pipes, timeout=2.0)
        slot.ended('stopped' if self.stopping.is_set() else 'crashed' if code else 'exited')
        return code

    def _command(self, slot: Slot, status_fd: int) -> list[str]:
        opts = self.options
        agents = [arg for name, replica in slot.instances for arg in ('--agent', f'{name}:{replica}')]
        return [sys.executable, '-m', 'microagent.launcher.worker', '--settings', slot.settings, *agents,
                '--status-fd', str(status_fd), '--grace', str(opts.grace), '--interval', str(opts.interval),
                '--parent-pid', str(os.getpid()), '--log-level', opts.log_level, '--log-format', opts.log_format,
                *(('--otel', opts.otel) if opts.otel else ())]

    async def _read_status(self, slot: Slot, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(fd, 'rb', buffering=0))
        try:
            while line := await reader.readline():
                try:
                    slot.apply(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    log.warning('%s: ignored a malformed status report', slot.label)
        finally:
            transport.close()

    async def _relay(self, slot: Slot, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the limit: pass on what there is
                line = await stream.read(STREAM_LIMIT)
            if not line:
                return
            text = line.decode(errors='replace').rstrip('\n')
            if self.options.log_format == 'json' and not text.startswith('{'):
                # print() output or a raw traceback line: wrapped, so every line stays one JSON object.
                text = _wrap(slot, text)
            if self.display is not None:
                self.display.write(text)
            else:
                sys.stderr.write(text + '\n')
                sys.stderr.flush()

    # -- health -------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every worker process is alive."""
        return bool(self.slots) and all(s.alive for s in self.slots)

    def ready(self) -> bool:
        """Every agent reported it is connected and consuming, and no stop is under way."""
        return not self.stopping.is_set() and bool(self.slots) and all(s.all_ready for s in self.slots)


def _wrap(slot: Slot, text: str) -> str:
    now = dt.datetime.now(dt.UTC).isoformat(timespec='milliseconds')
    return json.dumps({'ts': now, 'level': 'INFO', 'logger': 'output', 'tag': slot.label, 'pid': slot.pid,
                       'msg': mask_text(text)})
