"""AMQP queue types (classic, quorum) and DSNs naming several hosts, on the shared single-node RabbitMQ.

A single node runs quorum queues too (a Raft group of one): the declarations,
retries through quorum retry queues, the broker's delivery count and the
type-mismatch errors are tested here; node failures are tests/test_amqp_cluster.py's.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from microagent import BackendError, Catalog, ConfigurationError, ConnectError, MicroAgent, Queue, consumer
from microagent.tools.amqp import AMQPBroker, RobustConnection
from microagent.tools.amqp._delivery import attempt_of
from microagent.tools.amqp._hosts import dsn_of, hosts_of
from reliability.servers import free_port

from .amqp_support import DSN, rabbitmqctl, require_rabbit
from .helpers import Collector, eventually


@pytest.fixture
async def brokers() -> AsyncIterator[list[AMQPBroker]]:
    require_rabbit()
    made: list[AMQPBroker] = []
    yield made
    for broker in made:
        await broker.close()


def make(brokers: list[AMQPBroker], catalog: Catalog, dsn: str | list[str] = DSN, **options: Any) -> AMQPBroker:
    broker = AMQPBroker(dsn, catalog=catalog, queue_expires=120, retry_delay=0.05, **options)
    brokers.append(broker)
    return broker


def types_of(prefix: str) -> dict[str, str]:
    """The type of every queue whose name starts with *prefix* (rabbitmqctl)."""
    out = rabbitmqctl('list_queues', '-q', '--no-table-headers', 'name', 'type')
    return {name: kind for name, kind in (line.split('\t') for line in out.splitlines() if '\t' in line)
            if name.startswith(prefix)}


def test_hosts_of_and_dsn_of() -> None:
    dsn = 'amqps://u:secret@h1:5671,h2,[::1]:5673/vh?cafile=/ca.pem'
    assert hosts_of(dsn) == ['amqps://u:secret@h1:5671/vh?cafile=/ca.pem', 'amqps://u:secret@h2/vh?cafile=/ca.pem',
                             'amqps://u:secret@[::1]:5673/vh?cafile=/ca.pem']
    assert dsn_of(hosts_of(dsn)) == dsn
    with pytest.raises(ConfigurationError) as error:
        dsn_of(['amqp://u:secret@h1/', 'amqp://u:secret@h2/other'])
    assert 'secret' not in str(error.value)
    with pytest.raises(ConfigurationError):
        hosts_of('amqp://u:p@h1,,h2/')
    connection = RobustConnection(['amqp://u:secret@h1/', 'amqp://u:secret@h2:5673/'])
    assert connection.hosts == ['amqp://u:secret@h1/', 'amqp://u:secret@h2:5673/']
    assert connection.host == 'amqp://u:***@h1/'
    assert 'secret' not in repr(connection)


def test_queue_type_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match='stream'):
        AMQPBroker(DSN, queue_type='stream')
    with pytest.raises(ConfigurationError, match="queue type 'lazy'"):
        AMQPBroker(DSN, queue_types={'mailer': 'lazy'})
    # microagent 1.9 declares its queues classic and not durable: no quorum queue can serve both.
    with pytest.raises(ConfigurationError, match='native'):
        AMQPBroker(DSN, queue_type='quorum', wire='microagent1')
    broker = AMQPBroker(DSN, queue_types={'mailer': 'quorum'})
    assert broker.is_quorum('mailer') and broker.is_quorum('mailer.dlq') and broker.is_quorum('mailer.retry.2')
    assert not broker.is_quorum('other')


async def test_quorum_queues_retry_and_dead_letter(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'qq_{uid}', catalog=catalog)
    broker = make(brokers, catalog, queue_type='quorum')
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue, max_attempts=3)
        async def handle(self, n: int) -> None:
            seen.add(n)
            if n == 1 or seen.items.count(n) < 2:
                raise ValueError(f'fails {n}')

    agent = Agent(broker=broker)
    await agent.start()
    await getattr(broker, queue.name).send({'n': 0})  # fails once, then handled through .retry.1
    await getattr(broker, queue.name).send({'n': 1})  # always fails: three attempts, then the DLQ
    await eventually(lambda: len(seen.items) >= 5, 30)
    letters = await eventually(lambda: broker.dead_letters(queue.name), 30)
    await agent.stop(timeout=5)
    assert sorted(seen.items) == [0, 0, 1, 1, 1]
    assert [(letter.attempts, 'fails 1' in letter.error) for letter in letters] == [(3, True)]
    kinds = await asyncio.to_thread(types_of, queue.name)
    assert kinds == {queue.name: 'quorum', f'{queue.name}.dlq': 'quorum', f'{queue.name}.retry.1': 'quorum',
                     f'{queue.name}.retry.2': 'quorum'}


async def test_queue_types_mapping_sets_some_queues_only(brokers, uid):
    catalog = Catalog()
    quorum, classic = Queue(f'qa_{uid}', catalog=catalog), Queue(f'qb_{uid}', catalog=catalog)
    broker = make(brokers, catalog, queue_types={quorum.name: 'quorum'})
    await getattr(broker, quorum.name).send({'n': 1})
    await getattr(broker, classic.name).send({'n': 1})
    kinds = await asyncio.to_thread(types_of, 'q')
    assert {k: v for k, v in kinds.items() if uid in k} == {
        quorum.name: 'quorum', f'{quorum.name}.dlq': 'quorum',
        classic.name: 'classic', f'{classic.name}.dlq': 'classic'}


@pytest.mark.parametrize(('existing', 'wanted'), [('classic', 'quorum'), ('quorum', 'classic')])
async def test_a_queue_of_the_other_type_is_a_clear_error(brokers, uid, existing, wanted):
    catalog = Catalog()
    queue = Queue(f'qm_{uid}', catalog=catalog)
    await getattr(make(brokers, catalog, queue_type=existing), queue.name).send({'n': 1})
    other = make(brokers, catalog, queue_type=wanted)
    with pytest.raises(ConfigurationError) as sent:
        await getattr(other, queue.name).send({'n': 2}, timeout=10)

    class Agent(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int) -> None:
            pass
    with pytest.raises(ConfigurationError) as bound:
        await Agent(broker=other).start()
    for error in (sent.value, bound.value):
        assert repr(queue.name) in str(error) and f"queue_type is {wanted!r}" in str(error)
        assert f'exists as a {existing} queue' in str(error)
    assert await make(brokers, catalog, queue_type=existing).queue_length(queue.name) == 1


async def test_migrate_queue_turns_a_classic_queue_into_a_quorum_queue(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'qg_{uid}', catalog=catalog)
    await getattr(make(brokers, catalog), queue.name).send({'n': 7})
    broker = make(brokers, catalog, queue_type='quorum')
    assert await broker.migrate_queue(queue.name) == 1
    assert await asyncio.to_thread(types_of, queue.name) == {queue.name: 'quorum', f'{queue.name}.dlq': 'quorum'}
    assert await broker.queue_length(queue.name) == 1


async def test_several_hosts_fail_over_to_one_that_answers(brokers, uid, caplog):
    caplog.set_level(logging.INFO, 'microagent')
    catalog = Catalog()
    queue = Queue(f'qh_{uid}', catalog=catalog)
    closed = free_port()
    broker = make(brokers, catalog, dsn=f'amqp://guest:guest@127.0.0.1:{closed},127.0.0.1:5672/',
                  max_reconnect_delay=0.2)
    await getattr(broker, queue.name).send({'n': 1}, timeout=20)
    assert broker.connection.host == 'amqp://guest:***@127.0.0.1:5672/'
    assert f'AMQP connect to amqp://guest:***@127.0.0.1:{closed}/ failed' in caplog.text
    assert 'guest:guest' not in caplog.text
    listed = make(brokers, catalog, dsn=[f'amqp://guest:guest@127.0.0.1:{closed}/', DSN])
    assert await listed.queue_length(queue.name) == 1


def test_attempt_counts_the_quorum_queues_deliveries() -> None:
    headers = {'x-attempt': 2, 'x-delivery-count': 3}
    assert attempt_of(headers) == 2
    assert attempt_of(headers, counted=True) == 5
    assert attempt_of({'x-delivery-count': 'x'}, counted=True) == 1


async def test_a_refused_publish_is_sent_again_on_a_new_channel_until_its_deadline(brokers, uid, monkeypatch):
    # What a quorum queue does during its leader election (tests/test_amqp_cluster.py meets it for real).
    catalog = Catalog()
    queue = Queue(f'qn_{uid}', catalog=catalog)
    broker = make(brokers, catalog, queue_type='quorum')
    await getattr(broker, queue.name).send({'n': 0})
    first_channel = broker._confirms
    publish_once = broker._publish_once
    refusals = [1, 2]

    async def refusing(*args: Any, **kwargs: Any) -> str | None:
        if refusals:
            refusals.pop()
            return 'nack'
        return await publish_once(*args, **kwargs)
    monkeypatch.setattr(broker, '_publish_once', refusing)
    await getattr(broker, queue.name).send({'n': 1}, timeout=10)
    assert broker._confirms is not first_channel  # the channel that saw the refusal is not used again
    assert await broker.queue_length(queue.name) == 2
    refusals.extend(range(1000))
    with pytest.raises(BackendError, match=r'deadline \(DeliveryError: .*\(nack\)\)'):
        await getattr(broker, queue.name).send({'n': 2}, timeout=0.5)


async def test_start_fails_at_once_only_when_every_host_refuses(brokers, uid):
    catalog = Catalog()
    queue = Queue(f'qf_{uid}', catalog=catalog)
    closed = [free_port(), free_port()]
    broker = make(brokers, catalog, dsn=f'amqp://guest:s3cret@127.0.0.1:{closed[0]},127.0.0.1:{closed[1]}/')
    with pytest.raises(ConnectError) as error:
        await getattr(broker, queue.name).send({'n': 1}, timeout=30)
    assert 'connection refused' in str(error.value) and 's3cret' not in str(error.value)
