"""The library side: microagent's public API doing each scenario.

Every scenario builds its own :class:`Catalog` with fresh names, a broker or
bus from ``make_broker``/``make_bus`` and an agent whose handler counts the
message ids it really sees (:class:`Seen`). The clock starts after a warm-up
(connections open, subscriptions live), the same as on the raw side::

    result = await run(Ctx('memory', 'memory://bench', n=200, uid='x1', timeout=60, batch=500), 'A')
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from microagent import Catalog, MicroAgent, Queue, Signal, consumer, receiver
from microagent._tasks import TaskSet
from microagent.backends import make_broker, make_bus
from microagent.broker import AbstractQueueBroker, BoundQueue
from microagent.bus import AbstractSignalBus, BoundSignal

from .measure import Incomplete, Seen, end_to_end, percentile, rate, rss_mb
from .settings import D_HANDLER_SECONDS, D_INFLIGHT, G_WINDOW, PAYLOAD_KEYS, WARMUP, payload

__all__ = ['Ctx', 'run']


@dataclass(frozen=True)
class Ctx:
    """One scenario run: where, how many, names, deadline and batch size."""

    backend: str
    dsn: str
    n: int
    uid: str
    timeout: float
    batch: int
    telemetry: Any = None  # a microagent.telemetry.Telemetry for the traced side

    @property
    def name(self) -> str:
        return f'bench_{self.uid}'

    @property
    def options(self) -> dict[str, Any]:
        """Backend options of this side: ``telemetry`` only when tracing (else nothing, as before)."""
        return {'telemetry': self.telemetry} if self.telemetry is not None else {}


def chunks(n: int, size: int, start: int = 0) -> Iterator[range]:
    """``range(start, n)`` in consecutive pieces of at most *size*."""
    for first in range(start, n, size):
        yield range(first, min(first + size, n))


def consumer_agent(queue: Queue, seen: Seen, delay: float = 0.0, **options: Any) -> type[MicroAgent]:
    """An agent class whose consumer of *queue* counts ids (after *delay* seconds of pretend I/O)."""
    class Counting(MicroAgent):
        @consumer(queue, timeout=60, **options)
        async def handle(self, **message: Any) -> None:
            if delay:
                await asyncio.sleep(delay)
            seen.hit(message['id'])
    return Counting


@asynccontextmanager
async def consuming(ctx: Ctx, seen: Seen, delay: float = 0.0,
                    **options: Any) -> AsyncIterator[tuple[BoundQueue, AbstractQueueBroker]]:
    """A running consumer agent on a fresh queue; yields the bound queue to send to."""
    catalog = Catalog()
    queue = Queue(ctx.name, catalog=catalog)
    broker = make_broker(ctx.dsn, catalog=catalog, **ctx.options)
    agent = consumer_agent(queue, seen, delay, **options)(broker=broker)
    try:
        await agent.start()
        yield BoundQueue(broker, queue), broker
    finally:
        await agent.stop(timeout=5)
        await broker.close()


async def warm_queue(bound: BoundQueue, seen: Seen, timeout: float) -> None:
    for i in range(1, WARMUP + 1):
        await bound.send(payload(-i))
    await seen.wait_for(lambda: seen.warm >= WARMUP, timeout, 'warm-up')


async def queue_e2e(ctx: Ctx, *, batched: bool, delay: float = 0.0, **options: Any) -> dict[str, Any]:
    """A, A2 and D: N messages sent sequentially (or in batches) to a running consumer."""
    seen = Seen(ctx.n)
    messages = [payload(i) for i in range(ctx.n)]
    async with consuming(ctx, seen, delay, **options) as (bound, _):
        await warm_queue(bound, seen, ctx.timeout)
        started = time.perf_counter()
        if batched:
            for part in chunks(ctx.n, ctx.batch):
                await bound.send_many(messages[part.start:part.stop])
        else:
            for message in messages:
                await bound.send(message)
        sent = time.perf_counter()
        await seen.all(ctx.timeout)
    return end_to_end(seen, started, sent, ctx.n)


async def concurrency(ctx: Ctx) -> dict[str, Any]:
    """D: handlers awaiting 5 ms of I/O with 64 in flight (and plain asyncio doing the same, no broker)."""
    ceiling = await asyncio_ceiling(ctx.n)
    result = await queue_e2e(ctx, batched=True, delay=D_HANDLER_SECONDS, max_inflight=D_INFLIGHT)
    return {**result, 'ideal_rate': D_INFLIGHT / D_HANDLER_SECONDS, 'asyncio_rate': ceiling}


async def asyncio_ceiling(n: int) -> float | None:
    """*n* sleeps of 5 ms, 64 at a time, in bare asyncio: what D could reach with a free broker."""
    tasks = TaskSet('asyncio ceiling')
    slots = asyncio.Semaphore(D_INFLIGHT)

    async def one() -> None:
        try:
            await asyncio.sleep(D_HANDLER_SECONDS)
        finally:
            slots.release()
    started = time.perf_counter()
    for _ in range(n):
        await slots.acquire()
        tasks.spawn(one())
    await tasks.drain(None)
    return rate(n, time.perf_counter() - started)


async def drain(ctx: Ctx) -> dict[str, Any]:
    """D2: a pre-filled queue drained by handlers awaiting 5 ms, 64 in flight, vs bare asyncio in this process.

    The rate runs from the first message handled to the last (joining a consumer group is not counted);
    ``asyncio_rate`` is 64 bare asyncio workers doing the same awaits, measured right after.
    """
    seen = Seen(ctx.n)
    catalog = Catalog()
    queue = Queue(ctx.name, catalog=catalog)
    broker = make_broker(ctx.dsn, catalog=catalog, **ctx.options)
    try:
        bound = BoundQueue(broker, queue)
        for part in chunks(ctx.n, ctx.batch):
            await bound.send_many([payload(i) for i in part])
        agent = consumer_agent(queue, seen, D_HANDLER_SECONDS, max_inflight=D_INFLIGHT)(broker=broker)
        cpu = time.process_time()
        await agent.start()
        try:
            await seen.all(ctx.timeout)
            cpu = time.process_time() - cpu
        finally:
            await agent.stop(timeout=5)
    finally:
        await broker.close()
    # From the first handler's start (its end minus its 5 ms) to the last end, as the asyncio side is timed.
    drained = rate(seen.count, seen.last - seen.first + D_HANDLER_SECONDS)
    bare_cpu = time.process_time()
    ceiling = await asyncio_ceiling(ctx.n)
    bare_cpu = time.process_time() - bare_cpu
    # CPU per message (start-up included on the library side): on a busy machine the rates follow it.
    return {'count': seen.count, 'duplicates': seen.duplicates, 'drain_rate': drained, 'asyncio_rate': ceiling,
            'vs_asyncio': drained / ceiling if drained and ceiling else None,
            'cpu_us': cpu / ctx.n * 1e6, 'asyncio_cpu_us': bare_cpu / ctx.n * 1e6}


@asynccontextmanager
async def buses(ctx: Ctx, handler: Callable[..., Any]) -> AsyncIterator[BoundSignal]:
    """A receiver agent on one bus running *handler*; yields the signal bound to a second bus."""
    catalog = Catalog()
    signal = Signal(ctx.name, providing_args=PAYLOAD_KEYS, catalog=catalog)

    class Receiving(MicroAgent):
        @receiver(signal, timeout=60)
        async def on_signal(self, **kwargs: Any) -> Any:
            return handler(kwargs)

    prefix = f'bench{ctx.uid}'
    receiving: AbstractSignalBus = make_bus(ctx.dsn, catalog=catalog, prefix=prefix, **ctx.options)
    sending: AbstractSignalBus = make_bus(ctx.dsn, catalog=catalog, prefix=prefix, **ctx.options)
    agent = Receiving(bus=receiving)
    try:
        await agent.start()
        yield BoundSignal(sending, signal)
    finally:
        await agent.stop(timeout=5)
        await sending.close()


async def warm_signal(bound: BoundSignal, seen: Seen, timeout: float) -> None:
    # A subscription may go live a moment after bind() returns (pub/sub): send until one arrives.
    deadline = time.monotonic() + timeout
    while seen.warm == 0:
        if time.monotonic() > deadline:
            raise Incomplete('warm-up signal', 0, 1)
        await bound.send('bench', **payload(-1))
        try:
            await seen.wait_for(lambda: seen.warm > 0, 0.2, 'warm-up signal')
        except Incomplete:
            continue


async def signals(ctx: Ctx) -> dict[str, Any]:
    """B: N sequential signal sends to one receiver agent; rate and loss."""
    seen = Seen(ctx.n)
    messages = [payload(i) for i in range(ctx.n)]
    async with buses(ctx, lambda kwargs: seen.hit(kwargs['id'])) as bound:
        await warm_signal(bound, seen, ctx.timeout)
        started = time.perf_counter()
        for message in messages:
            await bound.send('bench', **message)
        sent = time.perf_counter()
        await seen.quiet(ctx.timeout, idle=2.0)
    return {'count': seen.count, 'loss': ctx.n - seen.count, 'duplicates': seen.duplicates,
            'send_rate': rate(ctx.n, sent - started),
            'rate': rate(seen.count, max(seen.last, sent) - started)}


async def rpc(ctx: Ctx) -> dict[str, Any]:
    """C: sequential RPC calls over the bus; latency percentiles of the correct answers."""
    async with buses(ctx, lambda kwargs: kwargs['id']) as bound:
        await warm_rpc(bound, ctx.timeout)
        latencies: list[float] = []
        for i in range(ctx.n):
            started = time.perf_counter()
            try:
                answer = await bound.call('bench', timeout=10, **payload(i))
            except TimeoutError:
                raise Incomplete('rpc calls', len(latencies), ctx.n) from None
            if list(answer.values()) != [i]:
                raise Incomplete(f'rpc call {i} answered {answer!r}', len(latencies), ctx.n)
            latencies.append(time.perf_counter() - started)
    return latency_figures(latencies)


async def warm_rpc(bound: BoundSignal, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < WARMUP:
        try:
            await bound.call('bench', timeout=0.5, **payload(-1))
            answered += 1
        except TimeoutError:
            if time.monotonic() > deadline:
                raise Incomplete('warm-up rpc', answered, WARMUP) from None


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    """Count, p50, p99 and mean of RPC round trips, in milliseconds."""
    return {'count': len(latencies), 'p50_ms': percentile(latencies, 0.5) * 1000,
            'p99_ms': percentile(latencies, 0.99) * 1000, 'mean_ms': sum(latencies) / len(latencies) * 1000}


async def startup(ctx: Ctx) -> dict[str, Any]:
    """F: a message waits in the queue; time from ``agent.start()`` to its handling."""
    catalog = Catalog()
    queue = Queue(ctx.name, catalog=catalog)
    sender = make_broker(ctx.dsn, catalog=catalog, **ctx.options)
    await BoundQueue(sender, queue).send(payload(0))
    await sender.close()
    seen = Seen(1)
    broker = make_broker(ctx.dsn, catalog=catalog, **ctx.options)
    agent = consumer_agent(queue, seen)(broker=broker)
    try:
        started = time.perf_counter()
        await agent.start()
        start_returned = time.perf_counter()
        await seen.all(ctx.timeout)
    finally:
        await agent.stop(timeout=5)
        await broker.close()
    return {'count': seen.count, 'first_ms': (seen.first - started) * 1000,
            'start_ms': (start_returned - started) * 1000}


async def soak(ctx: Ctx) -> dict[str, Any]:
    """G: N messages through one consumer, at most G_WINDOW outstanding; RSS at start, middle, end."""
    seen = Seen(ctx.n)
    marks: dict[str, float] = {}
    async with consuming(ctx, seen) as (bound, _):
        await warm_queue(bound, seen, ctx.timeout)
        marks['rss_before_mb'] = rss_mb()
        started = time.perf_counter()
        sent = 0
        for part in chunks(ctx.n, ctx.batch):
            await seen.wait_for(lambda limit=sent - G_WINDOW: seen.count >= limit,  # type: ignore[misc]
                                ctx.timeout, 'soak window')
            await bound.send_many([payload(i) for i in part])
            sent = part.stop
            take_marks(marks, seen, ctx.n)
        await seen.all(ctx.timeout)
        marks['rss_end_mb'] = rss_mb()
    start = marks.get('rss_start_mb', marks['rss_before_mb'])
    return {'count': seen.count, 'duplicates': seen.duplicates, 'e2e_rate': rate(seen.count, seen.last - started),
            **marks, 'rss_growth_mb': marks['rss_end_mb'] - start}


def take_marks(marks: dict[str, float], seen: Seen, n: int) -> None:
    # "Start" is after 5% (warm caches, full buffers), so growth measures leaks, not warm-up.
    if 'rss_start_mb' not in marks and seen.count >= n // 20:
        marks['rss_start_mb'] = rss_mb()
    if 'rss_mid_mb' not in marks and seen.count >= n // 2:
        marks['rss_mid_mb'] = rss_mb()


async def run(ctx: Ctx, scenario: str) -> dict[str, Any]:
    """Run library *scenario* (A, A2, B, C, D, F or G) and return its figures."""
    if scenario == 'A':
        return await queue_e2e(ctx, batched=False)
    if scenario == 'A2':
        return await queue_e2e(ctx, batched=True)
    handlers = {'B': signals, 'C': rpc, 'D': concurrency, 'D2': drain, 'F': startup, 'G': soak}
    return await handlers[scenario](ctx)
