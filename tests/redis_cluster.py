"""A private Redis Cluster for tests: 3 masters and 3 replicas of the machine's ``redis-server`` on free ports.

Never the machine's Redis on 6379: every node runs in a temp dir of its own,
on a loopback port chosen free (with its cluster bus port, +10000, free too),
with ``cluster-node-timeout`` 1000 ms so a killed master's replica takes over
within a few seconds. :func:`shared` starts one cluster per test session on
first use (the contract suite's ``redis_cluster`` backend); the session
fixture ``redis_cluster_cleanup`` in ``tests/conftest.py`` stops it, and
``atexit`` does if the session ends another way. Fault tests kill and stall
its nodes through the ``breakable_cluster`` fixture, which heals it after each
(killed nodes restarted as replicas, every master with a replica in sync).

>>> cluster = LocalCluster().start()   # doctest: +SKIP
>>> cluster.dsn()                      # doctest: +SKIP
'redis+cluster://127.0.0.1:31000,127.0.0.1:31001,127.0.0.1:31002'
>>> cluster.close()                    # doctest: +SKIP
"""
from __future__ import annotations

import atexit
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .services import IN_CI

__all__ = ['LocalCluster', 'require_cluster', 'shared', 'stop_shared']

HOST = '127.0.0.1'
_SHARED: dict[str, LocalCluster] = {}
_FAILED: dict[str, str] = {}


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """*count* ports p, each with p + 10000 (the cluster bus) free as well."""
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(20000, 30000)
        if port not in found and _free(port) and _free(port + 10000):
            found.append(port)
    return found


