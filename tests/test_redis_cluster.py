"""The Redis backends on a Redis Cluster: DSN, one slot per queue, WAIT-confirmed sends, leases, node failures.

The contract suite runs on the shared cluster too (``tests/backends/redis_cluster.py``). The fault tests
here kill nodes of it (``breakable_cluster``: healed after each test).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass

import pytest
import redis

from benchmarks import redis_cluster as benchmark
from microagent import (
    BackendError,
    Catalog,
    ConfigurationError,
    ConnectError,
    MicroAgent,
    Queue,
    Signal,
    consumer,
    receiver,
)
from microagent.backends import broker_class, bus_class, lease_class
from microagent.tools.redis import RedisBroker, RedisLease, RedisSignalBus
from microagent.tools.redis._cluster import ClusterConnector, parse_cluster_dsn

from .helpers import Collector, eventually
from .redis_cluster import LocalCluster, breakable_cluster, require_cluster
from .services import require_port

__all__ = ['breakable_cluster']


def test_dsn_is_parsed_and_its_password_never_shown():
    parts = parse_cluster_dsn('rediss+cluster://app:s%40cret@10.0.0.1:7000, [::1]:7001/0')
    assert parts.nodes == [('10.0.0.1', 7000), ('::1', 7001)]
    assert (parts.username, parts.password, parts.tls) == ('app', 's@cret', True)
    connector = ClusterConnector('redis+cluster://:s3cret@127.0.0.1:7000', 'microagent.test')
    assert 's3cret' not in repr(connector)
    assert 's3cret' not in str(connector.error(OSError('auth s3cret refused')))
    for bad in ('redis+cluster://127.0.0.1', 'redis+cluster://h:1/3', 'redis+cluster://h:1?x=1',
                'redis+cluster://:s3cret@h:99999'):
        with pytest.raises(ConfigurationError) as info:
            parse_cluster_dsn(bad)
        assert 's3cret' not in str(info.value)


def test_cluster_schemes_serve_the_redis_classes():
    dsn = 'redis+cluster://127.0.0.1:7000,127.0.0.1:7001'
    assert (broker_class(dsn), bus_class(dsn), lease_class(dsn)) == (RedisBroker, RedisSignalBus, RedisLease)
    assert broker_class('rediss+cluster://h:1') is RedisBroker


async def test_microagent1_lists_are_refused_on_a_cluster():
    with pytest.raises(ConfigurationError, match='Cluster'):
        RedisBroker('redis+cluster://127.0.0.1:7000', wire='microagent1')
    catalog = Catalog()
    Queue('mailer', catalog=catalog)
    broker = RedisBroker('redis+cluster://127.0.0.1:7000', catalog=catalog)
    assert not broker.drain_lists
    with pytest.raises(ConfigurationError, match='Cluster'):
        await broker.migrate_queue('mailer')  # raised before any connection


async def test_a_refused_login_fails_fast_without_the_password(uid):
    cluster = require_cluster()
    catalog = Catalog()
    Signal(f's_{uid}', ['n'], catalog=catalog)
    bus = RedisSignalBus(cluster.dsn().replace('://', '://:s3cret-pw@'), catalog=catalog)
    try:
        with pytest.raises(ConnectError, match='authentication refused') as info:
            await bus.bind(f'T:{uid}')
        assert 's3cret-pw' not in str(info.value)
    finally:
        await bus.close()


async def test_each_queue_keeps_its_keys_on_one_slot_and_queues_spread_over_masters(uid):
    cluster = require_cluster()
    catalog = Catalog()
    names = [f'q{i}_{uid}' for i in range(12)]
    for name in names:
        Queue(name, catalog=catalog)
    broker = RedisBroker(cluster.dsn(), catalog=catalog, prefix=f'T{uid}')
    try:
        for name in names:
            await broker.send(name, '{}')
        client = broker.redis.client()
        masters = set()
        for name in names:
            stream = broker.stream(name)
            assert stream == f'T{uid}:{{{name}}}'
            slots = {client.keyslot(key) for key in (stream, f'{stream}.dlq', f'{stream}.delayed')}
            assert len(slots) == 1
            masters.add(client.get_node_from_key(stream).name)
            assert await broker.queue_length(name) == 1
        assert len(masters) >= 2  # 12 queues on 3 masters: all on one has a chance of 3 ** -11
    finally:
        await broker.redis.client().delete(*(broker.stream(name) for name in names))
        await broker.close()


async def test_min_replicas_confirms_sends_and_reports_what_it_cannot(uid):
    cluster = require_cluster()
    catalog = Catalog()
    queue = Queue(f'a_{uid}', exchange=f'x_{uid}', catalog=catalog)
    other = Queue(f'b_{uid}', exchange=f'x_{uid}', catalog=catalog)
    broker = RedisBroker(cluster.dsn(), catalog=catalog, prefix=f'T{uid}', min_replicas=1)
    greedy = RedisBroker(cluster.dsn(), catalog=catalog, prefix=f'T{uid}', min_replicas=2, replicas_timeout=0.2)
    try:
        await broker.send(queue.name, '{"n": 1}', headers={'k': 'v'})
        await broker.send(queue.name, '{"n": 2}')
        await broker.send_many(queue.name, ['{"n": 3}', '{"n": 4}'])
        await broker.publish(f'x_{uid}', '{"n": 5}')
        assert await broker.queue_length(queue.name) == 5
        assert await broker.queue_length(other.name) == 1
        # One replica per master: two is more than there are, so the send is not confirmed (and says so).
        with pytest.raises(BackendError, match=r'not confirmed: 1 of 2 replicas'):
            await greedy.send(queue.name, '{"n": 6}')
    finally:
        await broker.redis.client().delete(broker.stream(queue.name), broker.stream(other.name))
        await broker.close()
        await greedy.close()


async def test_min_replicas_on_one_server_without_replicas_is_an_error(uid):
    require_port('redis', 6379)
    catalog = Catalog()
    Queue(f'q_{uid}', catalog=catalog)
    broker = RedisBroker('redis://127.0.0.1:6379/15', catalog=catalog, prefix=f'T{uid}', min_replicas=1,
                         replicas_timeout=0.05)
    try:
        with pytest.raises(BackendError, match=r'not confirmed: 0 of 1 replicas'):
            await broker.send(f'q_{uid}', '{}')
    finally:
        await broker.redis.client().delete(broker.stream(f'q_{uid}'))
        await broker.close()


async def test_lease_keys_share_one_slot_and_one_holder_runs_a_tick(uid):
    cluster = require_cluster()
    name = f'Agent.report_{uid}'
    first, second = RedisLease(cluster.dsn(), name, ttl=3), RedisLease(cluster.dsn(), name, ttl=3)
    try:
        await first.start()
        await second.start()
        assert first.held() and not second.held()
        tick = time.time() + 0.001
        assert await first.claim(tick)
        assert not await first.claim(tick)  # each tick runs once
        assert not await second.claim(tick)
        with redis.RedisCluster(host='127.0.0.1', port=cluster.live_port()) as client:
            assert client.keyslot(f'{{{name}}}') == client.keyslot(f'{{{name}}}:fence')
            assert client.exists(f'{{{name}}}:fence') == 1
    finally:
        await first.stop()
        await second.stop()
        with redis.RedisCluster(host='127.0.0.1', port=cluster.live_port()) as client:
            for suffix in ('', ':fence', ':tick'):
                client.delete(f'{{{name}}}{suffix}')


# -- node failures -------------------------------------------------------------------------------------------


async def test_bus_and_rpc_resume_after_the_node_of_the_subscriber_dies(breakable_cluster, uid):
    cluster: LocalCluster = breakable_cluster
    catalog = Catalog()
    sig = Signal(f'ping_{uid}', ['n'], catalog=catalog)
    seen = Collector()

    class Listener(MicroAgent):
        @receiver(sig)
        async def on_ping(self, signal: Signal, sender: str, n: int) -> int:
            seen.add(n)
            return n * 2

    bus = RedisSignalBus(cluster.dsn(), catalog=catalog, prefix=f'T{uid}', max_reconnect_delay=0.5)
    sender = RedisSignalBus(cluster.dsn(), catalog=catalog, prefix=f'T{uid}')
    agent = Listener(bus=bus)
    await agent.start()
    try:
        await getattr(sender, sig.name).send('t', n=0)
        await seen.wait(1, 10)
        cluster.kill(_node_of_client(cluster, f'microagent.bus.{bus.uid}'))
        counter = iter(range(1, 10_000))

        async def delivered() -> bool:
            n = next(counter)
            try:
                await getattr(sender, sig.name).send('t', n=n)
            except BackendError:
                return False  # the cluster is failing over: try again
            with contextlib.suppress(TimeoutError):
                await seen.wait(len(seen) + 1, 0.2)
            return n in seen.items
        await eventually(delivered, 30, interval=0.05)
        assert bus.reconnects >= 1

        async def answered() -> bool:
            try:
                return await getattr(sender, sig.name).call('api', n=21, timeout=5) == {'Listener.on_ping': 42}
            except (BackendError, TimeoutError):
                return False  # a publish may still fail while the cluster forgets the dead node: again
        await eventually(answered, 30, interval=0.05)
    finally:
        await agent.stop(timeout=2)
        await sender.close()


def _node_of_client(cluster: LocalCluster, name: str) -> int:
    """The port of the node holding the (subscriber) connection named *name*."""
    for port in list(cluster.processes):
        with redis.Redis(host='127.0.0.1', port=port, socket_timeout=2) as client:
            if any(info.get('name') == name for info in client.client_list()):
                return port
    raise AssertionError(f'no node holds a connection named {name}')


@dataclass
class LossRun:
    """One run of the master-kill fault: what the producers had confirmed and what the consumer got."""

    min_replicas: int
    cut_replica: bool
    confirmed: int
    unconfirmed_sends: int
    received: int
    lost: int
    duplicates: int
    resumed_after_s: float           # the kill to the consumer's first read from the promoted replica
    confirming_after_s: float        # the kill to the first send confirmed after it


class Traffic:
    """Four producers sending numbered messages (each until confirmed) and one consumer recording them
    (from the moment the master died: until then it holds its first batch and the rest waits)."""

    def __init__(self, cluster: LocalCluster, uid: str, min_replicas: int, total: int) -> None:
        self.catalog = Catalog()
        self.queue = Queue(f'q_{uid}', catalog=self.catalog)
        self.received: list[int] = []
        self.confirmed: set[int] = set()
        self.held: set[int] = set()  # what the consumer held when the master died (read from it before)
        self.failures = 0
        self.numbers = iter(range(total))
        self.done = asyncio.Event()
        # Shut until the master died: the consumer holds its first batch, the rest waits in the stream (the
        # worst case for a failover: a backlog that only the promoted replica can still deliver).
        self.gate = asyncio.Event()
        self.killed_at = self.resumed_at = self.confirming_at = 0.0
        traffic = self

        class Sink(MicroAgent):
            @consumer(self.queue, max_inflight=64)
            async def handle(self, n: int) -> None:
                if not traffic.gate.is_set():
                    traffic.held.add(n)
                await traffic.gate.wait()
                traffic.got(n)

        options = {'heartbeat_interval': 0.5, 'heartbeat_ttl': 3.0, 'max_reconnect_delay': 0.5}
        self.sink = Sink(broker=RedisBroker(cluster.dsn(), catalog=self.catalog, prefix=f'T{uid}', **options))
        self.producer = RedisBroker(cluster.dsn(), catalog=self.catalog, prefix=f'T{uid}',
                                    min_replicas=min_replicas, replicas_timeout=0.5)

    def got(self, n: int) -> None:
        self.received.append(n)
        if n < 0:
            self.done.set()
        elif not self.resumed_at and self.killed_at and n not in self.held:
            self.resumed_at = time.monotonic()  # the first read from the promoted replica

    async def send(self, n: int) -> None:
        async with asyncio.timeout(90):  # a cluster that never takes writes again fails the test
            while True:
                started = time.monotonic()
                try:
                    await self.producer.send(self.queue.name, json.dumps({'n': n}))
                    self.confirmed.add(n)
                    if self.killed_at and started > self.killed_at and not self.confirming_at:
                        self.confirming_at = time.monotonic()  # the first send begun after the kill
                    return
                except BackendError:
                    self.failures += 1  # unconfirmed: maybe written, maybe not; sent again (at least once)
                    await asyncio.sleep(0.05)  # retry pause while the cluster fails over

    async def produce(self) -> None:
        for n in self.numbers:
            await self.send(n)

    def result(self, min_replicas: int, cut_replica: bool) -> LossRun:
        got = set(self.received)
        return LossRun(min_replicas, cut_replica, len(self.confirmed) - 1, self.failures, len(got) - 1,
                       len(self.confirmed - got), len(self.received) - len(got),
                       round(self.resumed_at - self.killed_at, 2), round(self.confirming_at - self.killed_at, 2))


async def _confirmed_more(traffic: Traffic, count: int, timeout: float) -> None:
    """Return once *count* more sends were confirmed, or after *timeout* seconds (WAIT holds them back)."""
    mark, deadline = len(traffic.confirmed), time.monotonic() + timeout
    while len(traffic.confirmed) < mark + count and time.monotonic() < deadline:
        await asyncio.sleep(0.002)  # polling a counter the producers move


async def kill_master_under_traffic(cluster: LocalCluster, uid: str, *, min_replicas: int, before: int,
                                    after: int, cut_replica: bool = False) -> LossRun:
    """Producers send numbered messages; the queue's master is SIGKILLed after *before* confirmed sends
    (with ``cut_replica``, the replication link is cut first, a partition, for 100 more confirmed sends or
    0.5 s; the replica, stopped meanwhile so that it cannot reconnect, misses them), restarted
    once its replica took over; *after* more are sent. Lost: confirmed, never received once an end marker
    (sent last) arrived."""
    traffic = Traffic(cluster, uid, min_replicas, before + after)

    async def fault() -> None:
        await eventually(lambda: len(traffic.confirmed) >= before, 60, interval=0.005)
        master = cluster.master_of(traffic.producer.stream(traffic.queue.name))
        replica = cluster.replica_of(master)
        if cut_replica:
            cluster.pause(replica)  # first: stopped, it cannot reconnect while the window is open
            cluster.cut_replicas(master)
            await _confirmed_more(traffic, 100, 0.5)  # the window: what the master confirms alone
        cluster.kill(master)
        traffic.killed_at = time.monotonic()
        traffic.gate.set()
        cluster.resume(replica)
        await asyncio.to_thread(cluster.fail_over, master)

    await traffic.sink.start()
    try:
        await asyncio.gather(fault(), *(traffic.produce() for _ in range(4)))
        await traffic.send(-1)
        async with asyncio.timeout(60):
            await traffic.done.wait()
    finally:
        await traffic.sink.stop(timeout=2)
        await traffic.producer.close()
        await asyncio.to_thread(cluster.heal)  # between runs of one test too
    return traffic.result(min_replicas, cut_replica)


@pytest.mark.parametrize('min_replicas', [0, 1])
async def test_master_killed_after_a_partition_from_its_replica_smoke(breakable_cluster, uid, min_replicas):
    """Smoke size. Without WAIT the sends the master confirmed during the partition are lost with it; with
    ``min_replicas=1`` they were never confirmed (sent again after the failover): none lost."""
    run = await kill_master_under_traffic(breakable_cluster, uid, min_replicas=min_replicas, before=300, after=300,
                                          cut_replica=True)
    print(f'\nredis cluster master kill: {asdict(run)}')
    assert run.received == run.confirmed - run.lost
    if min_replicas:
        assert run.lost == 0
    else:
        assert run.lost > 0  # asynchronous replication: what the replica never got is gone


@pytest.mark.slow
@pytest.mark.parametrize('cut_replica', [False, True])
async def test_master_killed_under_traffic_measured(breakable_cluster, uid, cut_replica):
    """Five runs each way; the counts are printed (run with -s) and appended to $MICROAGENT_CLUSTER_LOSS."""
    runs = []
    for attempt in range(5):
        for min_replicas in (0, 1):
            run = await kill_master_under_traffic(breakable_cluster, f'{uid}{attempt}{min_replicas}',
                                                  min_replicas=min_replicas, before=3000, after=3000,
                                                  cut_replica=cut_replica)
            print(f'\nredis cluster master kill: {asdict(run)}')
            runs.append(asdict(run))
            if min_replicas:
                assert run.lost == 0
    path = os.environ.get('MICROAGENT_CLUSTER_LOSS')
    if path:
        with open(path, 'a') as out:
            out.write(json.dumps(runs) + '\n')


def test_send_rate_benchmark_runs(capsys):
    """``python -m benchmarks.redis_cluster`` keeps working (smoke size; no rate asserted)."""
    require_port('redis', 6379)
    cluster = require_cluster()
    assert benchmark.main(['--size', '20', '--repeat', '1', '--queues', '2', '--cluster', cluster.dsn()]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = [row for row in rows if 'median_rate' in row]
    assert {(row['case'], row['queues']) for row in summary} == {
        (case, queues) for case in ('one server', 'cluster', 'cluster, min_replicas=1') for queues in (1, 2)}
    assert all(row['median_rate'] > 0 for row in summary)
