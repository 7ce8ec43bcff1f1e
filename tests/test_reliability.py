"""The reliability suite at smoke size: the same code as ``python -m reliability``, asserting the pass criteria.

Each backend runs its faults against its own broker process or its own user
on the shared server (see reliability/rigs.py), so other tests never see a
cut. The full size runs with ``--slow`` (or ``python -m reliability --size full``).
"""
from __future__ import annotations

import asyncio
import shutil

import pytest

from reliability.drivers import FAULTS, SIZES, run_backend
from reliability.ledger import Ledger, count, read_records
from reliability.proxy import FaultProxy
from reliability.security import http_declarations, no_pickle, run_security
from reliability.servers import NATSServer
from reliability.signals import BUS_BACKENDS, rpc_under_cuts
from reliability.singleton import KILL_FAULT, tick_figures

from .kafka_server import tansu_binary
from .services import IN_CI, port_open

SMOKE = SIZES['smoke']


def failed(result: dict) -> list[dict]:
    return [row for row in result['checks'] if not row['ok']]


def broker_bug_only(result: dict) -> bool:
    """A Kafka run whose only failure is messages owed to a group tansu never assigned (finding 3)."""
    rows = {row['check'] for row in failed(result)}
    owed = result['figures'].get('kafka_owed')
    return result['backend'] == 'kafka' and bool(owed) and rows <= {'drained: every confirmed send handled'}


def available() -> list[str]:
    """The backends this machine can run (CI=true: all of them, or fail)."""
    found = []
    if shutil.which('redis-server'):
        found.append('redis')
    if port_open(5672) and shutil.which('rabbitmqctl'):
        found.append('amqp')
    if tansu_binary() is not None:
        found.append('kafka')
    if IN_CI and len(found) < 3:
        pytest.fail(f'CI=true: every backend is required, found only {found}')
    return found


# A Kafka run can fail for a broker bug (docs/reliability.md, finding 3): tansu 0.6 may leave a consumer group
# without a leader, so the group that drains the run never gets an assignment and owed messages stay unhandled
# (never lost: the audit finds them ahead of the committed offset). Its run is part of the smoke test and is
# reported; a Kafka failure marks the test xfail (with the failed checks), not passed.
KAFKA_KNOWN = 'Kafka failed checks (docs/reliability.md, finding 3: a tansu group-coordinator bug): '


@pytest.mark.timeout(300)
async def test_every_backend_and_the_security_checks_at_smoke_size() -> None:
    # The backends run side by side (each on brokers, users and ports of its own): the whole reduced suite
    # then takes about as long as its slowest backend.
    backends = available()
    if not backends:
        pytest.skip('no backend available (redis-server, RabbitMQ with rabbitmqctl, tansu)')
    runs = [run_backend(b, faults_for(b), SMOKE) for b in backends]
    buses = [rpc_under_cuts(b) for b in backends if b in BUS_BACKENDS]
    *results, security = await asyncio.gather(*runs, run_security(tuple(backends)))
    bus_rows = [row for rows in await asyncio.gather(*buses) for row in rows]
    problems = {r['backend']: failed(r) for r in results if failed(r) and not broker_bug_only(r)}
    assert not problems, (problems, results)
    assert [row for row in security + bus_rows if not row['ok']] == [], security + bus_rows
    kafka = [r for r in results if failed(r)]
    if kafka:
        rows = '; '.join(f"{row['check']} = {row['value']}" for row in failed(kafka[0]))
        pytest.xfail(f"{KAFKA_KNOWN}{rows}; notes: {kafka[0]['notes']}")


@pytest.mark.timeout(300)
async def test_nats_and_its_security_checks_at_smoke_size() -> None:
    # On its own, not side by side with the others: four backends at once on a 2-core machine stretch the
    # others' drain and fault timings past their criteria.
    if not NATSServer.available():
        if IN_CI:
            pytest.fail('CI=true: nats-server is required (apt-get install nats-server)')
        pytest.skip('nats-server is not installed')
    result, security = await asyncio.gather(run_backend('nats', faults_for('nats'), SMOKE),
                                            run_security(('nats',)))
    bus_rows = await rpc_under_cuts('nats')  # alone: its call deadlines are measured on this event loop
    assert not failed(result), (failed(result), result)
    assert [row for row in security + bus_rows if not row['ok']] == [], security + bus_rows


# The faults that drive the paths plain aiormq takes instead of the fast lane: confirms and acks across
# killed workers and cut connections, retries and dead letters, the drain on SIGTERM.
PLAIN_FAULTS = ('kill', 'cut', 'blackhole', 'poison', 'term')


