"""Signals and RPC while connections are cut: every call returns or times out by its deadline; gaps counted.

Two buses of the backend connect through the fault proxy: a responder (an
agent answering the RPC and counting the plain signals it hears) and a
caller (sending a numbered signal every 20 ms and calling the RPC in a
loop). The proxy resets every connection each second and blackholes once.
Pub/sub is at most once, so signals sent during a cut are lost: they are
counted as *gaps*, not failures. A call must end (answer, TimeoutError or a
BackendError) within its timeout plus a small slack, whatever the network does.

>>> rows = await rpc_under_cuts('redis', seconds=6)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from microagent import Catalog, MicroAgent, Signal, receiver
from microagent._tasks import TaskSet
from microagent.tools.amqp import AMQPSignalBus
from microagent.tools.nats import NATSSignalBus
from microagent.tools.redis import RedisSignalBus

from .proxy import FaultProxy
from .servers import NATSServer, RabbitUser, RedisServer, free_port

__all__ = ['BUS_BACKENDS', 'rpc_under_cuts']

BUS_BACKENDS = ('redis', 'amqp', 'nats')  # Kafka has no signal bus

CALL_TIMEOUT = 1.0
SLACK = 0.5
BLACKHOLE = 3.0  # longer than a call's timeout: a call must not wait for the route to come back


def _row(check: str, value: Any, limit: str, ok: bool) -> dict[str, Any]:
    return {'check': check, 'value': value, 'limit': limit, 'ok': bool(ok)}


async def rpc_under_cuts(backend: str, seconds: float = 8.0, **options: Any) -> list[dict[str, Any]]:
    """Rows: slowest call vs its deadline, answered/timed-out/failed calls, signal gaps.

    *options* go to both buses (e.g. ``fast_lane=False``: AMQP on plain aiormq) and name the rows apart.
    """
    server: Any = None
    if backend == 'redis':
        server = await asyncio.to_thread(RedisServer(free_port()).start)
        target = server.port
    elif backend == 'nats':
        server = await asyncio.to_thread(NATSServer().start)
        target = server.port
    else:
        server = await asyncio.to_thread(RabbitUser().create)
        target = 5672
    proxy = await FaultProxy(target).start()
    try:
        dsn = server.dsn(proxy.port)
        return await _exercise(backend, dsn, proxy, seconds, options)
    finally:
        await proxy.close()
        await asyncio.to_thread(server.delete if backend == 'amqp' else server.close)


def _buses(backend: str, dsn: str, catalog: Catalog, options: dict[str, Any]) -> tuple[Any, Any]:
    prefix = f'REL{uuid.uuid4().hex[:8]}'
    cls: Any = {'redis': RedisSignalBus, 'amqp': AMQPSignalBus, 'nats': NATSSignalBus}[backend]
    return cls(dsn, prefix=prefix, catalog=catalog, **options), cls(dsn, prefix=prefix, catalog=catalog, **options)


async def _exercise(backend: str, dsn: str, proxy: FaultProxy, seconds: float,
                    options: dict[str, Any]) -> list[dict[str, Any]]:
    catalog = Catalog()
    tick = Signal(name=f'rel_tick_{uuid.uuid4().hex[:8]}', providing_args=('n',), catalog=catalog)
    ask = Signal(name=f'rel_ask_{uuid.uuid4().hex[:8]}', providing_args=('n',), catalog=catalog)
    heard: set[int] = set()

    class Responder(MicroAgent):
        @receiver(tick)
        async def on_tick(self, signal: Signal, sender: str, n: int) -> None:
            heard.add(n)

        @receiver(ask)
        async def on_ask(self, signal: Signal, sender: str, n: int) -> int:
            return n * 2

    responder_bus, caller = _buses(backend, dsn, catalog, options)
    agent = Responder(bus=responder_bus)
    await agent.start()
    tasks = TaskSet('signals under cuts')
    outcomes: list[tuple[str, float]] = []
    sent: list[int] = []
    try:
        deadline = time.monotonic() + seconds
        tasks.spawn(_ticks(caller, tick, sent, deadline), name='ticks')
        tasks.spawn(_faults(proxy, deadline), name='cuts')
        await _calls(caller, ask, outcomes, deadline)
        await tasks.drain(CALL_TIMEOUT + SLACK + 5)
    finally:
        await tasks.cancel()
        await agent.stop(timeout=2)
        await caller.close()
    return _rows(' '.join([backend, *(f'{key}={value}' for key, value in options.items())]), outcomes, sent, heard)


async def _calls(bus: Any, ask: Signal, outcomes: list[tuple[str, float]], deadline: float) -> None:
    n = 0
    while time.monotonic() < deadline:
        n += 1
        began = time.monotonic()
        try:
            # The outer timeout only guards the test from hanging; the check is on the time taken.
            async with asyncio.timeout(CALL_TIMEOUT * 10):
                await getattr(bus, ask.name).call('reliability', timeout=CALL_TIMEOUT, n=n)
            outcome = 'answered'
        except TimeoutError:
            outcome = 'timed out'
        except Exception as exc:  # noqa: BLE001 - any error ends the call in time, which is what counts
            outcome = type(exc).__name__
        outcomes.append((outcome, time.monotonic() - began))


async def _ticks(bus: Any, tick: Signal, sent: list[int], deadline: float) -> None:
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await getattr(bus, tick.name).send('reliability', n=n)
            sent.append(n)
        except Exception:  # noqa: BLE001, S110 - a send that failed is not expected to arrive
            pass
        await asyncio.sleep(0.02)  # the signal rate, not a synchronisation


async def _faults(proxy: FaultProxy, deadline: float) -> None:
    cuts = 0
    while time.monotonic() < deadline - 1:
        await asyncio.sleep(1.0)  # one cut a second: the fault schedule
        cuts += 1
        if cuts == 3:
            proxy.blackhole(True)
            await asyncio.sleep(BLACKHOLE)  # how long the route stays dead
            proxy.blackhole(False)
        await proxy.reset()


def _rows(backend: str, outcomes: list[tuple[str, float]], sent: list[int], heard: set[int]) -> list[dict[str, Any]]:
    slowest = round(max((t for _, t in outcomes), default=0.0), 3)
    kinds: dict[str, int] = {}
    for outcome, _ in outcomes:
        kinds[outcome] = kinds.get(outcome, 0) + 1
    gaps = len(set(sent) - heard)
    return [
        _row(f'{backend} bus: slowest RPC call under cuts (s)', slowest, f'<= timeout {CALL_TIMEOUT} + {SLACK}',
             slowest <= CALL_TIMEOUT + SLACK),
        _row(f'{backend} bus: RPC outcomes', kinds, 'some answered', kinds.get('answered', 0) > 0),
        _row(f'{backend} bus: signals lost in cuts (gaps, at most once)', f'{gaps} of {len(sent)}',
             'reported', True),
    ]
