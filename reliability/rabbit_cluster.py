"""A private RabbitMQ cluster on loopback: three nodes of our own, joined with ``rabbitmqctl join_cluster``.

Each node is a :class:`~reliability.servers.RabbitServer` (its own node name
``rt<uid>-<n>@localhost``, AMQP and distribution ports, Mnesia and log
directories under a temp dir, no plugins: no management port), all with one
Erlang cookie, so they can cluster and ``rabbitmqctl`` can reach them. None
touches the machine's node on 5672. Erlang VMs are heavy on a small machine:
the nodes run one scheduler each without busy-waiting, and a test session
starts the cluster once (``tests/rabbit_cluster.py``: a session fixture).

A fault is :meth:`RabbitCluster.kill` of one node (SIGKILL of its process
group: a crash), then :meth:`RabbitCluster.restart`: it boots on its data and
rejoins its peers by itself. :meth:`RabbitCluster.leader` names the node that
leads a quorum queue (``rabbitmqctl list_queues name leader``).

>>> cluster = RabbitCluster().start()          # doctest: +SKIP
>>> cluster.dsn()                              # doctest: +SKIP
'amqp://reliability_ab12:canary...@127.0.0.1:41001,127.0.0.1:41003,127.0.0.1:41005/'
>>> index = cluster.leader('mailer'); cluster.kill(index); cluster.restart(index)   # doctest: +SKIP
>>> cluster.close()                            # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from microagent.exceptions import BackendError

from .servers import HOST, RabbitServer

__all__ = ['ClusterNode', 'RabbitCluster']

# One scheduler and no busy-waiting: three idle nodes then cost little CPU on two shared cores.
_SMALL_VM = '+S 1:1 +SDio 2 +A 4 +sbwt none +sbwtdcpu none +sbwtdio none'


class ClusterNode(RabbitServer):
    """One node of a :class:`RabbitCluster`: a given node name, the cluster's cookie, user and password."""

    def __init__(self, node: str, cookie: str, user: str, password: str) -> None:
        super().__init__()
        self.node = node
        self.user = user
        self.password = password
        self.cookie = cookie

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env['RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS'] = f"{env['RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS']} {_SMALL_VM}"
        return env

    def _configure(self) -> None:
        cookie = self.dir / '.erlang.cookie'
        if not cookie.exists():
            # The shared cookie, read by the node and by rabbitmqctl (HOME is the node's dir).
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        super()._configure()


class RabbitCluster:
    """Three (or *size*) private RabbitMQ nodes clustered on loopback; see the module docstring."""

    def __init__(self, size: int = 3) -> None:
        uid = uuid.uuid4().hex[:6]
        cookie = secrets.token_hex(16).upper()
        user, password = f'reliability_{uid}', f'canary{uuid.uuid4().hex}'
        self.nodes = [ClusterNode(f'rt{uid}-{n}@localhost', cookie, user, password) for n in range(1, size + 1)]
        self.user, self.password = user, password

    def __repr__(self) -> str:
        return f'<RabbitCluster {[node.node for node in self.nodes]}>'

    @staticmethod
    def available() -> bool:
        return RabbitServer.available()

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def dsn(self, ports: list[int] | None = None) -> str:
        """One DSN naming every node (``host:port,host:port``): the client fails over between them."""
        hosts = ','.join(f'{HOST}:{port}' for port in ports or self.ports)
        return f'amqp://{self.user}:{self.password}@{hosts}/'

    def start(self, timeout: float = 180.0) -> RabbitCluster:
        """Start every node; the second and later join the first. Nothing is left running on failure."""
        try:
            # The nodes boot side by side (most of a boot is waiting), then join the first one by one.
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                for started in [pool.submit(node.start, timeout) for node in self.nodes]:
                    started.result()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl('stop_app')
                node.ctl('join_cluster', first.node)
                node.ctl('start_app')  # returns once the node runs, clustered
        except BaseException:
            self.close()
            raise
        return self

    def kill(self, index: int) -> None:
        """SIGKILL node *index* (a crash); its peers go on."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 120.0) -> None:
        """Start node *index* again on its data; returns once it serves AMQP (it rejoins by itself)."""
        self.nodes[index].start(timeout)

    def running(self) -> list[int]:
        """The indexes of the nodes whose process runs."""
        return [n for n, node in enumerate(self.nodes) if node.process is not None and node.process.poll() is None]

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl`` on the first running node."""
        for index in self.running():
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                return self.nodes[index].ctl(*args, timeout=timeout)
        raise BackendError(f'{self!r}: no node answers rabbitmqctl {args[0]}')

    def leader(self, queue: str, timeout: float = 30.0) -> int:
        """The index of the node that leads quorum queue *queue* (waits for an election to settle)."""
        deadline = time.monotonic() + timeout
        names = [node.node for node in self.nodes]
        while True:
            for line in self.ctl('list_queues', '-q', '--no-table-headers', 'name', 'leader').splitlines():
                name, _, leader = line.strip().partition('\t')
                if name == queue and leader.strip() in names:
                    return names.index(leader.strip())
            if time.monotonic() > deadline:
                raise BackendError(f'{self!r}: no leader for {queue} within {timeout}s')
            time.sleep(0.5)  # polling rabbitmqctl: there is nothing to await

    def close(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()
        for node in self.nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
