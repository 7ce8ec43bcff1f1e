"""An agent group under test: ``marun reliability.group_settings`` (or another settings module) in a subprocess,
watched line by line.

>>> group = await Group.start(env, grace=3)     # doctest: +SKIP
>>> await group.wait_started(2)                 # doctest: +SKIP
>>> os.kill(group.pids()['worker#0'], signal.SIGKILL)   # the launcher restarts it
>>> took = await group.stop()                   # SIGTERM, seconds until it exited
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

from microagent._tasks import TaskSet
from microagent.exceptions import BackendError

__all__ = ['Group', 'alive']

MARUN = str(Path(sys.executable).parent / 'marun')
ROOT = Path(__file__).resolve().parent.parent
LINE_LIMIT = 64 * 1024 * 1024  # DEBUG logs may quote whole (oversized) messages


class Group:
    """One ``marun`` process; its output lines are kept (they are checked for leaked secrets too)."""

    def __init__(self, process: asyncio.subprocess.Process, grace: float) -> None:
        self.process = process
        self.grace = grace
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._tasks = TaskSet('group output')
        self._tasks.spawn(self._read(), name='marun output')

    def __repr__(self) -> str:
        return f'<Group marun pid={self.process.pid}>'

    @classmethod
    async def start(cls, env: dict[str, str], *, grace: float = 3.0, restart_delay: float = 0.2,
                    log_level: str = 'INFO', settings: str = 'reliability.group_settings') -> Group:
        """Start ``marun <settings>`` (the consumers by default; ``reliability.singleton_settings``: fault 7)."""
        process = await asyncio.create_subprocess_exec(
            MARUN, settings, '--grace', str(grace), '--restart-delay', str(restart_delay),
            '--max-restart-delay', '2', '--status', 'plain', '--log-level', log_level, '--http-port', '0',
            '--duration', '3600',  # a safety net: the group ends even if this driver is killed
            cwd=ROOT, env={**os.environ, 'PYTHONUNBUFFERED': '1', **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            limit=LINE_LIMIT)
        return cls(process, grace)

    async def _read(self) -> None:
        stdout = self.process.stdout
        if stdout is None:
            raise BackendError('marun was started without an output pipe')
        while line := await stdout.readline():
            self.lines.append(line.decode('utf-8', 'replace').rstrip('\n'))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return '\n'.join(self.lines)

    def pids(self) -> dict[str, int]:
        """Worker label -> its latest pid, from the launcher's 'started, pid N' lines."""
        found: dict[str, int] = {}
        for line in self.lines:
            match = re.search(r'launcher: (\S+?):? .*?started, pid (\d+)', line) or \
                re.search(r'(\S+#\d+): started, pid (\d+)', line)
            if match:
                found[match[1].rstrip(':')] = int(match[2])
        return found

    async def wait_line(self, pattern: str, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until *count* output lines match *pattern*."""
        regex = re.compile(pattern)
        seen, found = 0, 0
        async with asyncio.timeout(timeout):
            while True:
                # Only the new lines: DEBUG output is long, and a slow reader here would fill the pipe
                # and stall the launcher and its workers behind it.
                found += sum(1 for line in self.lines[seen:] if regex.search(line))
                seen = len(self.lines)
                if found >= count:
                    return
                if self.process.returncode is not None:
                    raise BackendError(f'marun exited ({self.process.returncode}):\n{self.output[-2000:]}')
                self._changed.clear()
                await self._changed.wait()

    def count(self, needle: str) -> int:
        """How many output lines so far contain *needle*."""
        return sum(1 for line in self.lines if needle in line)

    async def wait_started(self, count: int, timeout: float = 60.0) -> None:
        await self.wait_line(r'started, pid \d+', count, timeout)

    async def metrics(self) -> str:
        """The launcher's /metrics text (checked for leaked secrets like the logs)."""
        found = [m for m in map(re.compile(r'metrics on (http://\S+)').search, self.lines) if m]
        if not found:
            return ''
        url = found[0][1].rstrip('/') + '/metrics'

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the launcher on loopback
                return bytes(resp.read()).decode('utf-8', 'replace')
        try:
            return await asyncio.to_thread(fetch)
        except OSError as exc:
            return f'metrics unavailable: {type(exc).__name__}'

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    async def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM the launcher (graceful drain); seconds until it exited."""
        began = time.monotonic()
        self.signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            await self.process.wait()
        took = time.monotonic() - began
        await self._tasks.drain(5)
        return took

    async def kill(self) -> None:
        """SIGKILL the launcher and every worker (its process group and theirs)."""
        pids = list(self.pids().values())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.process.wait()
        await self._tasks.cancel()


def alive(pid: int) -> bool:
    """Whether process *pid* runs (a zombie waiting for its parent does not)."""
    try:
        with open(f'/proc/{pid}/stat') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return False
