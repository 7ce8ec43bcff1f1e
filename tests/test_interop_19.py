"""Mixed fleets: agents of the real microagent 1.9.0 (separate venv, subprocesses) and ours, both ways.

Redis: signals, RPC and queues (1.9's lists). RabbitMQ: queues and topic exchanges declared by
either side. Kafka: queues. Ours run in ``wire='microagent1'`` mode where the formats differ;
our buses read 1.9's signals in either mode, and native Redis consumers drain 1.9's lists.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from microagent import MicroAgent, Queue, Signal, consumer, receiver

from .helpers import Collector, eventually
from .microagent19 import environment, old_agent
from .services import require_port

# Subprocesses of another interpreter on a busy machine: more room than the suite's default.
pytestmark = pytest.mark.timeout(300)

REDIS = 'redis://127.0.0.1:6379/13'
AMQP = 'amqp://guest:guest@127.0.0.1:5672/'


@pytest.fixture(scope='session')
def old_python(request: pytest.FixtureRequest) -> Path:
    return environment(Path(request.config.cache.mkdir('microagent19')))


def declarations(tmp_path: Path, signals: dict[str, list[str]], queues: list[dict[str, Any]],
                 prefix: str = '') -> str:
    """A 1.9 declarations file (as 1.9 writes them: ``version`` and ``default_prefix`` included)."""
    data: dict[str, Any] = {'version': 2, 'signals': [{'name': n, 'providing_args': a} for n, a in signals.items()],
                            'queues': queues}
    if prefix:
        data['default_prefix'] = prefix
    path = tmp_path / 'signals.json'
    path.write_text(json.dumps(data))
    return str(path)


def recorder(seen: Collector, name: str = 'NewAgent', **handlers: Any) -> type[MicroAgent]:
    return type(name, (MicroAgent,), handlers)


@contextlib.asynccontextmanager
async def running(*agents: MicroAgent) -> AsyncIterator[None]:
    try:
        for agent in agents:
            await agent.start()
        yield
    finally:
        for agent in agents:
            await agent.stop(timeout=5)


# -- Redis: signals, RPC, queues ------------------------------------------------------------------------------------


@pytest.fixture
def redis_names(uid: str) -> dict[str, str]:
    return {'prefix': f'IOP{uid}', 'to_old': f'to_old_{uid}', 'to_new': f'to_new_{uid}',
            'rpc_old': f'rpc_old_{uid}', 'rpc_new': f'rpc_new_{uid}', 'q_old': f'q_old_{uid}',
            'q_new': f'q_new_{uid}', 'q_native': f'q_native_{uid}'}


@pytest.fixture
async def redis_cleanup(redis_names: dict[str, str]) -> AsyncIterator[None]:
    yield
    import redis.asyncio as aioredis
    client = aioredis.Redis.from_url(REDIS)
    try:
        keys = [k for n in redis_names.values() for k in (n, f'microagent:{n}', f'microagent:{n}.dlq',
                                                            f'microagent:{n}.delayed', f'microagent:{n}.draining')]
        await client.delete(*keys)
    finally:
        await client.aclose()


async def test_redis_signals_and_rpc_both_ways(old_python, tmp_path, catalog, redis_names, redis_cleanup):
    require_port('redis', 6379)
    from microagent.tools.redis import RedisSignalBus
    n = redis_names
    # 1.9 knows user_id only; ours are newer and also declare email: a rolling deploy.
    decl = declarations(tmp_path, {n['to_old']: ['user_id'], n['to_new']: ['user_id'], n['rpc_old']: ['value'],
                                   n['rpc_new']: ['value']}, [], prefix=n['prefix'])
    Signal(n['to_old'], ['user_id', 'email'], catalog=catalog)
    to_new = Signal(n['to_new'], ['user_id', 'email'], catalog=catalog)
    Signal(n['rpc_old'], ['value'], catalog=catalog)
    rpc_new = Signal(n['rpc_new'], ['value'], catalog=catalog)
    seen = Collector()

    async def on_new(self: MicroAgent, signal: Signal, sender: str, **kwargs: Any) -> None:
        seen.add((sender, kwargs))

    async def answer(self: MicroAgent, value: int, **kwargs: Any) -> int:
        return value * 2

    spec = {'declarations': decl, 'prefix': n['prefix'], 'redis': REDIS, 'receive': [n['to_old']], 'rpc': n['rpc_old']}
    native = RedisSignalBus(REDIS, catalog=catalog, prefix=n['prefix'])
    mixed = RedisSignalBus(REDIS, catalog=catalog, prefix=n['prefix'], wire='microagent1')
    agent = recorder(seen, on_new=receiver(to_new)(on_new), answer=receiver(rpc_new)(answer))(bus=native)
    async with old_agent(old_python, spec) as old, running(agent):
        # A newer sender's extra argument reaches the old receiver.
        await getattr(mixed, n['to_old']).send('newbie', user_id=1, email='a@b.c')
        got = await old.expect(lambda e: e['event'] == 'signal')
        assert (got['sender'], got['kwargs']) == ('newbie', {'user_id': 1, 'email': 'a@b.c'})
        # An old sender's signal (without email) reaches ours, read by a native-mode bus.
        await old.command(cmd='signal', name=n['to_new'], sender='oldie', kwargs={'user_id': 2})
        assert await seen.wait(1, 20) == [('oldie', {'user_id': 2})]
        # RPC: ours calls theirs, theirs calls ours.
        response = await getattr(mixed, n['rpc_old']).call('newbie', value=21, timeout=20)
        assert response == {'OldAgent.on_rpc': 42}
        await old.command(cmd='call', name=n['rpc_new'], sender='oldie', kwargs={'value': 5}, timeout=20)
        got = await old.expect(lambda e: e['event'] in ('response', 'error'))
        assert got.get('response') == {'NewAgent.answer': 10}, got
    await mixed.close()


async def test_redis_queues_both_ways(old_python, tmp_path, catalog, redis_names, redis_cleanup):
    require_port('redis', 6379)
    from microagent.tools.redis import RedisBroker
    n = redis_names
    decl = declarations(tmp_path, {}, [{'name': n['q_old']}, {'name': n['q_new']}, {'name': n['q_native']}])
    for name in ('q_old', 'q_new', 'q_native'):
        Queue(n[name], catalog=catalog)
    seen = Collector()

    async def on_new(self: MicroAgent, **message: Any) -> None:
        seen.add(('mixed', message))

    async def on_native(self: MicroAgent, **message: Any) -> None:
        seen.add(('native', message))

    mixed = RedisBroker(REDIS, catalog=catalog, wire='microagent1', heartbeat_interval=0.5, heartbeat_ttl=3)
    native = RedisBroker(REDIS, catalog=catalog, heartbeat_interval=0.5, heartbeat_ttl=3)
    agents = (recorder(seen, on_new=consumer(catalog.queue(n['q_new']))(on_new))(broker=mixed),
              recorder(seen, on_native=consumer(catalog.queue(n['q_native']))(on_native))(broker=native))
    spec = {'declarations': decl, 'prefix': 'X', 'broker': {'backend': 'redis', 'dsn': REDIS}, 'consume': [n['q_old']]}
    async with old_agent(old_python, spec) as old, running(*agents):
        await getattr(mixed, n['q_old']).send({'hello': 'old'})
        got = await old.expect(lambda e: e['event'] == 'message')
        assert got['message'] == {'hello': 'old'}
        await old.command(cmd='send', queue=n['q_new'], message={'hello': 'mixed'})
        await old.command(cmd='send', queue=n['q_native'], message={'hello': 'native'})
        items = await seen.wait(2, 20)
        assert sorted(items, key=str) == [('mixed', {'hello': 'mixed'}), ('native', {'hello': 'native'})]
        assert await getattr(mixed, n['q_new']).length() == 0
    await native.close()


async def test_migrate_queue_moves_a_19_list_into_the_stream(old_python, tmp_path, catalog, redis_names,
                                                           redis_cleanup, monkeypatch):
    require_port('redis', 6379)
    from microagent import cli
    from microagent.tools.redis import RedisBroker
    n = redis_names
    decl = declarations(tmp_path, {}, [{'name': n['q_old']}])
    spec = {'declarations': decl, 'prefix': 'X', 'broker': {'backend': 'redis', 'dsn': REDIS}}
    async with old_agent(old_python, spec) as old:
        for i in range(3):
            await old.command(cmd='send', queue=n['q_old'], message={'i': i})
        await eventually(lambda: sum(e['event'] == 'sent' for e in old.events) == 3, 20)
    (tmp_path / 'mig_settings.py').write_text(
        f'CONFIG = {"file://" + decl!r}\n'
        f"BROKER = {{'default': {{'backend': 'microagent.tools.redis.RedisBroker', 'dsn': {REDIS!r}, "
        f"'drain_lists': False}}}}\n"
        "AGENT = {'a': {'backend': 'microagent.MicroAgent'}}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = await asyncio.to_thread(cli.main, ['migrate-queue', 'mig_settings', n['q_old']])
    assert code == 0
    Queue(n['q_old'], catalog=catalog)
    broker = RedisBroker(REDIS, catalog=catalog)
    try:
        assert await getattr(broker, n['q_old']).length() == 3  # now in the stream
        import redis.asyncio as aioredis
        client = aioredis.Redis.from_url(REDIS)
        assert await client.exists(n['q_old']) == 0
        assert await client.xlen(f'microagent:{n["q_old"]}') == 3
        await client.aclose()
    finally:
        await broker.close()


# -- RabbitMQ: queues and exchanges ----------------------------------------------------------------------------------


@pytest.fixture
async def amqp_cleanup(uid: str) -> AsyncIterator[list[str]]:
    names: list[str] = []
    yield names
    import aiormq
    connection = await aiormq.connect(AMQP)
    try:
        channel = await connection.channel()
        for name in names:
            for queue in (name, f'{name}.dlq', f'{name}.retry.1'):
                await channel.queue_delete(queue)
            await channel.exchange_delete(f'push_{uid}')
    finally:
        await connection.close()


async def test_amqp_queues_and_exchanges_both_ways(old_python, tmp_path, catalog, uid, amqp_cleanup, caplog):
    require_port('RabbitMQ', 5672)
    from microagent.tools.amqp import AMQPBroker
    q_old, q_new, ios, android = f'q_old_{uid}', f'q_new_{uid}', f'ios_{uid}', f'android_{uid}'
    exchange = f'push_{uid}'
    amqp_cleanup.extend([q_old, q_new, ios, android])
    queues = [{'name': q_old}, {'name': q_new}, {'name': ios, 'exchange': exchange, 'topics': ['*.ios']},
              {'name': android, 'exchange': exchange, 'topics': ['*.android']}]
    decl = declarations(tmp_path, {}, queues)
    for q in queues:
        Queue(catalog=catalog, **q)
    seen = Collector()

    async def on_message(self: MicroAgent, **message: Any) -> None:
        seen.add(message)

    async def on_android(self: MicroAgent, amqp: Any, **message: Any) -> None:
        seen.add({'raw': type(amqp).__name__, **message})

    mixed = AMQPBroker(AMQP, catalog=catalog, wire='microagent1')
    agent = recorder(seen, on_message=consumer(catalog.queue(q_new))(on_message),
                     on_android=consumer(catalog.queue(android))(on_android))(broker=mixed)
    spec = {'declarations': decl, 'prefix': 'X', 'broker': {'backend': 'amqp', 'dsn': AMQP}, 'consume': [q_old, ios]}
    native = AMQPBroker(AMQP, catalog=catalog)
    async with old_agent(old_python, spec) as old, running(agent):
        # 1.9 declared q_old (not durable): a native-format broker uses it as it is (and warns).
        with caplog.at_level(logging.WARNING):
            await getattr(native, q_old).send({'hello': 'native'}, timeout=10)
        assert f'{q_old} was declared by microagent 1.9 (not durable): using it as it is' in caplog.text
        await old.expect(lambda e: e['event'] == 'message' and e['message'] == {'hello': 'native'})
        await getattr(mixed, q_old).send({'hello': 'old'})
        await getattr(mixed, exchange).send({'hello': 'ios'}, topic='msg.ios')
        await old.expect(lambda e: e['event'] == 'message' and e['message'] == {'hello': 'old'})
        await old.expect(lambda e: e['event'] == 'message' and e['message'] == {'hello': 'ios'})
        await old.command(cmd='send', queue=q_new, message={'hello': 'new'})
        await old.command(cmd='send', queue=exchange, message={'hello': 'android'}, topic='msg.android')
        items = await seen.wait(2, 20)
        assert sorted(items, key=str) == sorted([{'hello': 'new'}, {'raw': 'AMQPMessage', 'hello': 'android'}],
                                                key=str)
    # The 1.9 agent is gone: q_old gets this project's arguments (durable), its messages kept.
    for i in range(2):
        await getattr(mixed, q_old).send({'waiting': i})
    assert await native.migrate_queue(q_old) == 2
    fresh = AMQPBroker(AMQP, catalog=catalog)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await getattr(fresh, q_old).send({'waiting': 2})  # declared durable: no adoption
    assert 'using it as it is' not in caplog.text
    assert await getattr(fresh, q_old).length() == 3
    for broker in (native, fresh, mixed):
        await broker.close()


# -- Kafka: queues ---------------------------------------------------------------------------------------------------


async def test_kafka_queues_both_ways(old_python, tmp_path, catalog, uid):
    from .kafka_server import require_kafka
    bootstrap = require_kafka()
    from microagent.tools.kafka import KafkaBroker
    q_old, q_new = f'q_old_{uid}', f'q_new_{uid}'
    decl = declarations(tmp_path, {}, [{'name': q_old}, {'name': q_new}])
    Queue(q_old, catalog=catalog)
    Queue(q_new, catalog=catalog)
    seen = Collector()

    async def on_message(self: MicroAgent, kafka: Any, **message: Any) -> None:
        seen.add((kafka.topic, message))

    broker = KafkaBroker(f'kafka://{bootstrap}', catalog=catalog, wire='microagent1', session_timeout=2.0,
                         fetch_max_wait_ms=100)
    agent = recorder(seen, on_message=consumer(catalog.queue(q_new))(on_message))(broker=broker)
    # The old consumer reads from the end of the topic: the topic must exist when it starts.
    await getattr(broker, q_old).send({'warm': 'up'})
    spec = {'declarations': decl, 'prefix': 'X', 'broker': {'backend': 'kafka', 'dsn': f'kafka://{bootstrap}'},
            'consume': [q_old], 'settle': 3}
    async with old_agent(old_python, spec) as old, running(agent):
        # 1.9's group-less consumer starts at the end once it has its partitions: send until it sees one.
        for attempt in range(10):
            await getattr(broker, q_old).send({'hello': 'old', 'attempt': attempt})
            with contextlib.suppress(AssertionError):
                await old.expect(lambda e: e['event'] == 'message' and e['message'].get('hello') == 'old', 3)
                break
        else:
            raise AssertionError('the microagent 1.9 Kafka consumer got nothing')
        await old.command(cmd='send', queue=q_new, message={'hello': 'new'})
        assert await seen.wait(1, 30) == [(q_new, {'hello': 'new'})]
