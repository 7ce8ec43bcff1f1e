"""A private PostgreSQL the effects fault run may crash and restart: never the machine's server on 5432.

``initdb`` into a temp dir with the machine's ``/usr/lib/postgresql/<version>/bin``, trust auth on
loopback, a free port. :meth:`PostgresServer.restart` is a crash: ``pg_ctl stop -m immediate`` (every
backend quits at once, no checkpoint; the start replays the WAL), then start. PostgreSQL refuses to
run as root, so as root every command runs as the ``postgres`` user (``runuser``), which owns the dir.

>>> server = PostgresServer().start()     # doctest: +SKIP
>>> server.dsn()                          # doctest: +SKIP
'postgresql://postgres@127.0.0.1:40123/postgres'
>>> server.restart(); server.close()      # doctest: +SKIP
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from microagent.exceptions import BackendError

from .servers import HOST, free_port

__all__ = ['PostgresServer']


def _bin_dir() -> Path | None:
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix='reliability-pg-'))
        self.data = self.root / 'data'
        self.log = self.root / 'server.log'
        self.restarts = 0

    @staticmethod
    def available() -> bool:
        return _bin_dir() is not None and (os.geteuid() != 0 or shutil.which('runuser') is not None)

    def dsn(self, port: int | None = None) -> str:
        return f'postgresql://postgres@{HOST}:{port or self.port}/postgres'

    def _run(self, tool: str, *args: str, timeout: float = 120.0) -> str:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise BackendError('no PostgreSQL server binaries under /usr/lib/postgresql/*/bin')
        command = [str(bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = ['runuser', '-u', 'postgres', '--', *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise BackendError(f'{tool} failed ({done.returncode}): {done.stderr.strip()[-500:]}')
        return done.stdout

    def start(self) -> PostgresServer:
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.root, 'postgres', 'postgres')
            self._run('initdb', '-D', str(self.data), '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
                      '--no-instructions')
        options = (f'-p {self.port} -c listen_addresses={HOST} -c unix_socket_directories={self.root} '
                   '-c max_connections=200 -c fsync=on -c synchronous_commit=on')
        self._run('pg_ctl', '-D', str(self.data), '-l', str(self.log), '-o', options, '-w', '-t', '60', 'start')
        return self

    def restart(self, down: float = 0.0) -> None:
        """Crash (immediate stop: no checkpoint, backends killed), stay down *down* seconds, start again."""
        self._run('pg_ctl', '-D', str(self.data), '-m', 'immediate', '-w', 'stop')
        self.restarts += 1
        time.sleep(down)  # the outage itself: clients see a dead server this long
        self.start()

    def close(self) -> None:
        try:
            if (self.data / 'postmaster.pid').exists():
                self._run('pg_ctl', '-D', str(self.data), '-m', 'immediate', '-w', 'stop')
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
