"""Run the real CLI in a subprocess and watch its output and marker files (no sleeps to synchronise)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cli_env(marker_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', **extra}
    if marker_dir is not None:
        env['LAUNCHER_TEST_DIR'] = str(marker_dir)
    return env


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
            command: str = 'microagent') -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command), *args], cwd=ROOT, env=env or cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll *predicate* until it is truthy; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'condition not met within {timeout}s')
        time.sleep(interval)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f'/proc/{pid}/stat') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def markers(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(prefix))


class Marun:
    """``marun ARGS`` in a subprocess; its output is collected line by line by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen([str(BIN / 'marun'), *args, '--status', 'plain'], cwd=ROOT,
                                     env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip('\n'))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return '\n'.join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until *count* output lines match *pattern*; the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f'no {count} line(s) matching {pattern!r}; output:\n{self.output}')
                self._changed.wait(min(left, 0.5))

    def pids(self) -> dict[str, int]:
        """Worker label -> latest pid, from the 'started, pid N' lines."""
        return {m[1]: int(m[2]) for m in map(re.compile(r'launcher: (\S+).*: started, pid (\d+)').search,
                                             self.lines) if m}

    def http_base(self) -> str:
        match = self.wait_line(r'health and metrics on (http://\S+)')[0]
        return match[1]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def delete_redis_keys(pattern: str, dsn: str = 'redis://127.0.0.1:6379/9') -> None:
    """Delete the keys a test created on the shared Redis (its unique *pattern*, e.g. ``lt<uid>:*``)."""
    import redis

    client = redis.Redis.from_url(dsn)
    try:
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
