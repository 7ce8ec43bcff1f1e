"""One rig per backend: its broker (ours where we may restart it), the fault proxy in front, the DSNs.

Every client of the run (the producer and the agent processes) connects
through the proxy, so a cut reaches only our connections. Broker restarts
hit only brokers we started (our redis-server, our RabbitMQ node, our
tansu). Where no private RabbitMQ node can be started (no local
``rabbitmq-server``), AMQP runs on the shared server with a user of its own,
and a restart there (``stop_app``/``start_app``) affects every user of the
machine's server: allowed only when the caller says so.

>>> rig = await make_rig('redis', uid='ab12', durable=True)   # doctest: +SKIP
>>> rig.dsn          # through the proxy                        # doctest: +SKIP
'redis://127.0.0.1:40123/0'
>>> await rig.restart(); await rig.close()                      # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
from dataclasses import dataclass, field
from typing import Any

import aiormq

from microagent.broker import AbstractQueueBroker
from microagent.exceptions import ConfigurationError
from microagent.tools.amqp import AMQPBroker
from microagent.tools.kafka import KafkaBroker
from microagent.tools.nats import NATSBroker
from microagent.tools.redis import RedisBroker

from .proxy import FaultProxy
from .servers import (
    MotoServer,
    NATSServer,
    RabbitServer,
    RabbitUser,
    RedisServer,
    TansuServer,
    free_port,
    port_open,
    rabbitmqctl,
)

__all__ = ['BACKENDS', 'Rig', 'make_rig']

BACKENDS = ('redis', 'amqp', 'kafka', 'nats')
COMMON = {'max_attempts': 3, 'retry_delay': 0.1, 'max_retry_delay': 0.5, 'max_inflight': 8,
          'max_message_size': 64 * 1024}


@dataclass
class Rig:
    """A backend ready for a run: ``dsn`` goes through ``proxy``; ``lease`` is how long a stopped consumer
    keeps its messages before another takes them over (None: it keeps them)."""

    backend: str  # its name in reports: the backend, and any option that sets the run apart
    dsn: str
    proxy: FaultProxy
    options: dict[str, Any]
    lease: float | None
    can_restart: bool
    secret: str | None = None
    _servers: list[Any] = field(default_factory=list)
    _user: RabbitUser | None = None
    queues: list[str] = field(default_factory=list)

    def broker(self, **extra: Any) -> AbstractQueueBroker:
        """A plain broker of this backend (the producer's), through the proxy."""
        cls = {'redis': RedisBroker, 'amqp': AMQPBroker, 'kafka': KafkaBroker, 'nats': NATSBroker}[self.kind]
        broker: AbstractQueueBroker = cls(self.dsn, **{**self.options, **extra})
        return broker

    @property
    def kind(self) -> str:
        """The backend (``amqp`` for ``amqp fast_lane=False``)."""
        return self.backend.split()[0]

    async def restart(self) -> None:
        """Kill the broker and start it again (its durable storage kept); returns once it is back."""
        if not self.can_restart:
            raise ConfigurationError(f'{self.backend}: broker restart is not allowed in this run')
        if self.kind == 'amqp' and self._user is not None:  # the shared server
            await asyncio.to_thread(rabbitmqctl, 'stop_app')
            await asyncio.to_thread(rabbitmqctl, 'start_app')
            await asyncio.to_thread(rabbitmqctl, 'await_startup')
            return
        await asyncio.to_thread(self._servers[-1].restart)

    async def cut_natively(self) -> None:
        """The backend's own way to drop our connections (CLIENT KILL, close_all_user_connections)."""
        if self.kind == 'amqp':
            closer = self._user or self._servers[0]
            await asyncio.to_thread(closer.close_connections)
        elif self.kind == 'redis':
            server = self._servers[0]
            await asyncio.to_thread(_redis_cli, server.port, server.password, 'CLIENT', 'KILL', 'TYPE', 'normal')
            await asyncio.to_thread(_redis_cli, server.port, server.password, 'CLIENT', 'KILL', 'TYPE', 'pubsub')
        else:
            await self.proxy.reset()

    async def close(self) -> None:
        await self.proxy.close()
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(getattr(server, 'close', server.stop))
        if self._user is not None:
            await _drop_amqp(self._user, self.queues)


def _redis_cli(port: int, password: str | None, *args: str) -> None:
    auth = ['--no-auth-warning', '-a', password] if password else []
    subprocess.run(['redis-cli', '-p', str(port), *auth, *args], capture_output=True, timeout=10, check=False)


async def _drop_amqp(user: RabbitUser, queues: list[str]) -> None:
    """Delete our queues (one rabbitmqctl call to list them, deletes over AMQP), then our user."""
    names = (await asyncio.to_thread(rabbitmqctl, 'list_queues', '-q', '--no-table-headers', 'name')).split()
    ours = [name for name in names if any(name.startswith(q) for q in queues)]
    if ours:
        async with asyncio.timeout(30):
            connection = await aiormq.connect(user.dsn())
            try:
                channel = await connection.channel()
                for name in ours:
                    await channel.queue_delete(name)
            finally:
                await connection.close()
    with contextlib.suppress(subprocess.CalledProcessError):
        await asyncio.to_thread(user.delete)


async def make_rig(backend: str, *, uid: str, durable: bool, rabbit_restart: bool = False,
                   secret: str | None = None, options: dict[str, Any] | None = None) -> Rig:
    """Start what *backend* needs. ``durable``: storage that survives a restart (Kafka: S3 on moto).

    ``rabbit_restart``: AMQP on the shared server (no local ``rabbitmq-server`` for a node of our own) may
    be restarted. *options* go to the brokers and name the run apart (``amqp fast_lane=False``).
    """
    if backend == 'redis':
        rig = await _redis_rig(uid, secret or f'canary{uid}')
    elif backend == 'amqp':
        rig = await _amqp_rig(rabbit_restart)
    elif backend == 'kafka':
        rig = await _kafka_rig(durable)
    elif backend == 'nats':
        rig = await _nats_rig(secret or f'canary{uid}')
    else:
        raise ConfigurationError(f'unknown backend {backend!r}, expected one of {BACKENDS}')
    if options:
        rig.options.update(options)
        rig.backend = ' '.join([backend, *(f'{key}={value}' for key, value in options.items())])
    return rig


async def _redis_rig(uid: str, secret: str | None) -> Rig:
    port = 6390 if not port_open(6390) else free_port()
    server = await asyncio.to_thread(RedisServer(port, password=secret).start)
    proxy = await FaultProxy(server.port).start()
    options = {**COMMON, 'prefix': f'rel{uid}', 'heartbeat_interval': 0.5, 'heartbeat_ttl': 2.0}
    return Rig('redis', server.dsn(proxy.port), proxy, options, lease=2.0, can_restart=True, secret=secret,
               _servers=[server])


async def _amqp_rig(rabbit_restart: bool) -> Rig:
    # RabbitMQ has no lease for a stopped consumer short of its 30 min consumer_timeout: it keeps the messages.
    if RabbitServer.available():
        server = RabbitServer()
        try:
            await asyncio.to_thread(server.start)
        except BaseException:
            await asyncio.to_thread(server.close)  # a node that did not come up leaves nothing behind
            raise
        proxy = await FaultProxy(server.port).start()
        # The node is down ~7 s in a restart: with the default backoff cap (5 s) a client may retry only ~5 s
        # after it is back. A cap of 1 s is to reconnects what the 0.5 s Redis heartbeat and the 2 s Kafka
        # session are to their takeovers: the deployment choice of a service that wants to recover fast.
        options = {**COMMON, 'max_reconnect_delay': 1.0}
        return Rig('amqp', server.dsn(proxy.port), proxy, options, lease=None, can_restart=True,
                   secret=server.password, _servers=[server])
    if not port_open(5672):
        raise ConfigurationError('RabbitMQ is not listening on 127.0.0.1:5672')
    user = await asyncio.to_thread(RabbitUser().create)
    proxy = await FaultProxy(5672).start()
    return Rig('amqp', user.dsn(proxy.port), proxy, dict(COMMON), lease=None, can_restart=rabbit_restart,
               secret=user.password, _user=user)


async def _nats_rig(secret: str) -> Rig:
    # A private nats-server (its own port and JetStream store): killed and restarted on that store.
    server = NATSServer(password=secret)
    try:
        await asyncio.to_thread(server.start)
    except BaseException:
        await asyncio.to_thread(server.close)
        raise
    proxy = await FaultProxy(server.port).start()
    # ack_wait is the NATS counterpart of the Redis heartbeat ttl: how long a dead consumer keeps its messages.
    # Not 2 s: the kill phase kills a worker about every 2 s, and a redelivery exactly one kill period later
    # would meet the next kill in phase (a slow message then dies with three workers in a row: dead-lettered).
    options = {**COMMON, 'prefix': 'reliability', 'ack_wait': 3.0, 'reconnect_delay': 0.25}
    return Rig('nats', server.dsn(proxy.port), proxy, options, lease=3.0, can_restart=True, secret=secret,
               _servers=[server])


async def _kafka_rig(durable: bool) -> Rig:
    proxy = FaultProxy(0)
    await proxy.start()
    servers: list[Any] = []
    storage, env = 'memory://tansu/', None
    if durable and MotoServer.available():
        moto = MotoServer()
        storage, env = await asyncio.to_thread(moto.start)
        servers.append(moto)
    tansu = TansuServer(proxy.port, storage, env)
    servers.append(tansu)
    await asyncio.to_thread(tansu.start)
    proxy.target = tansu.port
    options = {**COMMON, 'session_timeout': 2.0, 'partitions': 2, 'request_timeout': 10.0,
               'commit_window': 4 * COMMON['max_inflight'],  # the default, stated: the verdict's bound uses it
               'fetch_max_wait_ms': 100}  # tansu holds an idle fetch that long: recovery times would include it
    return Rig('kafka', f'kafka://127.0.0.1:{proxy.port}', proxy, options, lease=2.0,
               can_restart=storage != 'memory://tansu/', _servers=servers)
