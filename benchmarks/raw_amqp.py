"""The raw side on RabbitMQ: aiormq doing each scenario the fastest honest way.

Same guarantees as the library's broker: a durable queue, persistent messages
(delivery_mode 2), ``mandatory`` publishes with publisher confirms, and a
consumer on its own connection with manual acks and prefetch 32 (the
library's default in-flight limit). Same work as the library's: the clock
starts with the same dicts, each encoded to JSON as it is sent, with
properties of its own (a message id per publish), and publishes and acks do
not wait for the socket drain (``wait=False``; the confirm comes after the
write anyway), as the library's do.

* A: one publish at a time, each awaiting its confirm.
* A2: the pipelined confirm window: ``batch`` publishes in flight, then all
  their confirms awaited.
* B: fire-and-forget publishes (no confirms: signals are at most once) to a
  topic exchange; an exclusive queue consumed with ``no_ack``.
* C: request/reply: requests through a topic exchange, replies to the
  caller's exclusive queue through the default exchange.

>>> result = await run(ctx, 'A')   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage

from .library import Ctx, chunks
from .measure import Seen, end_to_end, rate
from .raw_redis import round_trips
from .settings import WARMUP, payload

__all__ = ['cleanup', 'run']

PREFETCH = 32
IO_TIMEOUT = 10.0


def persistent(message_id: str) -> aiormq.spec.Basic.Properties:
    # One object per publish: aiormq writes a generated message id into the properties
    # it gets, so a shared object would give every message the first one's id.
    return aiormq.spec.Basic.Properties(delivery_mode=2, message_id=message_id)


@asynccontextmanager
async def connection(ctx: Ctx) -> AsyncIterator[aiormq.abc.AbstractConnection]:
    conn = await asyncio.wait_for(aiormq.connect(ctx.dsn), IO_TIMEOUT)
    try:
        yield conn
    finally:
        await conn.close()


async def consume_counting(channel: aiormq.abc.AbstractChannel, queue: str, seen: Seen, *, ack: bool) -> None:
    async def on_message(message: DeliveredMessage) -> None:
        seen.hit(json.loads(message.body)['id'])
        if ack:
            await message.channel.basic_ack(int(message.delivery_tag or 0), wait=False)
    await channel.basic_qos(prefetch_count=PREFETCH, timeout=IO_TIMEOUT)
    await channel.basic_consume(queue, on_message, no_ack=not ack, timeout=IO_TIMEOUT)


async def queue_e2e(ctx: Ctx, *, pipelined: bool) -> dict[str, Any]:
    """A and A2: confirmed persistent publishes to a durable queue, acked consumer."""
    seen = Seen(ctx.n)
    queue = f'bench_raw_{ctx.uid}'
    messages = [payload(i) for i in range(ctx.n)]
    ids = itertools.count()
    async with connection(ctx) as producer_conn, connection(ctx) as consumer_conn:
        opened = await producer_conn.channel(publisher_confirms=True)
        if not isinstance(opened, aiormq.Channel):
            raise TypeError(f'unexpected channel class {type(opened).__name__}')
        channel = opened

        def publish(message: dict[str, Any]) -> Awaitable[Any]:
            return channel.basic_publish(json.dumps(message).encode(), routing_key=queue, mandatory=True,
                                         properties=persistent(str(next(ids))), timeout=IO_TIMEOUT, wait=False)
        await channel.queue_declare(queue, durable=True, timeout=IO_TIMEOUT)
        try:
            await consume_counting(await consumer_conn.channel(), queue, seen, ack=True)
            for i in range(1, WARMUP + 1):
                await publish(payload(-i))
            await seen.wait_for(lambda: seen.warm >= WARMUP, ctx.timeout, 'warm-up')
            started = time.perf_counter()
            if pipelined:
                for part in chunks(ctx.n, ctx.batch):
                    await asyncio.gather(*(publish(message) for message in messages[part.start:part.stop]))
            else:
                for message in messages:
                    await publish(message)
            sent = time.perf_counter()
            await seen.all(ctx.timeout)
        finally:
            await channel.queue_delete(queue, timeout=IO_TIMEOUT)
    return end_to_end(seen, started, sent, ctx.n)


async def subscribe(conn: aiormq.abc.AbstractConnection, exchange: str, key: str,
                    on_message: Callable[[DeliveredMessage], Coroutine[Any, Any, None]]) -> str:
    """An exclusive server-named queue bound to *exchange* with *key*, consumed without acks."""
    channel = await conn.channel()
    await channel.exchange_declare(exchange, exchange_type='topic', auto_delete=True, timeout=IO_TIMEOUT)
    declared = await channel.queue_declare('', exclusive=True, auto_delete=True, timeout=IO_TIMEOUT)
    name = str(declared.queue)
    await channel.queue_bind(name, exchange, routing_key=key, timeout=IO_TIMEOUT)
    await channel.basic_consume(name, on_message, no_ack=True, timeout=IO_TIMEOUT)
    return name


async def signals(ctx: Ctx) -> dict[str, Any]:
    """B: unconfirmed publishes to a topic exchange, one subscriber."""
    seen = Seen(ctx.n)
    exchange = f'bench_raw_{ctx.uid}'
    bodies = [json.dumps(payload(i)).encode() for i in range(ctx.n)]

    async def on_message(message: DeliveredMessage) -> None:
        seen.hit(json.loads(message.body)['id'])
    async with connection(ctx) as publisher_conn, connection(ctx) as subscriber_conn:
        await subscribe(subscriber_conn, exchange, 'signal', on_message)
        channel = await publisher_conn.channel(publisher_confirms=False)
        for i in range(1, WARMUP + 1):
            await channel.basic_publish(json.dumps(payload(-i)).encode(), exchange=exchange, routing_key='signal')
        await seen.wait_for(lambda: seen.warm >= WARMUP, ctx.timeout, 'warm-up')
        started = time.perf_counter()
        for body in bodies:
            await channel.basic_publish(body, exchange=exchange, routing_key='signal')
        sent = time.perf_counter()
        await seen.quiet(ctx.timeout, idle=2.0)
    return {'count': seen.count, 'loss': ctx.n - seen.count, 'duplicates': seen.duplicates,
            'send_rate': rate(ctx.n, sent - started), 'rate': rate(seen.count, max(seen.last, sent) - started)}


async def rpc(ctx: Ctx) -> dict[str, Any]:
    """C: request through a topic exchange, reply to the caller's exclusive queue."""
    exchange = f'bench_raw_{ctx.uid}'
    pending: dict[str, asyncio.Future[Any]] = {}
    async with connection(ctx) as caller_conn, connection(ctx) as responder_conn:
        reply_channel = await responder_conn.channel()

        async def answer(message: DeliveredMessage) -> None:
            request = json.loads(message.body)
            body = json.dumps({'c': request['c'], 'v': request['a']['id']}).encode()
            await reply_channel.basic_publish(body, routing_key=request['r'])

        async def reply(message: DeliveredMessage) -> None:
            response = json.loads(message.body)
            future = pending.pop(response['c'], None)
            if future is not None and not future.done():
                future.set_result(response['v'])
        await subscribe(responder_conn, exchange, 'request', answer)
        replies = await subscribe(caller_conn, f'{exchange}_replies', 'none', reply)
        channel = await caller_conn.channel(publisher_confirms=False)

        async def call(i: int, timeout: float) -> Any:
            corr = uuid.uuid4().hex
            future = pending[corr] = asyncio.get_running_loop().create_future()
            body = json.dumps({'c': corr, 'r': replies, 'a': payload(i)}).encode()
            await channel.basic_publish(body, exchange=exchange, routing_key='request')
            try:
                return await asyncio.wait_for(future, timeout)
            finally:
                pending.pop(corr, None)
        return await round_trips(ctx, call)


async def run(ctx: Ctx, scenario: str) -> dict[str, Any]:
    """Run raw *scenario* (A, A2, B or C) with aiormq."""
    if scenario in ('A', 'A2'):
        return await queue_e2e(ctx, pipelined=scenario == 'A2')
    if scenario == 'B':
        return await signals(ctx)
    if scenario == 'C':
        return await rpc(ctx)
    raise ValueError(f'no raw amqp scenario {scenario!r}')


async def cleanup(dsn: str, names: list[str], exchanges: list[str]) -> int:
    """Delete the queues and exchanges this run left behind; how many."""
    async with connection(Ctx('amqp', dsn, 0, '', IO_TIMEOUT, 1)) as conn:
        channel = await conn.channel()
        for name in names:
            await channel.queue_delete(name, timeout=IO_TIMEOUT)
        for name in exchanges:
            await channel.exchange_delete(name, timeout=IO_TIMEOUT)
    return len(names) + len(exchanges)
