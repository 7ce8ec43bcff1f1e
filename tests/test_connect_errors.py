"""A refused login, an unknown host and nothing listening fail at once, named, without the password.

Every bus and broker (memory has no connection), each of the three causes,
at ``agent.start()`` (a receiver, a consumer) and on a send. Kafka: tansu
has no SASL, so the refused login is not covered there (the classification
of aiokafka's SASL errors is unit-tested in ``test_cause_of``).
"""
from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from microagent import Catalog, ConnectError, MicroAgent, Queue, Signal, consumer, receiver
from microagent._connect import AUTH, REFUSED, UNKNOWN_HOST, cause_of
from reliability.servers import NATSServer, RedisServer, free_port

from .kafka_server import require_kafka
from .nats_server import require_nats
from .services import require_port

SECRET = 'canary-Pw-17a'
BOUND = 5.0  # well under every backend's subscribe/connect timeout (10 s): "at once", with room for a loaded machine
CASES = ('password', 'host', 'refused')
CAUSES = {'password': AUTH, 'host': UNKNOWN_HOST, 'refused': REFUSED}


@pytest.fixture(scope='module')
def redis_server() -> Iterator[RedisServer]:
    require_port('redis', 6379)  # the machine has redis-server where it has Redis
    server = RedisServer(free_port(), password=SECRET).start()
    yield server
    server.close()


@pytest.fixture(scope='module')
def nats_server() -> Iterator[NATSServer]:
    require_nats()
    server = NATSServer(password=SECRET).start()
    yield server
    server.close()


def _dsn(request: pytest.FixtureRequest, kind: str, case: str) -> str:
    port = free_port()  # nothing listens there
    host = 'no-such-host.invalid'
    if kind == 'redis':
        good = request.getfixturevalue('redis_server').port
        return {'password': f'redis://:wrong-{SECRET}@127.0.0.1:{good}/0', 'host': f'redis://:{SECRET}@{host}:6379/0',
                'refused': f'redis://:{SECRET}@127.0.0.1:{port}/0'}[case]
    if kind == 'amqp':
        require_port('RabbitMQ', 5672)
        return {'password': f'amqp://guest:wrong-{SECRET}@127.0.0.1:5672/', 'host': f'amqp://guest:{SECRET}@{host}/',
                'refused': f'amqp://guest:{SECRET}@127.0.0.1:{port}/'}[case]
    if kind == 'nats':
        good = request.getfixturevalue('nats_server').port
        return {'password': f'nats://reliability:wrong-{SECRET}@127.0.0.1:{good}',
                'host': f'nats://reliability:{SECRET}@{host}:4222',
                'refused': f'nats://reliability:{SECRET}@127.0.0.1:{port}'}[case]
    require_kafka()
    if case == 'password':
        pytest.skip('tansu (the test Kafka) has no SASL: a refused login cannot be produced')
    return {'host': f'kafka://{host}:9092', 'refused': f'kafka://127.0.0.1:{port}'}[case]


def _backend(kind: str, part: str, dsn: str, catalog: Catalog) -> Any:
    if kind == 'redis':
        from microagent.tools.redis import RedisBroker, RedisSignalBus
        return RedisSignalBus(dsn, catalog=catalog) if part == 'bus' else RedisBroker(dsn, catalog=catalog)
    if kind == 'amqp':
        from microagent.tools.amqp import AMQPBroker, AMQPSignalBus
        return AMQPSignalBus(dsn, catalog=catalog) if part == 'bus' else AMQPBroker(dsn, catalog=catalog)
    if kind == 'nats':
        from microagent.tools.nats import NATSBroker, NATSSignalBus
        return NATSSignalBus(dsn, catalog=catalog) if part == 'bus' else NATSBroker(dsn, catalog=catalog)
    if part == 'bus':
        pytest.skip('Kafka has no signal bus')
    from microagent.tools.kafka import KafkaBroker
    return KafkaBroker(dsn, catalog=catalog)


def _agent(part: str, backend: Any, signal: Signal, queue: Queue) -> MicroAgent:
    class Listener(MicroAgent):
        @receiver(signal)
        async def handle(self, **kwargs: Any) -> None:
            pass

    class Worker(MicroAgent):
        @consumer(queue)
        async def work(self, **kwargs: Any) -> None:
            pass
    return Listener(bus=backend) if part == 'bus' else Worker(broker=backend)


async def _fails(action: Any) -> ConnectError:
    try:
        async with asyncio.timeout(BOUND):
            await action
    except ConnectError as exc:
        return exc
    except TimeoutError:
        pytest.fail(f'no error within {BOUND}s')
    pytest.fail('it connected')


@pytest.mark.parametrize('part', ['bus', 'broker'])
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('kind', ['redis', 'amqp', 'nats', 'kafka'])
async def test_connect_failure_is_named_at_once(request, kind, case, part, caplog):
    dsn = _dsn(request, kind, case)
    catalog = Catalog()
    uid = uuid.uuid4().hex[:8]
    signal, queue = Signal(f'ping_{uid}', ['n'], catalog=catalog), Queue(f'work_{uid}', catalog=catalog)
    caplog.set_level(logging.DEBUG)
    backend = _backend(kind, part, dsn, catalog)
    try:
        errors = [await _fails(_agent(part, backend, signal, queue).start())]
        sent = getattr(backend, signal.name if part == 'bus' else queue.name)
        errors.append(await _fails(sent.send('tester', n=1) if part == 'bus' else sent.send({'n': 1})))
    finally:
        async with asyncio.timeout(10):
            await backend.close()
    for exc in errors:
        assert exc.cause == CAUSES[case], exc
        assert exc.owner == type(backend).__name__
        assert exc.dsn in str(exc)
        assert '***' in exc.dsn or '@' not in dsn
        text = ''.join(traceback.format_exception(exc))
        assert SECRET not in text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(('error', 'cause'), [
    (ConnectionRefusedError(111, 'Connect call failed'), REFUSED),
    (OSError(-2, 'Name or service not known'), UNKNOWN_HOST),
    (RuntimeError('SaslAuthenticationFailed: Authentication failed during authentication due to invalid '
                  'credentials with SASL mechanism PLAIN'), AUTH),
    (RuntimeError('ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN'), AUTH),
    (TimeoutError(), None),
    (ConnectionResetError(104, 'Connection reset by peer'), None),
])
def test_cause_of(error, cause):
    assert cause_of(error) == cause
    wrapped = RuntimeError('wrapper')
    wrapped.__cause__ = error
    assert cause_of(wrapped) == cause
