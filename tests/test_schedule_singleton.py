"""Singleton schedules: one run per tick across replicas, takeover when the holder dies."""
from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import redis.asyncio as aioredis

from microagent import MicroAgent, periodic
from microagent.lease import lease_for
from microagent.tools.memory import MemoryBroker, MemoryLease

from .helpers import eventually
from .schedule_replicas import Replicas
from .services import require_port

REDIS = 'redis://127.0.0.1:6379/0'


# -- memory: an in-process lock ------------------------------------------------------------

async def test_memory_singleton_runs_each_tick_once_and_fails_over(uid: str) -> None:
    runs: list[tuple[str, float]] = []

    class Worker(MicroAgent):
        @periodic(period=0.2, timeout=1, singleton=True)
        async def tick(self) -> None:
            runs.append((self.settings['name'], time.time()))

    dsn = f'memory://{uid}'
    agents = {n: Worker(broker=MemoryBroker(dsn), settings={'name': n}) for n in 'abc'}
    for agent in agents.values():
        await agent.start()
    try:
        await eventually(lambda: len(runs) >= 5)
        holder = runs[-1][0]
        assert {name for name, _ in runs} == {holder}
        await agents[holder].stop()  # releases the lease: another one takes over
        await eventually(lambda: runs[-1][0] != holder)
        await eventually(lambda: len({n for n, t in runs if n != holder}) == 1 and len(runs) >= 12)
    finally:
        for agent in agents.values():
            await agent.stop()
    # A tick run twice would show as two runs a few milliseconds apart; ticks are 200 ms apart.
    times = sorted(t for _, t in runs)
    assert min(b - a for a, b in itertools.pairwise(times)) > 0.05, times
    infos = [s for a in agents.values() for s in a.info()['schedules']]
    assert all(s['singleton'] and 'next_run' in s for s in infos)


async def test_memory_lease_is_exclusive_and_counts_tokens(uid: str) -> None:
    a, b = MemoryLease(f'memory://{uid}', 'job', ttl=0.3), MemoryLease(f'memory://{uid}', 'job', ttl=0.3)
    await a.start()
    await b.start()
    try:
        assert a.held() and not b.held() and a.token == 1
        await a.stop()
        await eventually(b.held, timeout=2)
        assert b.token == 2
        assert not b.held(time.time() - 1)  # ticks due before it took over are not its own
    finally:
        await b.stop()


def test_lease_for_picks_the_backend_by_scheme() -> None:
    assert type(lease_for('memory://', 'x', 1)).__name__ == 'MemoryLease'
    assert type(lease_for('redis://u:secret@localhost/1', 'x', 1)).__name__ == 'RedisLease'
    assert 'secret' not in repr(lease_for('redis://u:secret@localhost/1', 'x', 1))
    assert type(lease_for('nats://u:secret@localhost', 'x', 1)).__name__ == 'NATSLease'
    assert 'secret' not in repr(lease_for('nats://u:secret@localhost', 'x', 1))
    with pytest.raises(ValueError, match='no lease for mqtt'):
        lease_for('mqtt://localhost', 'x', 1)


# -- Redis: SET NX PX, fencing token, per-tick claim ----------------------------------------

async def test_redis_lease_fencing_and_tick_claims(uid: str) -> None:
    require_port('redis', 6379)
    name = f'test.schedule.{uid}'
    a, b = lease_for(REDIS, name, ttl=0.5), lease_for(REDIS, name, ttl=0.5)
    await a.start()
    await b.start()
    try:
        assert a.held() and not b.held()
        first = a.token
        tick = time.time() + 0.01
        await asyncio.sleep(0.02)
        assert await a.claim(tick)
        assert not await a.claim(tick)  # a tick runs at most once
        assert not await b.claim(tick + 1)
        await a.stop()
        await eventually(b.held, timeout=3)
        assert b.token is not None and first is not None and b.token > first
    finally:
        await b.stop()
        client = aioredis.Redis.from_url(REDIS)
        await client.delete(name, f'{name}:fence', f'{name}:tick')
        await client.aclose()


async def test_lease_on_a_dead_server_holds_nothing_and_masks_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    for dsn in ('redis://user:hunter2@127.0.0.1:1/0', 'amqp://user:hunter2@127.0.0.1:1/',
                'nats://user:hunter2@127.0.0.1:1'):
        lease = lease_for(dsn, 'x', ttl=0.3)
        await lease.start()  # returns after the first (failed) attempt
        assert not lease.held()
        await lease.stop()
    assert 'attempt failed' in caplog.text
    assert 'hunter2' not in caplog.text


async def _replica_run(uid: str, seconds: float, kills: int, lease_dsn: str = REDIS, missed_per_kill: int = 1) -> None:
    require_port('redis', 6379)
    replicas = Replicas(REDIS, lease_dsn, uid, period=1.0)
    try:
        replicas.spawn(3)
        await replicas.wait_ready()
        await replicas.wait_ticks(2)
        gap = seconds / (kills + 1)
        for _ in range(kills):
            await asyncio.sleep(gap)  # let the schedule run for a while before the next fault
            await replicas.kill_holder()
        await asyncio.sleep(gap)
    finally:
        run = await replicas.stop()
        client = aioredis.Redis.from_url(REDIS)
        name = f'{replicas.prefix}.Replica.tick'
        await client.delete(name, f'{name}:fence', f'{name}:tick')
        await client.aclose()
    holders = run.holders()
    detail = f'holders={holders} missed={run.missed(1.0)} ticks={len(run.ticks)}\n{replicas.stderr()}'
    print(f'replicas: {len(run.ticks)} ticks, {run.duplicates(1.0)} duplicates, missed {run.missed(1.0)}, '
          f'holders {holders}, kills {kills}')
    assert run.duplicates(1.0) == 0, detail
    assert len(run.missed(1.0)) <= kills * missed_per_kill, detail
    assert len(holders) >= kills + 1, detail


