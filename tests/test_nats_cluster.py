"""NATS cluster faults: a private 3-node JetStream cluster, R3 streams, the stream leader killed under traffic.

The cluster (:class:`reliability.nats_cluster.NATSCluster`) runs three
``nats-server`` processes on free loopback ports, each with its own store.
Producers and consumers get every node in their DSN and ride through the
kill on their own: no test code reconnects or re-subscribes anything. A
message counts as *confirmed* when its ``send`` returned (JetStream's PubAck
came back: with R3 a majority of the nodes stored it); every confirmed
message must be handled, duplicates are counted (a kill may lose the acks of
messages being handled: they come again).

Smoke size in the normal run; the full size (more traffic, three leader
kills) with ``--slow``.
"""
from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent._tasks import TaskSet
from microagent.exceptions import MicroAgentError
from microagent.tools.nats import NATSBroker
from reliability.nats_cluster import NATSCluster

from .helpers import eventually
from .services import IN_CI

PREFIX = 'clustertest'
OPTIONS = {'prefix': PREFIX, 'replicas': 3, 'ack_wait': 3.0, 'reconnect_delay': 0.1, 'ping_interval': 1.0,
           'connect_timeout': 2.0}


@dataclass(frozen=True)
class Load:
    """``messages`` sent ``rate`` a second by one producer; the stream leader killed ``kills`` times."""

    messages: int
    rate: float
    kills: int
    consumers: int = 2


SMOKE = Load(messages=300, rate=150.0, kills=1)
FULL = Load(messages=4000, rate=300.0, kills=3, consumers=3)


@pytest.fixture
async def cluster() -> Any:
    if not NATSCluster.available():
        if IN_CI:
            pytest.fail('nats-server is not installed (CI=true: a missing service is a failure)')
        pytest.skip('nats-server is not installed')
    made = await asyncio.to_thread(NATSCluster(3).start)
    yield made
    await asyncio.to_thread(made.close)


class Ledger:
    """What the producer had confirmed, what the consumers handled (with repeats), around each kill."""

    def __init__(self) -> None:
        self.confirmed: list[int] = []
        self.refused = 0
        self.handled: collections.Counter[int] = collections.Counter()

    def missing(self) -> set[int]:
        return set(self.confirmed) - set(self.handled)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.handled.values())


def servers(dsn: str) -> list[str]:
    """The server URLs of a cluster DSN, as nats-py takes them."""
    return [f'nats://{host}' for host in dsn.removeprefix('nats://').split(',')]


async def stream_leader(dsn: str, stream: str) -> str:
    """The server name JetStream reports as the leader of *stream* (retried while an election runs)."""
    client = await nats.connect(servers(dsn), connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = client.jetstream(timeout=2)

        async def leader() -> str | None:
            try:
                info = await js.stream_info(stream)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                return None
            return info.cluster.leader if info.cluster is not None else None
        found: str = await eventually(leader, 30, interval=0.2)
        return found
    finally:
        await client.close()


async def produce(broker: NATSBroker, queue: Queue, load: Load, ledger: Ledger) -> None:
    """Send ``0..messages-1`` at about ``rate``; each returned send is confirmed, each raised one refused."""
    pause = 1 / load.rate
    for n in range(load.messages):
        try:
            await broker.send(queue.name, queue.serialize({'n': n}))
        except MicroAgentError:
            ledger.refused += 1  # not confirmed: the caller would know and send again
        else:
            ledger.confirmed.append(n)
        await asyncio.sleep(pause)  # the load's pace, not a synchronisation


def recorder(queue: Queue, ledger: Ledger) -> type[MicroAgent]:
    class Recorder(MicroAgent):
        @consumer(queue, max_inflight=8)
        async def handle(self, n: int) -> None:
            ledger.handled[n] += 1
    return Recorder


async def kill_leader_under_traffic(cluster: NATSCluster, load: Load, uid: str) -> Ledger:
    """Run *load* through the cluster, killing and restarting the stream leader ``kills`` times."""
    catalog = Catalog()
    queue = Queue(f'cl_{uid}', catalog=catalog)
    dsn = cluster.dsn()
    ledger = Ledger()
    producer = NATSBroker(dsn, catalog=catalog, publish_timeout=30, **OPTIONS)
    agents = [recorder(queue, ledger)(broker=NATSBroker(dsn, catalog=catalog, **OPTIONS))
              for _ in range(load.consumers)]
    tasks = TaskSet('nats cluster load')
    try:
        await producer.send(queue.name, queue.serialize({'n': -1}))  # creates the R3 stream
        for agent in agents:
            await agent.start()
        sending = tasks.spawn(produce(producer, queue, load, ledger), name='producer')
        stream = producer.names.stream(queue.name)
        for kill in range(load.kills):
            await eventually(lambda k=kill: len(ledger.confirmed) >= (k + 1) * load.messages // (load.kills + 2),
                             60, interval=0.05)
            node = cluster.node(await stream_leader(dsn, stream))
            await asyncio.to_thread(node.kill)
            before = len(ledger.confirmed)
            # Two nodes of three are a majority: sends are confirmed and consumers handle them while it is down.
            await eventually(lambda b=before: len(ledger.confirmed) > b + 20 and ledger.confirmed[b + 20]
                             in ledger.handled, 60, interval=0.05)
            await asyncio.to_thread(node.start)
            await asyncio.to_thread(cluster.wait_ready, 60)
        await sending
        await eventually(lambda: not ledger.missing(), 90, interval=0.1)
    finally:
        await tasks.cancel()
        for agent in agents:
            if agent.started:
                await agent.stop(timeout=2)
        await producer.close()
    return ledger


def report(ledger: Ledger, load: Load) -> str:
    return (f'{load}: confirmed {len(ledger.confirmed)}, refused {ledger.refused}, '
            f'handled {len(ledger.handled)} distinct, {ledger.duplicates} duplicates, missing {len(ledger.missing())}')


async def test_cluster_survives_stream_leader_kill_smoke(cluster: NATSCluster, uid: str) -> None:
    ledger = await kill_leader_under_traffic(cluster, SMOKE, uid)
    print(report(ledger, SMOKE))
    assert not ledger.missing()
    assert len(ledger.confirmed) + ledger.refused == SMOKE.messages


@pytest.mark.slow
async def test_cluster_survives_repeated_stream_leader_kills(cluster: NATSCluster, uid: str) -> None:
    ledger = await kill_leader_under_traffic(cluster, FULL, uid)
    print(report(ledger, FULL))
    assert not ledger.missing()
    assert len(ledger.confirmed) + ledger.refused == FULL.messages


async def test_stream_is_replicated_on_every_node(cluster: NATSCluster, uid: str) -> None:
    catalog = Catalog()
    queue = Queue(f'cr_{uid}', catalog=catalog)
    broker = NATSBroker(cluster.dsn(), catalog=catalog, **OPTIONS)
    try:
        await broker.send(queue.name, queue.serialize({'n': 1}))
        client = await nats.connect(servers(cluster.dsn()), connect_timeout=2)
        try:
            info = await client.jetstream(timeout=5).stream_info(broker.names.stream(queue.name))
        finally:
            await client.close()
        assert info.config.num_replicas == 3
        peers = {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or ())}
        assert peers == {'n1', 'n2', 'n3'}
        assert await broker.queue_length(queue.name) == 1
    finally:
        await broker.close()
