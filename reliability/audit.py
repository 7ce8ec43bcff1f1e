"""After a run with losses: are the lost messages in the Kafka log at all (a consumer bug) or not (a store bug)?

>>> await kafka_log_ids('127.0.0.1:9092', 'rel_kafka_ab12')   # doctest: +SKIP
{'m0', 'm1', ...}
"""
from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ['kafka_log_ids']


async def kafka_log_ids(bootstrap: str, topic: str, timeout: float = 30.0) -> set[str]:
    """The ``mid`` of every record in *topic*, read from the start without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                request_timeout_ms=10_000, fetch_max_wait_ms=100)
    found: set[str] = set()
    async with asyncio.timeout(timeout):
        await consumer.start()
        try:
            await consumer.topics()  # fetches the metadata partitions_for_topic reads
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while await _behind(consumer, ends):
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    break
                for records in batch.values():
                    found.update(_mid(r.value) for r in records)
        finally:
            await consumer.stop()
    return found - {''}


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def _mid(value: bytes | None) -> str:
    try:
        return str(json.loads(value or b'{}').get('mid', ''))
    except (ValueError, AttributeError):
        return ''
