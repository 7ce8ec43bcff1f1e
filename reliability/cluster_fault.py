"""The RabbitMQ cluster fault: kill the node leading a quorum queue, then restart it, while traffic flows.

A producer sends numbered messages (at least the size's count, and on until
the last node is back), each awaited to its confirm, at a steady pace to a
quorum queue of a :class:`~reliability.rabbit_cluster.RabbitCluster`; an
agent consumes them. Both connect to the queue's leader first (its host
leads the DSN), so its death moves them to another node. Each round waits
for a share of the load, kills the node leading the queue at that moment
(SIGKILL of the node's process group), waits until a message confirmed after
the kill is handled (the consumer resumed by itself) and starts the node
again on its data. Pass: ``lost == 0`` (every confirmed message handled) and
``failed == 0`` (no send gave up within its 60 s deadline).

    .venv/bin/python -m reliability.cluster_fault --size smoke    # 300 messages, one kill
    .venv/bin/python -m reliability.cluster_fault --size full     # 5,000 messages, three kills

Not run: needs RabbitMQ server binaries.

>>> figures = await leader_kill(cluster, uid='ab12', total=300, kills=1, pause=0.01)
>>> figures['lost'], figures['failed']
(0, 0)
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from microagent import BackendError, Catalog, MicroAgent, Queue, consumer
from microagent.tools.amqp import AMQPBroker

from .rabbit_cluster import RabbitCluster

__all__ = ['SIZES', 'leader_kill']

log = logging.getLogger('reliability.cluster')

# total messages, leader kills, pause between sends (s)
SIZES = {'smoke': (300, 1, 0.01), 'full': (5000, 3, 0.005)}


@dataclass
class Traffic:
    """A paced producer of numbered messages and what came of them.

    It sends at least *total*, and goes on until ``faults_done`` is set: every kill and restart happens
    while traffic flows, however slow the machine.
    """

    broker: AMQPBroker
    queue: str
    total: int
    pause: float
    confirmed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    faults_done: asyncio.Event = field(default_factory=asyncio.Event)

    def confirmed_at_least(self, count: int) -> Callable[[], bool]:
        return lambda: len(self.confirmed) >= count

    async def produce(self) -> None:
        bound = getattr(self.broker, self.queue)
        n = 0
        try:
            while n < self.total or not self.faults_done.is_set():
                try:
                    await bound.send({'n': n}, timeout=60)  # waits out a failover, never hangs
                except BackendError as exc:
                    self.failed.append(n)  # not confirmed: no promise was made for it
                    log.warning('send %d failed: %s', n, exc)
                else:
                    self.confirmed.append(n)
                n += 1
                await asyncio.sleep(self.pause)  # the load's pace, not a synchronisation
        finally:
            self.done.set()


def ordered(cluster: RabbitCluster, first: int) -> str:
    """The cluster's DSN with node *first* first: the clients connect to it, so its death moves them."""
    ports = cluster.ports
    return cluster.dsn([ports[first], *(p for n, p in enumerate(ports) if n != first)])


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll *predicate* (the traffic's progress) until true; TimeoutError after *timeout*."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)  # polling counters the handlers update: nothing to await


async def leader_kill(cluster: RabbitCluster, *, uid: str, total: int, kills: int, pause: float,
                      closing: list[Any] | None = None) -> dict[str, Any]:
    """Run the fault on *cluster*; its figures (``lost``, ``failed``, per kill the recovery times).

    *closing* collects the brokers made (the caller closes them); None: closed here.
    """
    made: list[Any] = [] if closing is None else closing
    try:
        return await _run(cluster, made, uid, total=total, kills=kills, pause=pause)
    finally:
        if closing is None:
            for broker in reversed(made):
                with contextlib.suppress(Exception):
                    await broker.close()


async def _run(cluster: RabbitCluster, closing: list[Any], uid: str, *, total: int, kills: int,
               pause: float) -> dict[str, Any]:
    catalog = Catalog()
    queue = Queue(f'ql_{uid}', catalog=catalog)
    options: dict[str, Any] = {'catalog': catalog, 'queue_type': 'quorum', 'max_reconnect_delay': 0.5,
                               'connect_timeout': 5}
    setup = AMQPBroker(cluster.dsn(), **options)
    closing.append(setup)
    await getattr(setup, queue.name).send({'n': -1})  # declares the queue: a Raft group over the nodes
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
    figures: dict[str, Any] = {'total': total, 'kills': []}
    producing = asyncio.ensure_future(traffic.produce())
    try:
        for round_ in range(kills):
            await until(traffic.confirmed_at_least((round_ + 1) * total // (kills + 1)), 120)
            figures['kills'].append(await _kill_round(cluster, queue.name, traffic))
        traffic.faults_done.set()
        await asyncio.wait_for(traffic.done.wait(), 300)
        await until(lambda: traffic.seen >= set(traffic.confirmed), 60)
    finally:
        if not producing.done():
            producing.cancel()
        await agent.stop(timeout=5)
    figures.update(sent=len(traffic.confirmed) + len(traffic.failed), confirmed=len(traffic.confirmed),
                   failed=len(traffic.failed),
                   lost=len(set(traffic.confirmed) - traffic.seen),
                   consumer_connects=consumer_broker.consume_connection.connects,
                   producer_connects=traffic.broker.connection.connects)
    log.info('leader kill figures: %s', figures)
    return figures


async def _kill_round(cluster: RabbitCluster, queue: str, traffic: Traffic) -> dict[str, Any]:
    leader = await asyncio.to_thread(cluster.leader, queue)
    before = len(traffic.confirmed)
    killed = time.monotonic()
    await asyncio.to_thread(cluster.kill, leader)
    # The consumer resumed by itself: a message confirmed after the kill is handled.
    await until(lambda: any(n in traffic.seen for n in traffic.confirmed[before + 1:]), 60)
    resumed = time.monotonic() - killed
    await asyncio.to_thread(cluster.restart, leader)
    return {'leader': leader, 'resumed_s': round(resumed, 2), 'back_s': round(time.monotonic() - killed, 2)}


async def _main(size: str) -> dict[str, Any]:
    total, kills, pause = SIZES[size]
    cluster = await asyncio.to_thread(lambda: RabbitCluster().start())
    try:
        return await leader_kill(cluster, uid=uuid.uuid4().hex[:8], total=total, kills=kills, pause=pause)
    finally:
        await asyncio.to_thread(cluster.close)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m reliability.cluster_fault', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', choices=sorted(SIZES), default='smoke')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    figures = asyncio.run(_main(args.size))
    sys.stdout.write(json.dumps(figures) + '\n')
    return 0 if figures['lost'] == 0 and figures['failed'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
