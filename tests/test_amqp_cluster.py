"""RabbitMQ cluster faults: the node leading a quorum queue is killed and restarted while traffic flows.

One private three-node cluster (reliability/rabbit_cluster.py: its own node
names, ports, data directories and cookie; the machine's node on 5672 is not
touched) serves the whole test session: starting it costs about 20 s of the
two shared cores. The smoke size runs a few hundred messages through one
kill; ``--slow`` runs thousands through a kill of each leader in turn.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from microagent import BackendError, Catalog, MicroAgent, Queue, consumer
from microagent.tools.amqp import AMQPBroker
from reliability.rabbit_cluster import RabbitCluster

from .helpers import eventually
from .services import IN_CI

log = logging.getLogger('tests.amqp_cluster')


@pytest.fixture(scope='session')
def cluster() -> Iterator[RabbitCluster]:
    if not RabbitCluster.available():
        if IN_CI:
            pytest.fail('CI=true: rabbitmq-server is required for the cluster tests')
        pytest.skip('rabbitmq-server is not installed')
    made = RabbitCluster().start()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    items: list[Any] = []
    yield items
    for item in reversed(items):
        await item.close()


@dataclass
class Traffic:
    """A paced producer of numbered messages and what came of them."""

    broker: AMQPBroker
    queue: str
    total: int
    pause: float
    confirmed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def produce(self) -> None:
        bound = getattr(self.broker, self.queue)
        try:
            for n in range(self.total):
                try:
                    await bound.send({'n': n}, timeout=60)  # waits out a failover, never hangs
                except BackendError as exc:
                    self.failed.append(n)  # not confirmed: no promise was made for it
                    log.warning('send %d failed: %s', n, exc)
                else:
                    self.confirmed.append(n)
                await asyncio.sleep(self.pause)  # the load's pace, not a synchronisation
        finally:
            self.done.set()


def ordered(cluster: RabbitCluster, first: int) -> str:
    """The cluster's DSN with node *first* first: the clients connect to it, so its death moves them."""
    ports = cluster.ports
    return cluster.dsn([ports[first], *(p for n, p in enumerate(ports) if n != first)])


async def kill_leader_while_traffic_flows(cluster: RabbitCluster, closing: list[Any], uid: str, *,
                                          total: int, kills: int, pause: float) -> dict[str, Any]:
    catalog = Catalog()
    queue = Queue(f'ql_{uid}', catalog=catalog)
    options = {'catalog': catalog, 'queue_type': 'quorum', 'max_reconnect_delay': 0.5, 'connect_timeout': 5}
    setup = AMQPBroker(cluster.dsn(), **options)
    closing.append(setup)
    await getattr(setup, queue.name).send({'n': -1})  # declares the queue: a Raft group over the three nodes
    leader = await asyncio.to_thread(cluster.leader, queue.name)
    consumer_broker = AMQPBroker(ordered(cluster, leader), **options)
    traffic = Traffic(AMQPBroker(ordered(cluster, leader), **options), queue.name, total, pause)
    closing.extend([traffic.broker, consumer_broker])

    class Agent(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            traffic.seen.add(n)
    agent = Agent(broker=consumer_broker)
    await agent.start()
    figures: dict[str, Any] = {'kills': [], 'total': total}
    producing = asyncio.ensure_future(traffic.produce())
    try:
        for round_ in range(kills):
            await eventually(lambda: len(traffic.confirmed) >= (round_ + 1) * total // (kills + 1), 120)
            leader = await asyncio.to_thread(cluster.leader, queue.name)
            before = len(traffic.confirmed)
            killed = time.monotonic()
            await asyncio.to_thread(cluster.kill, leader)
            # Consumers resume on their own: a message sent after the kill is handled.
            await eventually(lambda: any(n in traffic.seen for n in traffic.confirmed[before + 1:]), 60)
            resumed = time.monotonic() - killed
            await asyncio.to_thread(cluster.restart, leader)
            figures['kills'].append({'leader': leader, 'resumed_s': round(resumed, 2),
                                     'back_s': round(time.monotonic() - killed, 2)})
        await asyncio.wait_for(traffic.done.wait(), 300)
        await eventually(lambda: traffic.seen >= set(traffic.confirmed), 60)
    finally:
        if not producing.done():
            producing.cancel()
        await agent.stop(timeout=5)
    figures.update(confirmed=len(traffic.confirmed), failed=len(traffic.failed),
                   lost=len(set(traffic.confirmed) - traffic.seen),
                   consumer_connects=consumer_broker.consume_connection.connects,
                   producer_connects=traffic.broker.connection.connects)
    log.warning('leader kill figures: %s', figures)
    return figures


@pytest.mark.timeout(240)
async def test_kill_the_quorum_leader_while_traffic_flows_nothing_lost(cluster, closing, uid):
    figures = await kill_leader_while_traffic_flows(cluster, closing, uid, total=300, kills=1, pause=0.01)
    assert figures['lost'] == 0 and figures['failed'] == 0
    assert figures['confirmed'] == 300
    # Both were connected to the killed node and went on through another one.
    assert figures['consumer_connects'] >= 2 and figures['producer_connects'] >= 2


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_kill_each_leader_in_turn_at_full_size(cluster, closing, uid):
    figures = await kill_leader_while_traffic_flows(cluster, closing, uid, total=5000, kills=3, pause=0.005)
    assert figures['lost'] == 0 and figures['failed'] == 0
    assert figures['confirmed'] == 5000