class LocalCluster:
    """Six redis-server processes (3 masters, 3 replicas) in temp dirs, joined with ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.ports = _free_ports(masters * 2)
        self.root = Path(tempfile.mkdtemp(prefix='microagent-redis-cluster-'))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @staticmethod
    def available() -> bool:
        return bool(shutil.which('redis-server') and shutil.which('redis-cli'))

    def dsn(self, scheme: str = 'redis+cluster') -> str:
        """The cluster DSN naming the masters' ports (any subset works: the rest is discovered)."""
        return f'{scheme}://' + ','.join(f'{HOST}:{port}' for port in self.ports[:self.masters])

    def start(self, timeout: float = 60.0) -> LocalCluster:
        try:
            for port in self.ports:
                self.start_node(port)
            subprocess.run(['redis-cli', '--cluster', 'create', *(f'{HOST}:{p}' for p in self.ports),
                            '--cluster-replicas', '1', '--cluster-yes'],
                           check=True, capture_output=True, timeout=timeout)
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def start_node(self, port: int) -> None:
        """Start (or restart, on its kept nodes.conf) the node of *port*."""
        home = self.root / str(port)
        home.mkdir(exist_ok=True)
        args = ['redis-server', '--port', str(port), '--bind', HOST, '--dir', str(home), '--daemonize', 'no',
                '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
                '--cluster-node-timeout', str(self.node_timeout_ms), '--appendonly', 'no', '--save', '',
                # A replica however long cut off may take over: the test kills masters on purpose.
                '--cluster-replica-validity-factor', '0', '--protected-mode', 'no']
        log = (home / 'log.txt').open('ab')
        try:
            self.processes[port] = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._wait(lambda: self._ping(port), f'redis-server on {port}', 15.0)

    def _ping(self, port: int) -> bool:
        try:
            with redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _wait(self, check: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f'{what}: not within {timeout}s (logs in {self.root})')
            time.sleep(0.05)  # polling child processes: there is nothing to await

    def info(self, port: int) -> dict[str, str]:
        with redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=1) as client:
            raw = client.execute_command('CLUSTER', 'INFO')
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(':', 1) for line in text.split() if ':' in line)

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, as many masters as at start, each with replicas in sync."""
        try:
            live = [port for port, proc in self.processes.items() if proc.poll() is None]
            if not live or any(self.info(port).get('cluster_state') != 'ok' for port in live):
                return False
            roles = self.roles()
        except (redis.RedisError, OSError):
            return False
        masters = [port for port, role in roles.items() if role == 'master']
        return len(masters) == self.masters and len(roles) == len(live) and all(map(self._replicated, masters))

    def _replicated(self, port: int) -> bool:
        """Whether every replica of the master on *port* is in sync (WAIT counts only those)."""
        with redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=1) as client:
            info = client.info('replication')
        replicas = [value for key, value in info.items() if key.startswith('slave') and isinstance(value, dict)]
        return bool(replicas) and all(replica.get('state') == 'online' for replica in replicas)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        self._wait(self.healthy, 'the Redis cluster is not healthy', timeout)

    def nodes(self) -> list[list[str]]:
        """``CLUSTER NODES`` of the first live node, one split line per node that is not failing."""
        with redis.Redis(host=HOST, port=self.live_port(), socket_timeout=2, socket_connect_timeout=1) as client:
            raw = client.execute_command('CLUSTER', 'NODES')
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        lines = [line.split() for line in text.splitlines()]
        return [parts for parts in lines if len(parts) >= 4 and 'fail' not in parts[2] and 'noaddr' not in parts[2]]

    def roles(self) -> dict[int, str]:
        """``{port: 'master' | 'slave'}`` of the live nodes, as the first live node sees them."""
        return {_port(parts): 'master' if 'master' in parts[2] else 'slave' for parts in self.nodes()}

    def replica_of(self, master_port: int) -> int:
        """The port of a live replica of the master on *master_port*."""
        nodes = self.nodes()
        master_id = next(parts[0] for parts in nodes if _port(parts) == master_port)
        return next(_port(parts) for parts in nodes if parts[3] == master_id)

    def master_of(self, key: str) -> int:
        """The port of the master serving *key* now."""
        with redis.RedisCluster(host=HOST, port=self.live_port(), socket_timeout=2) as client:
            node = client.get_node_from_key(key)
            return int(node.port)

    def live_port(self) -> int:
        return next(p for p, proc in self.processes.items() if proc.poll() is None)

    def cut_replicas(self, master: int) -> None:
        """Close the replication links of the master on *master* (its replicas reconnect within a second)."""
        with redis.Redis(host=HOST, port=master, socket_timeout=2, socket_connect_timeout=1) as client:
            client.execute_command('CLIENT', 'KILL', 'TYPE', 'replica')

    def pause(self, port: int) -> None:
        """SIGSTOP the node of *port*: it falls behind (a replica stops taking the master's stream)."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.processes[port].send_signal(signal.SIGCONT)

    def kill(self, port: int) -> None:
        """SIGKILL the node of *port* (no chance to flush or to hand over)."""
        process = self.processes[port]
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def fail_over(self, master: int, timeout: float = 60.0) -> int:
        """After *master* was killed: wait until its replica took over, restart it (it rejoins as a replica).

        Without persistence the order matters: a master restarted before its
        replica took over comes back empty and keeps its slots (all lost).
        """
        replica = self.replica_of(master)
        self._wait(lambda: self._role(replica) == 'master', f'replica {replica} of {master} taking over', timeout)
        self.start_node(master)
        return replica

    def _role(self, port: int) -> str:
        try:
            with redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1) as client:
                return str(client.info('replication').get('role'))
        except redis.RedisError:
            return ''

    def heal(self, timeout: float = 60.0) -> None:
        """Resume paused nodes, restart killed ones (they rejoin as replicas), wait until healthy."""
        for port, process in list(self.processes.items()):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
            else:
                self.start_node(port)
        self.wait_healthy(timeout)

    def close(self) -> None:
        """Kill every node and remove the temp dirs (idempotent)."""
        processes, self.processes = self.processes, {}
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        for process in processes.values():
            process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _port(parts: list[str]) -> int:
    return int(parts[1].split('@')[0].rsplit(':', 1)[1])


def shared() -> LocalCluster:
    """The session's cluster, started on first use (stopped by :func:`stop_shared` or at exit)."""
    if 'failed' in _FAILED:
        raise RuntimeError(f'the shared Redis cluster did not start: {_FAILED["failed"]}')
    if 'cluster' not in _SHARED:
        cluster = LocalCluster()
        atexit.register(cluster.close)
        try:
            _SHARED['cluster'] = cluster.start()
        except Exception as exc:  # one attempt per session: not one per test
            _FAILED['failed'] = str(exc)
            raise
    return _SHARED['cluster']


def stop_shared() -> None:
    cluster = _SHARED.pop('cluster', None)
    if cluster is not None:
        cluster.close()


def require_cluster() -> LocalCluster:
    """The shared cluster, or skip (locally) / fail (CI=true) without ``redis-server``."""
    if not LocalCluster.available():
        message = 'redis-server / redis-cli are not installed'
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return shared()


@pytest.fixture
def breakable_cluster() -> Iterator[LocalCluster]:
    """The shared cluster, for a test that kills or stalls its nodes: healed after it (always)."""
    cluster = require_cluster()
    try:
        yield cluster
    finally:
        cluster.heal()
