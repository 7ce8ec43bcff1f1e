"""The broker's own limit for the scale benchmark: the raw client writing confirmed messages on many connections.

Each connection pipelines ``window`` messages and awaits their confirmations
before the next window, with the guarantees the library asks for: AMQP
persistent publishes to a durable queue with publisher confirms, Kafka
``acks='all'`` to a topic of :data:`PARTITIONS` partitions, NATS JetStream
publishes (file storage, a ``Nats-Msg-Id`` each) awaiting their PubAcks. (Redis
has its own tool, ``redis-benchmark``: :mod:`benchmarks.scale`.)

>>> async with writer('nats', 'nats://127.0.0.1:4222', 'bench_scale_x', connections=8) as write:  # doctest: +SKIP
...     await write(10_000)     # connected before: only the writes are timed
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .library import chunks
from .settings import payload

__all__ = ['PARTITIONS', 'writer']

PARTITIONS = 4          # Kafka: partitions of the queue's topic, so 4 consumer processes all get one
WINDOW = 256            # messages in flight per connection
IO_TIMEOUT = 30.0

Send = Callable[[int], Awaitable[Any]]


@contextlib.asynccontextmanager
async def writer(backend: str, dsn: str, name: str, *, connections: int,
                 window: int = WINDOW) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Open *connections* connections to *name*; yields ``write(n)``: messages ``0..n-1``, each confirmed."""
    opener = {'amqp': _amqp, 'kafka': _kafka, 'nats': _nats}[backend]
    async with contextlib.AsyncExitStack() as stack:
        senders = [await stack.enter_async_context(opener(dsn, name)) for _ in range(connections)]

        async def write(n: int) -> None:
            shares = [range(i, n, connections) for i in range(connections)]
            await asyncio.gather(*(_pipelined(send, share, window)
                                   for send, share in zip(senders, shares, strict=True)))
        yield write


async def _pipelined(send: Send, share: range, window: int) -> None:
    items = list(share)
    for part in chunks(len(items), window):
        await asyncio.wait_for(asyncio.gather(*(send(items[i]) for i in part)), IO_TIMEOUT)


def _body(i: int) -> bytes:
    return json.dumps(payload(i)).encode()


@contextlib.asynccontextmanager
async def _amqp(dsn: str, name: str) -> Any:
    import aiormq

    from .raw_amqp import persistent

    connection = await asyncio.wait_for(aiormq.connect(dsn), IO_TIMEOUT)
    try:
        channel = await connection.channel(publisher_confirms=True)
        if not isinstance(channel, aiormq.Channel):  # the concrete class: its basic_publish takes wait=
            raise TypeError(f'unexpected channel class {type(channel).__name__}')
        await channel.queue_declare(name, durable=True, timeout=IO_TIMEOUT)

        def send(i: int) -> Awaitable[Any]:
            # wait=False: the frames are queued without waiting for the socket (as the library's fast lane):
            # the window's publishes go out back to back, the confirms are what is awaited.
            return channel.basic_publish(_body(i), routing_key=name, mandatory=True, properties=persistent(str(i)),
                                         timeout=IO_TIMEOUT, wait=False)
        yield send
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _kafka(dsn: str, name: str) -> Any:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from .raw_kafka import bootstrap

    servers = bootstrap(dsn)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=int(IO_TIMEOUT * 1000))
    await asyncio.wait_for(admin.start(), IO_TIMEOUT)
    try:
        with contextlib.suppress(Exception):  # made by another connection already
            await asyncio.wait_for(admin.create_topics([NewTopic(name, PARTITIONS, 1)]), IO_TIMEOUT)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks='all', request_timeout_ms=int(IO_TIMEOUT * 1000))
    await asyncio.wait_for(producer.start(), IO_TIMEOUT)
    try:
        async def send(i: int) -> Any:
            return await (await producer.send(name, _body(i)))
        yield send
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _nats(dsn: str, name: str) -> Any:
    import nats
    import nats.js.errors
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    client = await asyncio.wait_for(nats.connect(dsn, connect_timeout=5), IO_TIMEOUT)
    try:
        js = client.jetstream(timeout=IO_TIMEOUT)
        with contextlib.suppress(nats.js.errors.BadRequestError):  # made by another connection already
            await js.add_stream(StreamConfig(name=name, subjects=[f'{name}.in'], retention=RetentionPolicy.WORK_QUEUE,
                                             storage=StorageType.FILE))
        ids = itertools.count()
        prefix = f'{id(client)}.'

        async def send(i: int) -> Any:
            future = await js.publish_async(f'{name}.in', _body(i), headers={'Nats-Msg-Id': f'{prefix}{next(ids)}'})
            return await future
        yield send
    finally:
        await client.close()
