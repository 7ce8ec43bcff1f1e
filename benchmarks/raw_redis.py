"""The raw side on Redis: redis-py doing each scenario the fastest honest way.

* A: sequential ``RPUSH`` (one await each); a consumer on its own connection
  ``BLPOP``s one message, then takes up to 100 more with ``LPOP key count``.
* A2: the same consumer; ``RPUSH`` pipelined ``batch`` at a time.
* B: sequential ``PUBLISH``; one subscriber connection.
* C: request/reply over pub/sub: the caller publishes ``{c, r, a}`` and awaits
  the reply on its own channel; the responder answers inline.

>>> result = await run(ctx, 'A')   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from microagent._tasks import TaskSet

from .library import Ctx, chunks, latency_figures
from .measure import Incomplete, Seen, end_to_end, rate
from .settings import WARMUP, payload

__all__ = ['aioredis', 'cleanup', 'run']

POP_MORE = 100
IO_TIMEOUT = 10.0


def client(ctx: Ctx) -> aioredis.Redis:
    return aioredis.Redis.from_url(ctx.dsn, socket_timeout=IO_TIMEOUT, socket_connect_timeout=IO_TIMEOUT)


async def consume_list(conn: aioredis.Redis, key: str, seen: Seen) -> None:
    while not seen.done.is_set():
        item = await conn.blpop([key], timeout=1)
        if item is None:
            continue
        seen.hit(json.loads(item[1])['id'])
        more: list[bytes] = await conn.lpop(key, POP_MORE) or []  # type: ignore[assignment]
        for body in more:
            seen.hit(json.loads(body)['id'])


@asynccontextmanager
async def connections(ctx: Ctx, count: int) -> AsyncIterator[list[aioredis.Redis]]:
    conns = [client(ctx) for _ in range(count)]
    tasks = TaskSet('raw redis')
    try:
        yield conns
    finally:
        await tasks.cancel()
        for conn in conns:
            await conn.aclose()


async def queue_e2e(ctx: Ctx, *, pipelined: bool) -> dict[str, Any]:
    """A and A2 with RPUSH and a BLPOP/LPOP consumer."""
    seen = Seen(ctx.n)
    key = f'bench:raw:{ctx.uid}'
    bodies = [json.dumps(payload(i)) for i in range(ctx.n)]
    tasks = TaskSet('raw redis consumer')
    async with connections(ctx, 2) as (producer, reader):
        tasks.spawn(consume_list(reader, key, seen))
        try:
            for i in range(1, WARMUP + 1):
                await producer.rpush(key, json.dumps(payload(-i)))
            await seen.wait_for(lambda: seen.warm >= WARMUP, ctx.timeout, 'warm-up')
            started = time.perf_counter()
            if pipelined:
                for part in chunks(ctx.n, ctx.batch):
                    pipe = producer.pipeline(transaction=False)
                    for body in bodies[part.start:part.stop]:
                        pipe.rpush(key, body)
                    await pipe.execute()
            else:
                for body in bodies:
                    await producer.rpush(key, body)
            sent = time.perf_counter()
            await seen.all(ctx.timeout)
        finally:
            await tasks.drain(2.0)  # the reader ends by itself once all are seen
            await producer.delete(key)
    return end_to_end(seen, started, sent, ctx.n)


async def read_pubsub(pubsub: Any, on_message: Any) -> None:
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            await on_message(message['data'])


async def signals(ctx: Ctx) -> dict[str, Any]:
    """B: sequential PUBLISH to one subscriber."""
    seen = Seen(ctx.n)
    channel = f'bench:raw:{ctx.uid}'
    bodies = [json.dumps(payload(i)) for i in range(ctx.n)]
    tasks = TaskSet('raw redis subscriber')

    async def on_message(data: bytes) -> None:
        seen.hit(json.loads(data)['id'])
    async with connections(ctx, 2) as (publisher, subscriber):
        pubsub = subscriber.pubsub()
        await pubsub.subscribe(channel)
        tasks.spawn(read_pubsub(pubsub, on_message))
        try:
            await warm_publish(publisher, channel, seen, ctx.timeout)
            started = time.perf_counter()
            for body in bodies:
                await publisher.publish(channel, body)
            sent = time.perf_counter()
            await seen.quiet(ctx.timeout, idle=2.0)
        finally:
            await tasks.cancel()
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2
    return {'count': seen.count, 'loss': ctx.n - seen.count, 'duplicates': seen.duplicates,
            'send_rate': rate(ctx.n, sent - started), 'rate': rate(seen.count, max(seen.last, sent) - started)}


async def warm_publish(publisher: aioredis.Redis, channel: str, seen: Seen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while seen.warm == 0:
        if time.monotonic() > deadline:
            raise Incomplete('warm-up signal', 0, 1)
        await publisher.publish(channel, json.dumps(payload(-1)))
        try:
            await seen.wait_for(lambda: seen.warm > 0, 0.2, 'warm-up signal')
        except Incomplete:
            continue


async def rpc(ctx: Ctx) -> dict[str, Any]:
    """C: request/reply round trips over pub/sub, caller and responder on their own connections."""
    requests, replies = f'bench:raw:{ctx.uid}:req', f'bench:raw:{ctx.uid}:rep'
    pending: dict[str, asyncio.Future[Any]] = {}
    tasks = TaskSet('raw redis rpc')
    async with connections(ctx, 4) as (caller, caller_sub, responder, responder_sub):
        async def answer(data: bytes) -> None:
            request = json.loads(data)
            await responder.publish(request['r'], json.dumps({'c': request['c'], 'v': request['a']['id']}))

        async def reply(data: bytes) -> None:
            response = json.loads(data)
            future = pending.pop(response['c'], None)
            if future is not None and not future.done():
                future.set_result(response['v'])
        subs = [caller_sub.pubsub(), responder_sub.pubsub()]
        await subs[0].subscribe(replies)
        await subs[1].subscribe(requests)
        tasks.spawn(read_pubsub(subs[0], reply))
        tasks.spawn(read_pubsub(subs[1], answer))

        async def call(i: int, timeout: float) -> Any:
            corr = uuid.uuid4().hex
            future = pending[corr] = asyncio.get_running_loop().create_future()
            await caller.publish(requests, json.dumps({'c': corr, 'r': replies, 'a': payload(i)}))
            try:
                return await asyncio.wait_for(future, timeout)
            finally:
                pending.pop(corr, None)
        try:
            return await round_trips(ctx, call)
        finally:
            await tasks.cancel()
            for sub in subs:
                await sub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2


async def round_trips(ctx: Ctx, call: Any) -> dict[str, Any]:
    """Warm up (until calls answer), then time N sequential calls; each answer must be its id."""
    deadline = time.monotonic() + ctx.timeout
    answered = 0
    while answered < WARMUP:
        try:
            await call(-1, 0.5)
            answered += 1
        except TimeoutError:
            if time.monotonic() > deadline:
                raise Incomplete('warm-up rpc', answered, WARMUP) from None
    latencies: list[float] = []
    for i in range(ctx.n):
        started = time.perf_counter()
        try:
            value = await call(i, 10.0)
        except TimeoutError:
            raise Incomplete('rpc calls', len(latencies), ctx.n) from None
        if value != i:
            raise Incomplete(f'rpc call {i} answered {value!r}', len(latencies), ctx.n)
        latencies.append(time.perf_counter() - started)
    return latency_figures(latencies)


async def run(ctx: Ctx, scenario: str) -> dict[str, Any]:
    """Run raw *scenario* (A, A2, B or C) with redis-py."""
    if scenario in ('A', 'A2'):
        return await queue_e2e(ctx, pipelined=scenario == 'A2')
    if scenario == 'B':
        return await signals(ctx)
    if scenario == 'C':
        return await rpc(ctx)
    raise ValueError(f'no raw redis scenario {scenario!r}')


async def cleanup(dsn: str, marker: str) -> int:
    """Delete every key of this run (names containing *marker*); how many."""
    conn = aioredis.Redis.from_url(dsn, socket_timeout=IO_TIMEOUT, socket_connect_timeout=IO_TIMEOUT)
    try:
        keys = [key async for key in conn.scan_iter(match=f'*{marker}*', count=1000)]
        if keys:
            await conn.delete(*keys)
        return len(keys)
    finally:
        await conn.aclose()
