"""Singleton lease on Kafka: membership of a consumer group reading a one-partition topic.

Every replica joins the group ``name`` on the one-partition topic ``name``
(created if missing). The group coordinator assigns the partition to one
member: that replica holds the lease. Each renewal commits the partition's
offset, which the coordinator accepts only from a current member of the
current generation: so a renewal proves the holding on the broker.

Guarantee: each tick runs once as long as a holder that lost its membership
learns it on its next commit (within ``ttl / 3``), since its local claim
lapses at most ``ttl`` after its last accepted commit, and a fresh holder
waits ``ttl`` before acting. Takeover is slow compared with the other
backends: a dead holder is only evicted after the group's session timeout
(``session_timeout``, 6 s by default; brokers refuse less than their
``group.min.session.timeout.ms``), then the group rebalances. With periods
shorter than that, expect ``session_timeout / period`` missed ticks per
takeover. A holder that stops cleanly leaves the group at once.

Not run: needs a Kafka broker.
>>> lease = KafkaLease('kafka://localhost:9092', 'Agent.report', ttl=5)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from ...lease import Lease
from ._client import KafkaSettings, parse_dsn, security_options

__all__ = ['KafkaLease']


class KafkaLease(Lease):
    """A lease held by the group member assigned the one partition of topic *name* (own clients, lazy).

    Its clients connect like the broker's (:class:`KafkaSettings`): the DSN's
    SASL credentials, and ``security`` (aiokafka's SASL/SSL keyword arguments,
    what ``KafkaBroker.lease_options()`` hands over) on top.

    Not run: needs a Kafka broker.
    >>> lease = KafkaLease('kafka://localhost:9092', 'Agent.report', ttl=5)   # doctest: +SKIP
    >>> await lease.start()                                                   # doctest: +SKIP
    """

    def __init__(self, dsn: str, name: str, ttl: float, *, session_timeout: float = 6.0,
                 security: Mapping[str, Any] | None = None, **options: Any) -> None:
        super().__init__(dsn, name, ttl, **options)
        bootstrap, from_dsn = parse_dsn(dsn)
        merged = security_options(from_dsn, security or {})
        self.settings = KafkaSettings(bootstrap, security=merged, secret=merged.get('sasl_plain_password'))
        self.bootstrap = bootstrap
        self.session_timeout = session_timeout
        self.settle = self.ttl
        self._consumer: AIOKafkaConsumer | None = None

    async def _connect(self) -> None:
        await self._open()

    async def _open(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        timeout = max(self.session_timeout, 5.0)
        await asyncio.wait_for(self._ensure_topic(), timeout)
        session_ms = round(self.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            **self._client(), group_id=self.name, enable_auto_commit=False,
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 10),
            rebalance_timeout_ms=session_ms, max_poll_interval_ms=3_600_000)
        consumer.subscribe([self.name])
        try:
            await asyncio.wait_for(consumer.start(), timeout)
        except BaseException:
            await _stop(consumer)
            raise
        self._consumer = consumer
        return consumer

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._client())
        await admin.start()
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(self.name, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()

    def _client(self) -> dict[str, Any]:
        # The broker's client settings (servers, SASL/SSL); the lease's own id and request timeout.
        session_ms = round(self.session_timeout * 1000)
        return {**self.settings.client(), 'client_id': f'microagent-lease-{self.name}',
                'request_timeout_ms': max(session_ms + 1000, 10_000)}

    async def _attempt(self) -> bool:
        consumer = await self._open()
        assigned = list(consumer.assignment())
        if not assigned:
            return False
        # The coordinator takes a commit only from a member of the current generation.
        await consumer.commit({tp: OffsetAndMetadata(0, '') for tp in assigned})
        return True

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _stop(consumer)


async def _stop(consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(consumer.stop(), 10)