def faults_for(backend: str) -> tuple[str, ...]:
    """The crasher (issue 17) only where a death convicts only the message that caused it.

    Kafka runs crash suspects alone. Redis, RabbitMQ and NATS count an attempt for every message the dead
    consumer held, and the messages handled beside the crasher, requeued with it, were dead-lettered with
    it (docs/reliability.md, "Not covered yet": open).
    """
    return FAULTS if backend == 'kafka' else tuple(f for f in FAULTS if f != 'crasher')


@pytest.mark.timeout(300)
async def test_amqp_on_plain_aiormq_at_smoke_size() -> None:
    """The AMQP fast lane's fallback (``fast_lane=False``) through the faults, after the main run (not beside
    it: two cores carry the whole smoke suite at once, and its timing checks would count the crowding)."""
    if 'amqp' not in available():
        pytest.skip('RabbitMQ with rabbitmqctl is not available')
    result = await run_backend('amqp', PLAIN_FAULTS, SMOKE, options={'fast_lane': False})
    bus_rows = await rpc_under_cuts('amqp', fast_lane=False)
    assert result['backend'] == 'amqp fast_lane=False'
    assert not failed(result), (failed(result), result)
    assert [row for row in bus_rows if not row['ok']] == [], bus_rows


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize('name', ['redis', 'amqp', 'kafka', 'nats'])
async def test_full_size(name: str) -> None:
    result = await run_backend(name, faults_for(name), SIZES['full'])
    if failed(result) and broker_bug_only(result):
        pytest.xfail(KAFKA_KNOWN + '; '.join(f"{row['check']} = {row['value']}" for row in failed(result)))
    assert not failed(result), (failed(result), result)


async def test_http_declarations_warn_and_can_be_forbidden() -> None:
    rows = await http_declarations()
    assert all(r['ok'] for r in rows), rows


def test_no_pickle_anywhere() -> None:
    assert all(r['ok'] for r in no_pickle()), no_pickle()


def test_ledger_counts_lost_duplicated_unexpected(tmp_path) -> None:
    producer, worker = Ledger(tmp_path, 'producer', fsync=False), Ledger(tmp_path, 'worker', fsync=False)
    for mid, status in (('a', 'confirmed'), ('b', 'confirmed'), ('c', 'indeterminate'), ('d', 'confirmed')):
        producer.send(mid, status)
    producer.fault('kill', 'pid 1')
    for mid in ('a', 'a', 'x'):
        worker.handled(mid, 1, worker.begin(mid, 1))
    counts = count(read_records(tmp_path), dead=['d'])
    assert (counts.lost, counts.duplicated, counts.extra_handlings, counts.unexpected) == (['b'], ['a'], 1, ['x'])
    assert counts.unhandled_indeterminate == 1
    assert len(counts.recoveries) == 1 and counts.recoveries[0] >= 0


def test_singleton_ticks_count_duplicates_and_the_takeover_after_each_kill() -> None:
    def tick(n: int, pid: int, late: float = 0.01) -> dict:
        return {'k': 'tick', 'tick': float(n), 'pid': pid, 't': n + late, 'sure': True}

    kill = {'k': 'fault', 'name': KILL_FAULT, 'pid': 1, 't': 2.5}
    records = [tick(1, 1), tick(2, 1), kill, tick(5, 2), tick(6, 2), tick(6, 3, late=0.02), tick(7, 2)]
    figures = tick_figures(records, period=1.0)
    assert figures['duplicates'] == [6.0]     # tick 6 ran in two replicas
    assert figures['missed_per_kill'] == [2]  # ticks 3 and 4: nobody held the lease
    assert figures['takeover_seconds'] == [2.51]
    assert (figures['kills'], figures['taken_over'], figures['holders'], figures['missed_total']) == (1, 1, 4, 2)


def test_a_torn_last_line_is_skipped(tmp_path) -> None:
    ledger = Ledger(tmp_path, 'worker', fsync=False)
    ledger.send('a', 'confirmed')
    with ledger.path.open('ab') as fh:
        fh.write(b'{"k": "send", "id": "b"')  # a SIGKILL in the middle of a write
    assert [r['id'] for r in read_records(tmp_path)] == ['a']


async def test_proxy_resets_and_blackholes_only_its_own_connections() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, '127.0.0.1', 0)
    proxy = await FaultProxy(server.sockets[0].getsockname()[1]).start()
    try:
        reader, writer = await asyncio.open_connection('127.0.0.1', proxy.port)
        writer.write(b'ping')
        assert await asyncio.wait_for(reader.read(4), 5) == b'ping'
        proxy.blackhole(True)
        writer.write(b'lost?')
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(5), 0.3)
        proxy.blackhole(False)
        assert await asyncio.wait_for(reader.read(5), 5) == b'lost?'   # TCP delivers it once the route is back
        assert await proxy.reset() >= 1
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.read(5), 5)
            if not data:
                raise ConnectionResetError
        writer.close()
    finally:
        await proxy.close()
        server.close()
