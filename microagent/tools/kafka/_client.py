"""Kafka connections of one broker object: settings, the producer, topic creation.

One long-lived producer per broker (``acks='all'``), started lazily on first
use and shared by sends, retries and dead letters; one admin client creates
topics the first time they are used.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from ..._connect import connect_error
from ..._dsn import mask_text, split_dsn
from ...exceptions import BackendError, ConfigurationError, ConnectError, DeliveryError

__all__ = ['KafkaClients', 'KafkaSettings', 'parse_dsn']

log = logging.getLogger('microagent.kafka')
_TOPIC_EXISTS = TopicAlreadyExistsError.errno


def parse_dsn(dsn: str) -> tuple[str, dict[str, Any]]:
    """``kafka://[user:pass@]host:9092[,host2:9092]`` -> bootstrap servers and SASL options.

    >>> parse_dsn('kafka://127.0.0.1:9092,127.0.0.2:9092')
    ('127.0.0.1:9092,127.0.0.2:9092', {})
    """
    parts = split_dsn(dsn)
    if parts.scheme != 'kafka':
        raise ConfigurationError(f'KafkaBroker needs a kafka:// DSN, got {parts.scheme}://')
    if not parts.hosts:
        raise ConfigurationError('kafka DSN needs at least one host:port')
    options: dict[str, Any] = {}
    if parts.userinfo:
        options = {'sasl_plain_username': parts.user, 'sasl_plain_password': parts.password or '',
                   'sasl_mechanism': 'PLAIN', 'security_protocol': 'SASL_PLAINTEXT'}
    return ','.join(parts.hosts), options


@dataclass
class KafkaSettings:
    """What every client of one broker object shares (see ``KafkaBroker`` for the meaning).

    >>> KafkaSettings('127.0.0.1:9092').consumer('mailer')['auto_offset_reset']
    'earliest'
    """

    bootstrap: str
    security: dict[str, Any] = field(default_factory=dict)
    partitions: int = 1
    replication_factor: int = 1
    idempotent: bool | None = None
    request_timeout: float = 30.0
    session_timeout: float = 10.0
    linger_ms: int = 0
    max_batch_size: int = 256 * 1024
    fetch_max_wait_ms: int = 500
    secret: str | None = None

    def client(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client gets (servers, SASL/SSL, timeouts)."""
        return {'bootstrap_servers': self.bootstrap,
                'request_timeout_ms': int(self.request_timeout * 1000), **self.security}

    def consumer(self, group: str | None) -> dict[str, Any]:
        """Consumer arguments: manual commits, new groups read from the earliest offset."""
        session = int(self.session_timeout * 1000)
        return {**self.client(), 'group_id': group, 'enable_auto_commit': False,
                'auto_offset_reset': 'earliest', 'session_timeout_ms': session,
                'heartbeat_interval_ms': max(100, session // 10),
                'rebalance_timeout_ms': max(session, 30_000), 'max_poll_interval_ms': 3_600_000,
                'fetch_max_wait_ms': self.fetch_max_wait_ms}

    def mask(self, text: str) -> str:
        return mask_text(text, self.secret)


class KafkaClients:
    """The producer and admin client of one broker object, opened lazily, closed together.

    Not run: needs a Kafka broker.
    >>> clients = KafkaClients(KafkaSettings('127.0.0.1:9092'))     # doctest: +SKIP
    >>> await clients.produce('mailer', b'{"to": "a@b.c"}')         # doctest: +SKIP
    >>> await clients.close()                                       # doctest: +SKIP
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._topics: set[str] = set()
        self._lock = asyncio.Lock()
        self.idempotent = False
        self._refused = False  # the broker refused idempotence once: do not ask again on reopen
        self._probe: AIOKafkaConsumer | None = None  # group-less reader of attempt notes
        self._probing = asyncio.Lock()               # the probe is re-assigned by each read
        self._counts: dict[str, int] = {}            # partitions of the note topics

    # -- producing -------------------------------------------------------------

    async def producer(self) -> AIOKafkaProducer:
        """The shared producer, started on first use."""
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                self._producer = await self._start_producer()
        return self._producer

    async def _start_producer(self) -> AIOKafkaProducer:
        wanted = self.settings.idempotent
        if wanted or (wanted is None and not self._refused):
            try:
                producer = await self._try_producer(idempotent=True)
            except KafkaConnectionError:
                raise
            except KafkaError as exc:
                if wanted:
                    raise
                self._refused = True
                # Brokers without InitProducerId v0 (tansu) refuse idempotence: acks=all still holds.
                log.warning('Kafka broker refused the idempotent producer (%s); producing with acks=all '
                            'and retries but without idempotence (duplicates possible on retries)',
                            type(exc).__name__)
            else:
                self.idempotent = True
                return producer
        self.idempotent = False
        return await self._try_producer(idempotent=False)

    async def _try_producer(self, *, idempotent: bool) -> AIOKafkaProducer:
        s = self.settings
        producer = AIOKafkaProducer(**s.client(), acks='all', enable_idempotence=idempotent,
                                    linger_ms=s.linger_ms, max_batch_size=s.max_batch_size)
        try:
            async with asyncio.timeout(s.request_timeout):
                await producer.start()
        except BaseException:
            await _quietly(producer, 'stop', s.request_timeout)
            raise
        return producer

    async def produce(self, topic: str, value: bytes, headers: Sequence[tuple[str, bytes]] = (),
                      key: bytes | None = None, partition: int | None = None) -> None:
        """Write one record and wait until the broker acknowledged it (acks=all)."""
        try:
            if topic not in self._topics:
                await self.ensure_topics([topic])
            producer = self._producer or await self.producer()
            async with asyncio.timeout(self.settings.request_timeout):
                await (await producer.send(topic, value, key=key, headers=list(headers) or None,
                                           partition=partition))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise await self._send_failed(topic, exc) from None

    async def produce_many(self, topic: str, records: Iterable[tuple[bytes, Sequence[tuple[str, bytes]]]],
                           key: bytes | None = None) -> None:
        """Enqueue every record (value, headers) (they batch), then wait for every acknowledgement."""
        try:
            await self.ensure_topics([topic])
            producer = await self.producer()
            async with asyncio.timeout(self.settings.request_timeout):
                futures = [await producer.send(topic, value, key=key, headers=list(headers) or None)
                           for value, headers in records]
                await asyncio.gather(*futures)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise await self._send_failed(topic, exc) from None

    async def _send_failed(self, topic: str, exc: BaseException) -> BackendError:
        fatal = await self.diagnose(exc)
        if fatal is not None:
            return fatal
        return DeliveryError(self.settings.mask(f'kafka: send to {topic!r} failed: {type(exc).__name__}: {exc}'))

    async def diagnose(self, exc: BaseException) -> ConnectError | None:
        """A ConnectError naming why *exc* (aiokafka's bare "Unable to bootstrap") happened, if it is fatal.

        aiokafka does not say why no bootstrap server answered: each one is tried
        here once (a TCP connect, 2 s at most); a refused login says so itself.
        """
        dsn = f'kafka://{self.settings.bootstrap}'
        found = connect_error('KafkaBroker', dsn, exc)
        if found is not None or not isinstance(exc, KafkaConnectionError):
            return found
        causes = [await _reach(server) for server in self.settings.bootstrap.split(',')]
        if any(cause is None for cause in causes):
            return None  # one of them answers: a passing failure, not a wrong address
        return connect_error('KafkaBroker', dsn, causes[0]) if causes[0] is not None else None

    # -- topics ----------------------------------------------------------------

    async def ensure_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create the topics not known yet (existing ones are fine)."""
        missing = [t for t in dict.fromkeys(topics) if t not in self._topics]
        if not missing:
            return
        admin = await self._admin_client()
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                response = await admin.create_topics([
                    NewTopic(t, partitions or self.partitions_for(t), self.settings.replication_factor,
                             topic_configs=_configs(t))
                    for t in missing])
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BackendError(self.settings.mask(f'kafka: cannot create topics {missing}: '
                                                  f'{type(exc).__name__}: {exc}')) from None
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_EXISTS):
                message = rest[0] if rest else ''
                raise BackendError(f'kafka: cannot create topic {topic!r}: error {code} {message}')
        self._topics.update(missing)

    async def reachable(self, timeout: float) -> bool:
        """Whether the cluster answers a metadata request within *timeout* (readiness of the consumers' link)."""
        try:
            async with asyncio.timeout(timeout):
                admin = await self._admin_client()
                await admin.describe_cluster()
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    def partitions_for(self, topic: str) -> int:
        """Partitions of a new topic: dead letters are read in order, so their topic has one."""
        return 1 if topic.endswith('.dlq') else self.settings.partitions

    async def _admin_client(self) -> AIOKafkaAdminClient:
        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(**self.settings.client())
                try:
                    async with asyncio.timeout(self.settings.request_timeout):
                        await admin.start()
                except BaseException:
                    await _quietly(admin, 'close', self.settings.request_timeout)
                    raise
                self._admin = admin
            return self._admin

    async def partitions(self, consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[Any]:
        """Every TopicPartition of *topics* as *consumer*'s (refreshed) metadata knows them."""
        from aiokafka import TopicPartition
        async with asyncio.timeout(self.settings.request_timeout):
            await consumer.topics()
        return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]

    async def write_note(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Write *value* under *key* to ``topic[partition % n]``, where :meth:`last_record` finds it."""
        try:
            count = await self._partition_count(topic)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise await self._send_failed(topic, exc) from None
        await self.produce(topic, value, key=key, partition=partition % count)

    async def _partition_count(self, topic: str) -> int:
        """Partitions of *topic*, from the producer's metadata of that one topic (not of every topic)."""
        count = self._counts.get(topic)
        if count is None:
            await self.ensure_topics([topic])
            producer = await self.producer()
            async with asyncio.timeout(self.settings.request_timeout):
                count = self._counts[topic] = len(await producer.partitions_for(topic)) or 1
        return count

    # -- reading one key's latest record -----------------------------------------

    async def last_record(self, topic: str, partition: int, key: bytes, tail: int = 32) -> bytes | None:
        """The value of the latest record with *key* among the last *tail* of ``topic[partition % n]``.

        For attempt notes (``_attempts``): each reader writes its partition's
        notes to one partition of a topic, the latest one counts.
        """
        from aiokafka import TopicPartition
        async with asyncio.timeout(self.settings.request_timeout), self._probing:
            probe = await self._probe_consumer()
            tp = TopicPartition(topic, partition % await self._partition_count(topic))
            end = (await true_ends(probe, await probe.end_offsets([tp])))[tp]
            if end <= 0:
                return None
            probe.assign([tp])
            probe.seek(tp, max(0, end - tail))
            found: bytes | None = None
            while await probe.position(tp) < end:
                batch = await probe.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, ()):
                    if record.key == key:
                        found = record.value
            return found

    async def _probe_consumer(self) -> AIOKafkaConsumer:
        if self._probe is None:
            probe = AIOKafkaConsumer(**self.settings.consumer(None))
            try:
                await probe.start()
            except BaseException:
                await _quietly(probe, 'stop', self.settings.request_timeout)
                raise
            self._probe = probe
        return self._probe

    async def close(self) -> None:
        """Stop the producer (flushing what is queued), the admin client and the probe."""
        producer, admin, probe = self._producer, self._admin, self._probe
        self._producer = self._admin = self._probe = None
        self._topics.clear()
        if probe is not None:
            await _quietly(probe, 'stop', self.settings.request_timeout)
        if producer is not None:
            await _quietly(producer, 'stop', self.settings.request_timeout)
        if admin is not None:
            await _quietly(admin, 'close', self.settings.request_timeout)


async def true_ends(probe: AIOKafkaConsumer, ends: Mapping[Any, int], timeout_ms: int = 500) -> dict[Any, int]:
    """High watermarks of *ends*' partitions, read from a fetch.

    Some Kafka-protocol brokers (tansu 0.6) answer ListOffsets(latest) with
    the base offset of the last batch + 1, which undercounts batched sends;
    the high watermark of a fetch response is right on every broker. *probe*
    is a consumer without a group; its assignment is replaced.
    """
    result = dict(ends)
    nonempty = [tp for tp, end in ends.items() if end > 0]
    if not nonempty:
        return result
    probe.assign(nonempty)
    for tp in nonempty:
        probe.seek(tp, ends[tp] - 1)
    missing = set(nonempty)
    for _ in range(4):
        batch = await probe.getmany(*missing, timeout_ms=timeout_ms)
        for tp in list(missing):
            seen = [r.offset + 1 for r in batch.get(tp, ())]
            high = probe.highwater(tp)
            if seen or high is not None:
                result[tp] = max([result[tp], *seen, high or 0])
                missing.discard(tp)
        if not missing:
            break
    return result


def _configs(topic: str) -> dict[str, str]:
    """Attempt notes (``_attempts``): only the latest record of each key matters."""
    return {'cleanup.policy': 'compact'} if topic.endswith('.attempts') else {}


def security_options(dsn_options: Mapping[str, Any], explicit: Mapping[str, Any]) -> dict[str, Any]:
    """SASL/SSL options for aiokafka: the DSN's credentials, overridden by explicit settings."""
    merged = {**dsn_options, **{k: v for k, v in explicit.items() if v is not None}}
    if 'sasl_mechanism' in merged and merged.get('security_protocol', 'PLAINTEXT') == 'PLAINTEXT':
        merged['security_protocol'] = 'SASL_SSL' if merged.get('ssl_context') else 'SASL_PLAINTEXT'
    return merged


async def _reach(server: str) -> BaseException | None:
    """What a TCP connect to ``host:port`` raises (None: it connects)."""
    host, _, port = server.strip().rpartition(':')
    try:
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_connection(host.strip('[]'), int(port))
    except (OSError, ValueError) as exc:  # TimeoutError is an OSError: a passing failure, not named
        return exc
    writer.close()
    return None


async def _quietly(client: Any, method: str, timeout: float) -> None:
    """Call ``client.<method>()`` (stop or close) under *timeout*, logging instead of raising."""
    try:
        async with asyncio.timeout(timeout):
            await getattr(client, method)()
    except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
        log.debug('kafka: %s of %s failed: %s', method, type(client).__name__, type(exc).__name__)


async def stop_consumer(consumer: AIOKafkaConsumer, timeout: float) -> None:
    """Stop *consumer* (leaving its group) without raising."""
    await _quietly(consumer, 'stop', timeout)
