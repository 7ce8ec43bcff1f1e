"""After a run with losses: where are the unhandled messages in the Kafka log?

* not in the log: the broker confirmed them and did not store them;
* before the group's committed offset: the group committed past messages
  nobody handled, a real loss (a consumer bug);
* at or after the committed offset: not lost, the group still owes them (a
  group that can consume will handle them; see docs/reliability.md for a
  broker whose group coordinator got stuck).

>>> await kafka_unhandled('127.0.0.1:9092', 'rel_kafka_ab12', 'rel_kafka_ab12', {'m7'})   # doctest: +SKIP
{'missing': [], 'passed': [], 'owed': ['m7']}
"""
from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ['kafka_unhandled']


async def kafka_unhandled(bootstrap: str, topic: str, group: str, ids: set[str],
                          timeout: float = 30.0) -> dict[str, list[str]]:
    """Sort unhandled message ids into missing from the log, passed by the group's commit, or still owed."""
    positions = await _log_positions(bootstrap, topic, timeout)
    committed = await _committed(bootstrap, group, {tp for tp, _ in positions.values()}, timeout)
    verdict: dict[str, list[str]] = {'missing': [], 'passed': [], 'owed': []}
    for mid in sorted(ids):
        where = positions.get(mid)
        if where is None:
            verdict['missing'].append(mid)
        else:
            tp, offset = where
            verdict['passed' if offset < committed.get(tp, 0) else 'owed'].append(mid)
    return verdict


async def _committed(bootstrap: str, group: str, tps: set[TopicPartition], timeout: float) -> dict[TopicPartition, int]:
    """The group's committed offsets, read without joining it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                request_timeout_ms=10_000)
    found: dict[TopicPartition, int] = {}
    async with asyncio.timeout(timeout):
        await consumer.start()
        try:
            for tp in tps:
                offset = await consumer.committed(tp)
                found[tp] = -1 if offset is None else offset
        finally:
            await consumer.stop()
    return found


async def _log_positions(bootstrap: str, topic: str, timeout: float) -> dict[str, tuple[TopicPartition, int]]:
    """Where each ``mid`` of *topic* is stored (partition, offset), read from the start without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                request_timeout_ms=10_000, fetch_max_wait_ms=100)
    found: dict[str, tuple[TopicPartition, int]] = {}
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
                for tp, records in batch.items():
                    found.update((_mid(r.value), (tp, r.offset)) for r in records)
        finally:
            await consumer.stop()
    found.pop('', None)
    return found


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def _mid(value: bytes | None) -> str:
    try:
        return str(json.loads(value or b'{}').get('mid', ''))
    except (ValueError, AttributeError, RecursionError):  # the suite's 100 000-deep message
        return ''