async def test_redis_three_replicas_one_holder_killed(uid: str) -> None:
    await _replica_run(uid, seconds=8, kills=1)


@pytest.mark.slow
async def test_redis_three_replicas_holder_killed_twice_over_30s(uid: str) -> None:
    await _replica_run(uid, seconds=30, kills=2)


# -- RabbitMQ: single-active-consumer queue ----------------------------------------------------

async def _exclusive_then_handed_over(leases: list, before_stop=None) -> tuple:
    """One of *leases* holds, and stays the only one; stopped, another takes over; (old, new holder)."""
    await eventually(lambda: sum(lease.held() for lease in leases) == 1, timeout=10)
    holder = next(lease for lease in leases if lease.held())
    if before_stop is not None:
        await before_stop(holder)
    for _ in range(5):  # stays exclusive through renewals
        assert sum(lease.held() for lease in leases) == 1
        await asyncio.sleep(0.1)
    await holder.stop()
    rest = [lease for lease in leases if lease is not holder]
    await eventually(lambda: sum(lease.held() for lease in rest) == 1, timeout=10)
    return holder, next(lease for lease in rest if lease.held())


AMQP = 'amqp://guest:guest@127.0.0.1:5672/'


async def test_amqp_lease_one_active_consumer_and_takeover(uid: str) -> None:
    require_port('rabbitmq', 5672)
    name = f'test.schedule.{uid}'
    leases = [lease_for(AMQP, name, ttl=0.6) for _ in range(3)]
    for lease in leases:
        await lease.start()
    try:
        await _exclusive_then_handed_over(leases)
    finally:
        for lease in leases:
            await lease.stop()


async def test_amqp_three_replicas_one_holder_killed(uid: str) -> None:
    require_port('rabbitmq', 5672)
    require_port('redis', 6379)
    await _replica_run(uid, seconds=8, kills=1, lease_dsn=AMQP)


# -- Kafka: group membership of a one-partition topic ----------------------------------------------

async def test_kafka_lease_one_member_holds_and_hands_over(uid: str) -> None:
    from .kafka_server import require_kafka
    dsn = f'kafka://{require_kafka()}'
    name = f'test.schedule.{uid}'
    leases = [lease_for(dsn, name, ttl=0.6) for _ in range(2)]
    for lease in leases:
        await lease.start()
    try:
        await eventually(lambda: sum(lease.held() for lease in leases) == 1, timeout=30)
        holder = next(lease for lease in leases if lease.held())
        await holder.stop()  # leaves the group: the other member gets the partition
        rest = [lease for lease in leases if lease is not holder]
        await eventually(lambda: rest[0].held(), timeout=30)
    finally:
        for lease in leases:
            await lease.stop()
        await _delete_topic(dsn, name)


async def _delete_topic(dsn: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=dsn.removeprefix('kafka://'))
    try:
        await asyncio.wait_for(admin.start(), 10)
        await asyncio.wait_for(admin.delete_topics([name]), 10)
    except Exception as exc:  # cleanup only: the broker may not support deleting
        print(f'topic {name} not deleted: {exc!r}')
    finally:
        await admin.close()


@pytest.mark.slow
async def test_kafka_three_replicas_one_holder_killed(uid: str) -> None:
    # A killed member is evicted only after the session timeout (6 s): about that many ticks are missed.
    from .kafka_server import require_kafka
    require_port('redis', 6379)
    dsn = f'kafka://{require_kafka()}'
    try:
        await _replica_run(uid, seconds=24, kills=1, lease_dsn=dsn, missed_per_kill=9)
    finally:
        await _delete_topic(dsn, f'test.schedule.{uid}.Replica.tick')


@pytest.mark.slow
async def test_amqp_three_replicas_holder_killed_twice_over_30s(uid: str) -> None:
    require_port('rabbitmq', 5672)
    require_port('redis', 6379)
    await _replica_run(uid, seconds=30, kills=2, lease_dsn=AMQP)


# -- NATS: a key-value bucket, revision-checked updates, ttl -------------------------------------

async def test_nats_lease_fencing_tick_claims_and_takeover(uid: str) -> None:
    from .nats_server import require_nats
    dsn = require_nats()
    name = f'test.schedule.{uid}'
    leases = [lease_for(dsn, name, ttl=0.6) for _ in range(3)]
    for lease in leases:
        await lease.start()
    try:
        async def claims(holder) -> None:
            tick = time.time() + 0.01
            await asyncio.sleep(0.02)
            assert await holder.claim(tick)
            assert not await holder.claim(tick)  # a tick runs at most once
            assert not any([await lease.claim(tick + 1) for lease in leases if lease is not holder])
        holder, taker = await _exclusive_then_handed_over(leases, claims)
        assert taker.token is not None and holder.token is not None and taker.token > holder.token
    finally:
        for lease in leases:
            await lease.stop()
        await _delete_buckets(dsn, name)


async def _delete_buckets(dsn: str, name: str) -> None:
    import nats

    from microagent.tools.nats._lease import bucket_of
    client = await nats.connect(dsn)
    try:
        await client.jetstream().delete_key_value(bucket_of(name))
    finally:
        await client.close()


async def test_nats_three_replicas_one_holder_killed(uid: str) -> None:
    from .nats_server import require_nats
    require_port('redis', 6379)
    dsn = require_nats()
    try:
        await _replica_run(uid, seconds=8, kills=1, lease_dsn=dsn)
    finally:
        await _delete_buckets(dsn, f'test.schedule.{uid}.Replica.tick')
