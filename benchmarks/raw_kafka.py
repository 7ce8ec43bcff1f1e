"""The raw side on Kafka: aiokafka doing each scenario the fastest honest way.

Same guarantees as the library's broker: an ``acks='all'`` producer, a
consumer in a consumer group from the earliest offset, committing after the
messages were handled (once per fetched batch). The topic (one partition) is
created before the clock starts. Same work as the library's: the clock starts
with the same dicts, each encoded to JSON as it is sent.

* A: ``send_and_wait`` one message at a time.
* A2: ``batch`` sends in flight, then all their acks awaited.

Kafka has no signal bus: B and C do not apply.

>>> result = await run(ctx, 'A')   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from microagent._tasks import TaskSet

from .library import Ctx, chunks
from .measure import Seen, end_to_end
from .settings import WARMUP, payload

__all__ = ['cleanup', 'run']

IO_TIMEOUT = 30.0
FETCH = 500


def bootstrap(dsn: str) -> str:
    """``kafka://h1:9092,h2:9092`` -> ``h1:9092,h2:9092``."""
    return dsn.split('://', 1)[1].strip('/')


async def create_topic(servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=int(IO_TIMEOUT * 1000))
    await asyncio.wait_for(admin.start(), IO_TIMEOUT)
    try:
        await asyncio.wait_for(admin.create_topics([NewTopic(topic, 1, 1)]), IO_TIMEOUT)
    finally:
        await admin.close()


async def consume_counting(consumer: AIOKafkaConsumer, seen: Seen) -> None:
    while not seen.done.is_set():
        batches = await consumer.getmany(timeout_ms=500, max_records=FETCH)
        for records in batches.values():
            for record in records:
                seen.hit(json.loads(record.value)['id'])
        if batches:
            await consumer.commit()


async def queue_e2e(ctx: Ctx, *, pipelined: bool) -> dict[str, Any]:
    """A and A2: acks='all' producer, committing consumer group."""
    servers = bootstrap(ctx.dsn)
    topic = f'bench_raw_{ctx.uid}'
    seen = Seen(ctx.n)
    messages = [payload(i) for i in range(ctx.n)]  # encoded as sent, as the library does
    await create_topic(servers, topic)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks='all', request_timeout_ms=int(IO_TIMEOUT * 1000))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, group_id=topic, enable_auto_commit=False,
                                auto_offset_reset='earliest', request_timeout_ms=int(IO_TIMEOUT * 1000))
    tasks = TaskSet('raw kafka consumer')
    await asyncio.wait_for(producer.start(), IO_TIMEOUT)
    try:
        await asyncio.wait_for(consumer.start(), IO_TIMEOUT)
        tasks.spawn(consume_counting(consumer, seen))
        for i in range(1, WARMUP + 1):
            await producer.send_and_wait(topic, json.dumps(payload(-i)).encode())
        await seen.wait_for(lambda: seen.warm >= WARMUP, ctx.timeout, 'warm-up')
        started = time.perf_counter()
        if pipelined:
            for part in chunks(ctx.n, ctx.batch):
                acks = [await producer.send(topic, json.dumps(m).encode()) for m in messages[part.start:part.stop]]
                await asyncio.gather(*acks)
        else:
            for message in messages:
                await producer.send_and_wait(topic, json.dumps(message).encode())
        sent = time.perf_counter()
        await seen.all(ctx.timeout)
    finally:
        await tasks.drain(2.0)  # the reader ends by itself once all are seen: no commit cut short
        await consumer.stop()
        await producer.stop()
    return end_to_end(seen, started, sent, ctx.n)


async def run(ctx: Ctx, scenario: str) -> dict[str, Any]:
    """Run raw *scenario* (A or A2) with aiokafka."""
    if scenario in ('A', 'A2'):
        return await queue_e2e(ctx, pipelined=scenario == 'A2')
    raise ValueError(f'no raw kafka scenario {scenario!r}')


async def cleanup(dsn: str, marker: str) -> int:
    """Delete the topics of this run (names containing *marker*), where the broker allows it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(dsn), request_timeout_ms=int(IO_TIMEOUT * 1000))
    await asyncio.wait_for(admin.start(), IO_TIMEOUT)
    try:
        topics = [t for t in await asyncio.wait_for(admin.list_topics(), IO_TIMEOUT) if marker in t]
        if topics:
            with contextlib.suppress(Exception):  # tansu may not implement DeleteTopics; memory storage is thrown away
                await asyncio.wait_for(admin.delete_topics(topics), IO_TIMEOUT)
        return len(topics)
    finally:
        await admin.close()
