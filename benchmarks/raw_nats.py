"""The raw side on NATS: nats-py doing each scenario the fastest honest way.

Same guarantees as the library's broker: a file-backed work-queue stream,
publishes that wait for their PubAck and carry a ``Nats-Msg-Id`` (what makes a
retried publish safe), a durable consumer with explicit acks after the handler
and at most 32 unacknowledged messages (the library's default in-flight
limit). The consumer is a push consumer: nats-py's fastest way to receive a
steady flow (no request per batch; its ``fetch`` waits out its timeout for a
full batch once the first message came).

* A: one ``js.publish`` at a time, each awaiting its PubAck.
* A2: ``publish_async`` for ``batch`` messages, then all PubAcks awaited.
* B: core NATS ``publish`` to one subscriber (at most once, like signals).
* C: ``request`` (nats-py's multiplexed inbox) to a responder that ``respond``\\ s.

>>> result = await run(ctx, 'A')   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from .library import Ctx, chunks
from .measure import Seen, end_to_end, signal_figures
from .raw_redis import round_trips
from .settings import WARMUP, payload

__all__ = ['cleanup', 'run']

PREFETCH = 32
IO_TIMEOUT = 10.0


@asynccontextmanager
async def connection(ctx: Ctx) -> AsyncIterator[Client]:
    client = await asyncio.wait_for(nats.connect(ctx.dsn, connect_timeout=5), IO_TIMEOUT)
    try:
        yield client
    finally:
        await client.close()


async def queue_e2e(ctx: Ctx, *, pipelined: bool) -> dict[str, Any]:
    """A and A2: confirmed publishes to a work-queue stream, a durable consumer acking each message."""
    seen = Seen(ctx.n)
    stream, subject = f'bench_raw_{ctx.uid}', f'bench.raw.{ctx.uid}'
    messages = [payload(i) for i in range(ctx.n)]
    ids = itertools.count()
    async with connection(ctx) as producer, connection(ctx) as consumer:
        js = producer.jetstream(timeout=IO_TIMEOUT)
        await js.add_stream(StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE,
                                         storage=StorageType.FILE))

        async def on_message(msg: Msg) -> None:
            seen.hit(json.loads(msg.data)['id'])
            await msg.ack()
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=PREFETCH, max_deliver=-1)
        subscription = await consumer.jetstream().subscribe(subject, durable='workers', stream=stream,
                                                            cb=on_message, manual_ack=True, config=config)
        try:
            for i in range(1, WARMUP + 1):
                await js.publish(subject, json.dumps(payload(-i)).encode(), headers={'Nats-Msg-Id': f'w{i}'})
            await seen.wait_for(lambda: seen.warm >= WARMUP, ctx.timeout, 'warm-up')
            started = time.perf_counter()
            if pipelined:
                for part in chunks(ctx.n, ctx.batch):
                    futures = [await js.publish_async(subject, json.dumps(messages[i]).encode(),
                                                      headers={'Nats-Msg-Id': f'm{next(ids)}'}) for i in part]
                    await asyncio.wait_for(asyncio.gather(*futures), IO_TIMEOUT)
            else:
                for message in messages:
                    await js.publish(subject, json.dumps(message).encode(), headers={'Nats-Msg-Id': f'm{next(ids)}'})
            sent = time.perf_counter()
            await seen.all(ctx.timeout)
        finally:
            await subscription.unsubscribe()
            with contextlib.suppress(nats.js.errors.Error):
                await js.delete_stream(stream)
    return end_to_end(seen, started, sent, ctx.n)


async def signals(ctx: Ctx) -> dict[str, Any]:
    """B: sequential core NATS publishes to one subscriber."""
    seen = Seen(ctx.n)
    subject = f'bench.raw.{ctx.uid}'
    messages = [payload(i) for i in range(ctx.n)]

    async def on_message(msg: Msg) -> None:
        seen.hit(json.loads(msg.data)['id'])
    async with connection(ctx) as publisher, connection(ctx) as subscriber:
        await subscriber.subscribe(subject, cb=on_message)
        await subscriber.flush()
        while seen.warm == 0:
            await publisher.publish(subject, json.dumps(payload(-1)).encode())
            with contextlib.suppress(Exception):
                await seen.wait_for(lambda: seen.warm > 0, 0.2, 'warm-up signal')
        started = time.perf_counter()
        for message in messages:
            await publisher.publish(subject, json.dumps(message).encode())
        sent = time.perf_counter()
        await seen.quiet(ctx.timeout, idle=2.0)
    return signal_figures(seen, started, sent, ctx.n)


async def rpc(ctx: Ctx) -> dict[str, Any]:
    """C: request/reply round trips, caller and responder on their own connections."""
    subject = f'bench.raw.{ctx.uid}.req'

    async def answer(msg: Msg) -> None:
        request = json.loads(msg.data)
        await msg.respond(json.dumps({'v': request['a']['id']}).encode())
    async with connection(ctx) as caller, connection(ctx) as responder:
        await responder.subscribe(subject, cb=answer)
        await responder.flush()

        async def call(i: int, timeout: float) -> Any:
            try:
                reply = await caller.request(subject, json.dumps({'a': payload(i)}).encode(), timeout=timeout)
            except nats.errors.TimeoutError:
                raise TimeoutError from None
            return json.loads(reply.data)['v']
        return await round_trips(ctx, call)


async def run(ctx: Ctx, scenario: str) -> dict[str, Any]:
    """Run raw *scenario* (A, A2, B or C) with nats-py."""
    scenarios = {'A': lambda: queue_e2e(ctx, pipelined=False), 'A2': lambda: queue_e2e(ctx, pipelined=True),
                 'B': lambda: signals(ctx), 'C': lambda: rpc(ctx)}
    if scenario not in scenarios:
        raise ValueError(f'no raw nats scenario {scenario!r}')
    result: dict[str, Any] = await scenarios[scenario]()
    return result


async def cleanup(dsn: str, marker: str) -> int:
    """Delete every stream of this run (names containing *marker*); how many."""
    client = await asyncio.wait_for(nats.connect(dsn, connect_timeout=5), IO_TIMEOUT)
    deleted = 0
    try:
        js = client.jetstream(timeout=IO_TIMEOUT)
        for name in await js.streams_info():
            if marker in (name.config.name or ''):
                await js.delete_stream(name.config.name or '')
                deleted += 1
    finally:
        await client.close()
    return deleted
