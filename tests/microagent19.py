"""The real microagent 1.9.0 for interop tests: its virtual environment, cached, and its agents as subprocesses.

The environment lives in pytest's cache directory (``.pytest_cache/d/microagent19``) and is
reused by later runs; the first run installs ``microagent[redis,amqp,kafka]==1.9.0`` from the
package index (a few seconds with wheels cached). Locally a failed install skips the interop
tests; under ``CI=true`` it fails them.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from .services import IN_CI

VERSION = '1.9.0'
REQUIREMENT = f'microagent[redis,amqp,kafka]=={VERSION}'
DRIVER = Path(__file__).with_name('microagent19_driver.py')
INSTALL_TIMEOUT = 600


def _ready(python: Path) -> bool:
    if not python.exists():
        return False
    check = [str(python), '-I', '-c', f'import microagent, redis, aiormq, aiokafka; '
                                f'assert microagent.__version__ == {VERSION!r}']
    return subprocess.run(check, capture_output=True, timeout=60, check=False).returncode == 0


def environment(cache_dir: Path) -> Path:
    """The python of a virtual environment with microagent 1.9.0 (made once, then reused)."""
    venv = cache_dir / 'venv'
    python = venv / 'bin' / 'python'
    if _ready(python):
        return python
    steps = [[sys.executable, '-m', 'venv', '--clear', str(venv)],
             [str(python), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', REQUIREMENT]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
        if done.returncode != 0:
            message = f'cannot install {REQUIREMENT}: {" ".join(step[:3])}...: {done.stderr.strip()[-2000:]}'
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    if not _ready(python):
        pytest.fail(f'{REQUIREMENT} installed in {venv} but does not import')
    return python


def reference_source(cache_dir: Path) -> Path:
    """The unpacked source distribution of microagent 1.9.0 (README, docs, examples), downloaded once."""
    root = cache_dir / 'src' / f'microagent-{VERSION}'
    if (root / 'README.rst').exists():
        return root
    # The 1.9 environment's pip: the dev environment (made by uv) has none.
    download = [str(environment(cache_dir)), '-m', 'pip', 'download', '-q', '--disable-pip-version-check', '--no-deps',
                '--no-binary', ':all:', f'microagent=={VERSION}', '-d', str(cache_dir / 'sdist')]
    done = subprocess.run(download, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    archives = sorted((cache_dir / 'sdist').glob(f'microagent-{VERSION}.tar.gz'))
    if done.returncode != 0 or not archives:
        message = f'cannot download the microagent {VERSION} sources: {done.stderr.strip()[-2000:]}'
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with tarfile.open(archives[0]) as tar:
        tar.extractall(cache_dir / 'src', filter='data')
    return root


class OldAgent:
    """One microagent 1.9 agent process: events from its stdout, commands to its stdin."""

    def __init__(self, python: Path, spec: dict[str, Any]) -> None:
        self.python = python
        self.spec = spec
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[Any]] = []

    async def start(self, timeout: float = 60) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
        self._proc = await asyncio.create_subprocess_exec(
            str(self.python), '-I', str(DRIVER), json.dumps(self.spec), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(self.python.parent))
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [asyncio.create_task(self._read(self._proc.stdout, self._event)),
                         asyncio.create_task(self._read(self._proc.stderr, self.stderr.append))]
        await self.expect(lambda e: e['event'] == 'ready', timeout)

    async def _read(self, stream: asyncio.StreamReader, sink: Callable[[str], Any]) -> None:
        while line := await stream.readline():
            sink(line.decode(errors='replace').rstrip('\n'))
        self._changed.set()

    def _event(self, line: str) -> None:
        try:
            self.events.append(json.loads(line))
        except ValueError:
            self.stderr.append(f'(stdout) {line}')
        self._changed.set()

    async def command(self, **cmd: Any) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(cmd) + '\n').encode())
        await self._proc.stdin.drain()

    async def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        """The first event matching *match* (waiting for it up to *timeout* seconds)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = next((e for e in self.events if match(e)), None)
                    if found is not None:
                        return found
                    if self._proc is not None and self._proc.returncode is not None and self._proc.stdout.at_eof():
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        raise AssertionError(f'microagent 1.9 agent: no matching event within {timeout}s; events {self.events}; '
                             f'log:\n' + '\n'.join(self.stderr[-40:]))

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(OSError, RuntimeError, AssertionError):
                await self.command(cmd='exit')
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def old_agent(python: Path, spec: dict[str, Any]) -> AsyncIterator[OldAgent]:
    agent = OldAgent(python, spec)
    try:
        await agent.start()
        yield agent
    finally:
        await agent.stop()
