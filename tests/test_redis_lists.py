"""microagent 1.9's Redis queues (lists) beside ours (streams): writing, draining, migrating, losing nothing."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from microagent import ConfigurationError, MicroAgent, Queue, QueueNotFound, consumer

from .helpers import Collector
from .services import require_port

DSN = 'redis://127.0.0.1:6379/15'


@pytest.fixture
async def client(catalog: Any, uid: str) -> AsyncIterator[Any]:
    require_port('redis', 6379)
    import redis.asyncio as aioredis
    conn = aioredis.Redis.from_url(DSN)
    yield conn
    names = [*catalog.queues, f'jobs_{uid}']
    await conn.delete(*names, *(f'ma-{uid}:{n}{s}' for n in names for s in ('', '.dlq', '.delayed', '.draining')))
    await conn.aclose()


def broker_for(catalog: Any, uid: str, **options: Any) -> Any:
    from microagent.tools.redis import RedisBroker
    return RedisBroker(DSN, catalog=catalog, prefix=f'ma-{uid}', heartbeat_interval=0.5, heartbeat_ttl=3, **options)


async def test_microagent1_mode_writes_lists(client, catalog, uid):
    Queue(f'jobs_{uid}', catalog=catalog)
    Queue(f'ios_{uid}', exchange=f'push_{uid}', topics=['*.ios'], catalog=catalog)
    Queue(f'all_{uid}', exchange=f'push_{uid}', catalog=catalog)
    broker = broker_for(catalog, uid, wire='microagent1')
    try:
        await getattr(broker, f'jobs_{uid}').send({'n': 1})
        await getattr(broker, f'jobs_{uid}').send_many([{'n': 2}, {'n': 3}])
        await getattr(broker, f'push_{uid}').send({'n': 4}, topic='msg.ios')
        assert await client.lrange(f'jobs_{uid}', 0, -1) == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
        assert await client.lrange(f'ios_{uid}', 0, -1) == [b'{"n":4}']
        assert await client.lrange(f'all_{uid}', 0, -1) == [b'{"n":4}']
        assert await client.exists(f'ma-{uid}:jobs_{uid}') == 0  # no stream in this mode
        assert await getattr(broker, f'jobs_{uid}').length() == 3
    finally:
        await broker.close()


async def test_drain_is_atomic_and_takes_what_a_dead_consumer_left_first(client, catalog, uid):
    from microagent.tools.redis._lists import ListDrainer
    name = f'jobs_{uid}'
    Queue(name, catalog=catalog)
    broker = broker_for(catalog, uid)
    try:
        # A consumer moved one item with BLMOVE and died before draining it: it waits in .draining.
        await client.rpush(f'ma-{uid}:{name}.draining', b'{"n":0}')
        await client.rpush(name, *(b'{"n":%d}' % i for i in range(1, 6)))
        drainer = ListDrainer(broker, name)
        assert await drainer.drain(limit=2) == 2
        assert await client.llen(name) + await client.xlen(f"ma-{uid}:{name}") == 6  # never in both, never lost
        assert await drainer.drain_all() == 4
        entries = await client.xrange(f'ma-{uid}:{name}')
        assert [e[1][b'b'] for e in entries] == [b'{"n":%d}' % i for i in range(6)]  # order kept
        assert await client.exists(name, f'ma-{uid}:{name}.draining') == 0
        # A backlog cap: at the cap nothing moves (-1), so 1.9 consumers of the list keep their share.
        await client.rpush(name, b'{"n":6}')
        assert await drainer.drain(limit=10, cap=6) == -1
        assert await client.llen(name) == 1
    finally:
        await broker.close()


async def test_a_key_of_another_type_is_left_alone(client, catalog, uid):
    name = f'jobs_{uid}'
    Queue(name, catalog=catalog)
    await client.set(name, b'not a queue')
    broker = broker_for(catalog, uid)
    try:
        assert await broker.migrate_queue(name) == 0
        assert await client.get(name) == b'not a queue'
        assert await getattr(broker, name).length() == 0
        with pytest.raises(QueueNotFound):
            await broker.migrate_queue(f'undeclared_{uid}')
        with pytest.raises(ConfigurationError, match="wire='native'"):
            await broker_for(catalog, uid, wire='microagent1').migrate_queue(name)
    finally:
        await broker.close()


@pytest.mark.parametrize('wire', ['native', 'microagent1'])
async def test_consumers_take_what_19_producers_push(client, catalog, uid, wire):
    name = f'jobs_{uid}'
    queue = Queue(name, catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_inflight=2)
        async def handle(self, n: int) -> None:
            seen.add(n)

    await client.rpush(name, b'{"n":1}', b'{"n":2}')  # pushed before anyone consumed
    broker = broker_for(catalog, uid, wire=wire)
    agent = Agent(broker=broker)
    await agent.start()
    try:
        await client.rpush(name, *(b'{"n":%d}' % i for i in range(3, 11)))  # and while consuming
        assert sorted(await seen.wait(10, 20)) == list(range(1, 11))
        assert await client.llen(name) == 0
    finally:
        await agent.stop(timeout=5)


def test_migrate_queue_command_refuses_brokers_without_lists(tmp_path, monkeypatch, capsys, uid):
    from microagent import cli
    (tmp_path / f'kafka_settings_{uid}.py').write_text(
        "BROKER = {'default': {'backend': 'microagent.tools.kafka.KafkaBroker', 'dsn': 'kafka://127.0.0.1:9092'}}\n"
        "AGENT = {'a': {'backend': 'microagent.MicroAgent'}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cli.main(['migrate-queue', f'kafka_settings_{uid}', 'mailer']) == 2
    assert 'KafkaBroker has no microagent 1.9 format to migrate from' in capsys.readouterr().err
