"""A private NATS cluster with JetStream: three ``nats-server`` processes on loopback ports, each its own store.

Every node has a client port, a cluster (route) port and a monitoring port,
all free loopback ports, a server name (``n1``..``n3``, the names JetStream's
stream info reports as ``cluster.leader``) and a store directory under one
temp dir. The nodes route to each other, so JetStream elects a meta leader
and places replicated streams (R3: one copy per node) across them. A node
is killed with SIGKILL (a crash) and restarted on the same ports and store,
so it rejoins the cluster and catches up from the stream leader.

>>> cluster = NATSCluster(3).start()            # doctest: +SKIP
>>> cluster.dsn()                               # every node: the client fails over
'nats://127.0.0.1:40001,127.0.0.1:40002,127.0.0.1:40003'
>>> cluster.node('n2').restart()                # doctest: +SKIP
>>> cluster.close()                             # doctest: +SKIP
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from microagent.exceptions import BackendError

from .servers import ManagedProcess, free_port, nats_binary, speaks_nats

__all__ = ['NATSCluster', 'NATSNode']

HOST = '127.0.0.1'
CLUSTER_NAME = 'microagent'


class NATSNode(ManagedProcess):
    """One node of a :class:`NATSCluster`: its name, ports, store and config file."""

    def __init__(self, name: str, base: Path) -> None:
        super().__init__()
        self.name = name
        self.port, self.route_port, self.http_port = free_port(), free_port(), free_port()
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.routes: list[int] = []

    def __repr__(self) -> str:
        return f'<NATSNode {self.name} port={self.port}>'

    def _config(self) -> Path:
        routes = ', '.join(f'"nats-route://{HOST}:{port}"' for port in self.routes if port != self.route_port)
        config = self.dir / 'node.conf'
        config.write_text(
            f'server_name: "{self.name}"\nlisten: "{HOST}:{self.port}"\nhttp: "{HOST}:{self.http_port}"\n'
            f'jetstream {{ store_dir: "{self.dir / "store"}" }}\n'
            f'cluster {{ name: "{CLUSTER_NAME}", listen: "{HOST}:{self.route_port}", routes: [{routes}] }}\n')
        return config

    def start(self, timeout: float = 20.0) -> NATSNode:
        """Start the node (on its store); returns once it accepts clients."""
        binary = nats_binary()
        if binary is None:
            raise BackendError('nats-server is not installed (apt-get install nats-server)')
        self.process = subprocess.Popen([binary, '-c', str(self._config())], stdout=self.log, stderr=self.log,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while not speaks_nats(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BackendError(f'{self!r} did not start')
            time.sleep(0.05)  # polling a child process's port: there is nothing to await
        return self

    def restart(self) -> None:
        """SIGKILL (a crash), then a start on the same ports and store."""
        self.kill()
        self.start()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def jsz(self) -> dict[str, Any]:
        """The node's JetStream monitoring page (``/jsz``), {} when it does not answer."""
        try:
            with urllib.request.urlopen(f'http://{HOST}:{self.http_port}/jsz', timeout=2) as reply:
                data: dict[str, Any] = json.loads(reply.read())
        except (OSError, ValueError):
            return {}
        return data


class NATSCluster:
    """*size* JetStream nodes routed to each other on loopback; ``close`` removes every store.

    ``start`` returns once every node serves and the nodes agree on a meta
    leader (JetStream can create replicated streams from then on).
    """

    def __init__(self, size: int = 3) -> None:
        if size < 1:
            raise BackendError('a NATS cluster needs at least one node')
        self.dir = Path(tempfile.mkdtemp(prefix='reliability-nats-cluster-'))
        self.nodes = [NATSNode(f'n{i + 1}', self.dir) for i in range(size)]
        for node in self.nodes:
            node.routes = [other.route_port for other in self.nodes]

    def __repr__(self) -> str:
        return f'<NATSCluster {[node.name for node in self.nodes]}>'

    @staticmethod
    def available() -> bool:
        return nats_binary() is not None

    def dsn(self) -> str:
        """Every node's client address: the client picks one and fails over to the others."""
        return 'nats://' + ','.join(f'{HOST}:{node.port}' for node in self.nodes)

    def node(self, name: str) -> NATSNode:
        """The node called *name* (``n1``..): how stream info names a leader."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise BackendError(f'{self!r} has no node {name!r}')

    def start(self, timeout: float = 60.0) -> NATSCluster:
        try:
            for node in self.nodes:
                node.start()
            self.wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every live node names the same meta leader and sees the whole cluster."""
        deadline = time.monotonic() + timeout
        while not self._agreed():
            if time.monotonic() > deadline:
                raise BackendError(f'{self!r}: no JetStream meta leader within {timeout:.0f}s')
            time.sleep(0.1)  # polling the servers' monitoring pages: there is nothing to await

    def _agreed(self) -> bool:
        leaders = set()
        for node in self.nodes:
            if not node.alive:
                continue
            meta = node.jsz().get('meta_cluster') or {}
            if not meta.get('leader') or int(meta.get('cluster_size') or 0) < len(self.nodes):
                return False
            leaders.add(meta['leader'])
        return len(leaders) == 1

    def close(self) -> None:
        """Stop every node and remove the stores."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
