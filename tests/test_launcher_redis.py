"""The launcher and the CLI with agents on Redis, one process per replica: messages flow across processes."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.proxy import FaultProxy

from .launcher_helpers import Marun, alive, cli_env, delete_redis_keys, http_get, markers, run_cli, wait_until
from .services import require_port

SETTINGS = 'tests.launcher_settings_redis'

pytestmark = pytest.mark.skipif(importlib.util.find_spec('microagent.tools.redis') is None,
                                reason='microagent.tools.redis is not there yet')


@pytest.fixture
def env(tmp_path: Path, uid: str) -> Iterator[dict[str, str]]:
    require_port('redis', 6379)
    yield cli_env(tmp_path, LAUNCHER_TEST_UID=uid)
    delete_redis_keys(f'lt{uid}:*')


@pytest.fixture
def marun(env: dict[str, str]) -> Iterator[Marun]:
    running = Marun(SETTINGS, '--grace', '5', '--http-port', '0', env=env)
    yield running
    running.close()


def send_jobs(env: dict[str, str], uid: str, count: int, seconds: float = 0.0) -> None:
    for n in range(count):
        result = run_cli('send', SETTINGS, f'ljobs_{uid}', json.dumps({'n': n, 'seconds': seconds}), env=env)
        assert result.returncode == 0, result.stderr


def send_direct(uid: str, count: int, seconds: float = 0.0, start: int = 0) -> None:
    """Send jobs from this process (quicker than a CLI process per message)."""
    from microagent import Catalog, Queue
    from microagent.tools.redis import RedisBroker

    async def go() -> None:
        catalog = Catalog()
        Queue(name=f'ljobs_{uid}', catalog=catalog)
        broker = RedisBroker('redis://127.0.0.1:6379/9', prefix=f'lt{uid}', catalog=catalog)
        try:
            await getattr(broker, f'ljobs_{uid}').send_many([{'n': n, 'seconds': seconds} for n in range(start, count)])
        finally:
            await broker.close()
    asyncio.run(go())


def handled(directory: Path, prefix: str) -> set[str]:
    return {name.rsplit('-', 1)[1] for name in markers(directory, prefix)}


def test_messages_flow_across_processes(marun: Marun, env: dict[str, str], uid: str, tmp_path: Path) -> None:
    base = marun.http_base()
    marun.wait_line(r': started, pid \d+', count=2)
    pids = marun.pids()
    assert set(pids) == {'jobs#0', 'jobs#1'} and len(set(pids.values())) == 2
    wait_until(lambda: http_get(f'{base}/readyz')[0] == 200, timeout=30)
    send_jobs(env, uid, 2)  # through the CLI, then the rest from here
    send_direct(uid, 6, start=2)
    wait_until(lambda: handled(tmp_path, 'end-jobs-') == {str(n) for n in range(6)}, timeout=30)
    # Signals reach every replica; RPC answers come back to the CLI.
    result = run_cli('signal', SETTINGS, f'lping_{uid}', 'n=7', env=env)
    assert result.returncode == 0, result.stderr
    for pid in pids.values():
        wait_until(lambda pid=pid: markers(tmp_path, f'ping-jobs-{pid}-7'), timeout=15)
    result = run_cli('call', SETTINGS, f'ldouble_{uid}', 'n=21', '--timeout', '1.5', env=env)
    assert result.returncode == 0, result.stderr
    responses = [json.loads(line) for line in result.stdout.splitlines()]
    assert responses and all(r == {'JobWorker.on_double': 42} for r in responses)

    def counted() -> bool:
        text = http_get(f'{base}/metrics')[1]
        labels = f'agent="jobs",queue="ljobs_{uid}"'
        found = re.findall(rf'microagent_messages_handled_total{{{labels},replica="\d"}} (\S+)', text)
        return sum(float(v) for v in found) == 6 and f'microagent_queue_length{{{labels}' in text
    wait_until(counted, timeout=15)
    info = run_cli('info', SETTINGS, '--json', env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)['agents']['jobs']['queue_lengths'] == {f'ljobs_{uid}': 0}
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def test_killed_replica_is_restarted_and_keeps_consuming(marun: Marun, env: dict[str, str], uid: str,
                                                         tmp_path: Path) -> None:
    marun.wait_line(r': started, pid \d+', count=2)
    victim = marun.pids()['jobs#0']
    wait_until(lambda: markers(tmp_path, f'start-jobs-{victim}'), timeout=30)
    os.kill(victim, signal.SIGKILL)
    marun.wait_line(r'jobs#0: started, pid \d+', count=2)
    fresh = marun.pids()['jobs#0']
    wait_until(lambda: markers(tmp_path, f'start-jobs-{fresh}'), timeout=30)
    send_direct(uid, 4)
    wait_until(lambda: handled(tmp_path, 'end-jobs-') == {'0', '1', '2', '3'}, timeout=30)
    marun.signal(signal.SIGTERM)
    assert marun.wait() == 0


def test_sigterm_lets_in_flight_messages_finish(marun: Marun, env: dict[str, str], uid: str,
                                                tmp_path: Path) -> None:
    marun.wait_line(r': started, pid \d+', count=2)
    pids = marun.pids()
    for pid in pids.values():
        wait_until(lambda pid=pid: markers(tmp_path, f'start-jobs-{pid}'), timeout=30)
    send_direct(uid, 3, seconds=1.5)
    wait_until(lambda: handled(tmp_path, 'begin-jobs-'), timeout=30)
    began_at = time.monotonic()
    marun.signal(signal.SIGTERM)
    code = marun.wait(timeout=20)
    took = time.monotonic() - began_at
    assert code == 0, marun.output
    assert took < 5 + 1, f'took {took:.2f}s with grace 5s'
    begun = handled(tmp_path, 'begin-jobs-')
    assert begun <= handled(tmp_path, 'end-jobs-'), marun.output  # every message that started finished
    for pid in pids.values():
        assert markers(tmp_path, f'stop-jobs-{pid}') and not alive(pid)


def test_cli_errors_against_redis(env: dict[str, str], uid: str) -> None:
    result = run_cli('call', SETTINGS, f'ldouble_{uid}', 'n=1', '--timeout', '0.5', env=env)
    assert result.returncode == 2 and result.stderr.strip().endswith('within 0.5s'), result.stderr
    result = run_cli('send', SETTINGS, 'no_such_queue', '{}', env=env)
    assert result.returncode == 2 and "no queue or exchange 'no_such_queue'" in result.stderr, result.stderr
    result = run_cli('signal', SETTINGS, f'lping_{uid}', 'm=1', env=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_refused_broker_login_fails_the_start(env: dict[str, str]) -> None:
    """A broker DSN whose login Redis refuses: the start fails, named, and /readyz never says 200."""
    secret = 'canary-launcher-17a'
    env = {**env, 'LAUNCHER_TEST_BROKER_DSN': f'redis://nobody:{secret}@127.0.0.1:6379/9'}
    running = Marun('tests.launcher_settings_redis_dsn', '--grace', '1', '--http-port', '0', env=env)
    try:
        base = running.http_base()
        running.wait_line(r'ConnectError: RedisBroker cannot connect to redis://nobody:\*\*\*@.*authentication refused')
        assert http_get(f'{base}/readyz')[0] == 503
        metrics = http_get(f'{base}/metrics')[1]
        assert re.search(r'microagent_agent_ready\{[^}]*agent="jobs"[^}]*\} 0\.0', metrics), metrics
        running.wait_line(r'ConnectError: RedisBroker', count=2)  # restarted, refused again
        assert http_get(f'{base}/readyz')[0] == 503
    finally:
        running.close()
    assert secret not in running.output


@pytest.fixture
def proxy() -> Iterator[tuple[FaultProxy, asyncio.AbstractEventLoop]]:
    """A FaultProxy in front of the machine's Redis, on an event loop of its own (the test is synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(FaultProxy(6379).start(), loop).result(10)
    yield running, loop
    running.blackhole(False)
    asyncio.run_coroutine_threadsafe(running.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_readyz_follows_a_lost_connection(env: dict[str, str], proxy: tuple[FaultProxy, asyncio.AbstractEventLoop]
                                          ) -> None:
    """/readyz turns 503 while the agents' Redis connections are cut, and 200 again once they are back."""
    cut, loop = proxy
    dsn = f'redis://127.0.0.1:{cut.port}/9'
    env = {**env, 'LAUNCHER_TEST_BUS_DSN': dsn, 'LAUNCHER_TEST_BROKER_DSN': dsn}
    running = Marun('tests.launcher_settings_redis_dsn', '--grace', '1', '--http-port', '0', env=env)
    try:
        base = running.http_base()
        wait_until(lambda: http_get(f'{base}/readyz')[0] == 200, timeout=30)
        loop.call_soon_threadsafe(cut.blackhole, True)
        assert asyncio.run_coroutine_threadsafe(cut.reset(), loop).result(10) > 0
        wait_until(lambda: http_get(f'{base}/readyz')[0] == 503, timeout=20)
        assert re.search(r'microagent_agent_ready\{[^}]*\} 0\.0', http_get(f'{base}/metrics')[1])
        loop.call_soon_threadsafe(cut.blackhole, False)
        wait_until(lambda: http_get(f'{base}/readyz')[0] == 200, timeout=30)
    finally:
        running.close()
