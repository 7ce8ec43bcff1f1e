"""The Kafka queue broker: topics per queue, consumer groups, commits after processing."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from ..._message import check_headers, check_message_id, message_ids_for, new_message_id
from ...broker import AbstractQueueBroker
from ...delivery import DeadLetter
from ...exceptions import BackendError, ConfigurationError
from ._attempts import Solo
from ._client import KafkaClients, KafkaSettings, parse_dsn, security_options, stop_consumer, true_ends
from ._consumer import KafkaQueueReader, dlq_topic, reading
from ._wire import RecordHeaders, outgoing

__all__ = ['KafkaBroker']

log = logging.getLogger('microagent.kafka')


class KafkaBroker(AbstractQueueBroker):
    """Queue broker on Kafka (aiokafka), with consumer groups and at-least-once delivery.

    Options beyond the common ones: ``partitions`` (new topics, 1),
    ``replication_factor`` (new topics, 1; 3 on a Kafka cluster, with the
    topics' ``min.insync.replicas`` 2, so that a send acknowledged by all
    in-sync replicas survives the loss of a node),
    ``idempotent`` (None: when supported), ``session_timeout`` (seconds, 10),
    ``request_timeout`` (seconds, every network wait, 30), ``linger_ms`` (0),
    ``max_batch_size`` (bytes, 256 KiB), ``fetch_max_wait_ms`` (500, Kafka's
    own default: the longest an idle fetch waits; brokers that do not answer
    a long poll early, like tansu, add up to that much latency to a message
    sent to an idle consumer: lower it there), ``join_timeout`` (how long
    ``bind`` waits for the first partition assignment, 30 s), ``commit_window``
    (handled messages a consumer may hold before their offsets are committed,
    default 4 x ``max_inflight``: after a member dies, the group handles again
    at most ``max_inflight + commit_window`` of its messages), SASL/SSL settings.

    Replicas of a consumer (processes, or agents with their own broker) are
    members of one consumer group and share the topic's partitions; ``send(...,
    key=)`` puts every message of a key on one partition, so each key is
    handled in order (with ``max_inflight=1``), also through rebalances.
    ``partition_lag(name)`` is ``queue_length`` per partition.

    Not run: needs a Kafka broker.
    >>> broker = KafkaBroker('kafka://127.0.0.1:9092', partitions=3)   # doctest: +SKIP
    >>> await broker.mailer.send({'to': 'a@b.c'})                      # doctest: +SKIP
    >>> await broker.mailer.length()                                   # doctest: +SKIP
    0
    """

    send_options: ClassVar[frozenset[str]] = frozenset({'key'})
    read_ahead: ClassVar[bool] = True  # a crash counts only what ran (crash suspects run alone)

    def __init__(self, dsn: str = 'kafka://localhost:9092', *, partitions: int = 1, replication_factor: int = 1,
                 idempotent: bool | None = None, session_timeout: float = 10.0, request_timeout: float = 30.0,
                 linger_ms: int = 0, max_batch_size: int = 256 * 1024, fetch_max_wait_ms: int = 500,
                 join_timeout: float = 30.0, commit_window: int = 0,
                 security_protocol: str | None = None, sasl_mechanism: str | None = None,
                 sasl_plain_username: str | None = None, sasl_plain_password: str | None = None,
                 ssl_context: Any = None, client_options: Mapping[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(dsn, **options)
        bootstrap, from_dsn = parse_dsn(dsn)
        if partitions < 1 or replication_factor < 1 or session_timeout <= 0 or request_timeout <= 0 \
                or join_timeout < 0 or commit_window < 0:
            raise ConfigurationError('KafkaBroker: partitions >= 1, replication_factor >= 1, timeouts > 0, '
                                     'commit_window >= 0')
        security = security_options(from_dsn, {
            'security_protocol': security_protocol, 'sasl_mechanism': sasl_mechanism,
            'sasl_plain_username': sasl_plain_username, 'sasl_plain_password': sasl_plain_password,
            'ssl_context': ssl_context, **(client_options or {})})
        self.settings = KafkaSettings(
            bootstrap=bootstrap, security=security, partitions=partitions, replication_factor=replication_factor,
            idempotent=idempotent,
            request_timeout=request_timeout, session_timeout=session_timeout, linger_ms=linger_ms,
            max_batch_size=max_batch_size, fetch_max_wait_ms=fetch_max_wait_ms,
            secret=security.get('sasl_plain_password'))
        self.join_timeout = join_timeout
        self.commit_window = commit_window
        self._clients = KafkaClients(self.settings)
        self._queue_readers: dict[str, list[KafkaQueueReader]] = {}
        self._inspectors: dict[str | None, AIOKafkaConsumer] = {}
        self._inspecting = asyncio.Lock()  # the group-less probe is re-assigned by each call
        self._linked = True  # the last link probe's answer (readiness; see _watch_link)
        self._link: asyncio.Task[Any] | None = None
        self._partition_lags: dict[str, dict[str, int]] = {}

    def lease_options(self) -> dict[str, Any]:
        """The lease connects like this broker: same SASL/SSL settings."""
        return {'security': dict(self.settings.security)}

    # -- sending ---------------------------------------------------------------

    async def send(self, name: str, message: str, *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None, key: str | bytes | None = None, **options: Any) -> None:
        """Write *message* to topic *name*; returns once acknowledged by all in-sync replicas.

        ``key=`` (str or bytes) picks the partition: messages with one key keep their order.
        """
        if options:
            self.check_options('send', options)
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        await self._clients.produce(name, message.encode(), outgoing(message_id, check_headers(headers)),
                                    key=_key(key))

    async def send_many(self, name: str, messages: Sequence[str], *, headers: Mapping[str, str] | None = None,
                        message_ids: Sequence[str] | None = None, key: str | bytes | None = None,
                        **options: Any) -> None:
        """Enqueue all messages (the producer batches them), then wait for every ack."""
        if options:
            self.check_options('send_many', options)
        checked = check_headers(headers)
        records = [(m.encode(), outgoing(message_id, checked))
                   for m, message_id in zip(messages, message_ids_for(messages, message_ids), strict=True)]
        await self._clients.produce_many(name, records, key=_key(key))

    async def publish(self, exchange: str, message: str, topic: str | None = None, *,
                      headers: Mapping[str, str] | None = None, message_id: str | None = None,
                      key: str | bytes | None = None, **options: Any) -> None:
        """One record on the exchange's topic; each bound queue's group filters by *topic*."""
        if options:
            self.check_options('publish', options)
        self.catalog.route(exchange, topic)  # QueueNotFound for an undeclared exchange
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        own = {'x_topic': topic} if topic else {}
        await self._clients.produce(exchange, message.encode(), outgoing(message_id, check_headers(headers), **own),
                                    key=_key(key))

    # -- consuming -------------------------------------------------------------

    async def bind(self, name: str) -> None:
        runner = self._runners[name]
        group = str(runner.consumer.options.get('group') or name)
        solo = Solo()  # a crash suspect runs with no other handler of the queue, whichever reader has it
        readers = [KafkaQueueReader(self._clients, runner, member, self.commit_window, topics, solo=solo)
                   for topics, member in reading(name, runner.queue.exchange, group)]
        self._queue_readers[name] = readers
        try:
            for reader in readers:
                await reader.start()
        except BaseException as exc:
            self._queue_readers.pop(name, None)
            for reader in readers:
                await reader.close()
            fatal = await self._clients.diagnose(exc) if isinstance(exc, KafkaError | OSError) else None
            if fatal is None:
                raise
            raise fatal from None  # a refused login, an unknown host, nothing listening: named, at once
        self._start_reader(name, _read_all(readers))
        link = self._link
        if link is None or link.done() or link.get_loop() is not asyncio.get_running_loop():
            self._linked = True
            self._link = self._tasks.spawn(self._watch_link(), name='kafka link probe')
        try:
            # Messages sent right after start() must not race the first rebalance (retries and the
            # exchange topic are read from their earliest offset once their groups settle).
            async with asyncio.timeout(self.join_timeout):
                await readers[0].ready.wait()
        except TimeoutError:
            log.warning('kafka %s: no partition assignment after %.0fs; consuming once the group settles',
                        name, self.join_timeout)

    def consuming(self, name: str) -> bool:
        readers = self._queue_readers.get(name) or []
        return (self._linked and bool(readers) and name in self._runners
                and all(reader.consuming for reader in readers))

    async def _watch_link(self) -> None:
        """While consumers are bound, ask the cluster for metadata every half session timeout.

        aiokafka reconnects by itself and says nothing while a broker is gone (a
        fetch just returns nothing), so readiness asks: one small request a period.
        """
        period = max(0.5, self.settings.session_timeout / 2)
        while self._runners:
            self._linked = await self._clients.reachable(period)
            await asyncio.sleep(period)  # the probe period, not synchronisation

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        """Stop reading *name*, drain its handlers, commit what settled, leave the group."""
        readers = self._queue_readers.pop(name, [])
        cut = await super().unbind(name, timeout)
        for reader in readers:
            await reader.close()
        return cut

    # -- inspecting ------------------------------------------------------------

    async def queue_length(self, name: str, **options: Any) -> int:
        """The lag of the queue's groups: end offsets minus committed (or earliest) offsets."""
        return sum((await self.partition_lag(name, **options)).values())

    async def partition_lag(self, name: str, **options: Any) -> dict[str, int]:
        """The lag of the queue's groups per partition, ``{'topic/partition': lag}`` (retry topic included).

        ``group=`` reads another group's. The answer is kept for
        :meth:`partition_lengths` (the ``microagent_queue_partition_lag`` metric).

        Not run: needs a Kafka broker.
        >>> await broker.partition_lag('mailer')        # doctest: +SKIP
        {'mailer/0': 2, 'mailer/1': 0, 'mailer.retry/0': 0}
        """
        group = str(options.get('group') or self._group_of(name))
        queue = self.catalog.queues.get(name)
        lags: dict[str, int] = {}
        async with self._inspecting:
            for topics, member in reading(name, queue.exchange if queue is not None else None, group):
                lags.update(await self._lag(name, member, topics))
        self._partition_lags[name] = lags
        return lags

    def partition_lengths(self, name: str) -> dict[str, int]:
        """The per-partition lag of *name* as the last ``queue_length`` or ``partition_lag`` read it."""
        return dict(self._partition_lags.get(name, {}))

    async def _lag(self, name: str, group: str, topics: list[str]) -> dict[str, int]:
        try:
            await self._clients.ensure_topics(topics)
            inspector = await self._inspector(group)
            probe = await self._inspector(None)
            partitions = await self._clients.partitions(inspector, topics)
            async with asyncio.timeout(self.settings.request_timeout):
                ends = await true_ends(probe, await inspector.end_offsets(partitions))
                starts = await inspector.beginning_offsets(partitions)
                lags = {}
                for tp in partitions:
                    committed = await inspector.committed(tp)
                    lags[f'{tp.topic}/{tp.partition}'] = max(0, ends[tp] - (starts[tp] if committed is None
                                                                            else committed))
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BackendError(f'kafka: cannot read the lag of {name!r}: {type(exc).__name__}') from None
        return lags

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        """Up to *limit* records of ``<name>.dlq`` from the beginning (no group, nothing committed)."""
        topic = dlq_topic(name)
        await self._clients.ensure_topics([topic])
        reader = AIOKafkaConsumer(**self.settings.consumer(None))
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                await reader.start()
                records = await self._read_all(reader, topic, limit)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BackendError(f'kafka: cannot read {topic!r}: {type(exc).__name__}') from None
        finally:
            await stop_consumer(reader, self.settings.request_timeout)
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return [_dead_letter(r) for r in records[:limit]]

    async def _read_all(self, reader: AIOKafkaConsumer, topic: str, limit: int) -> list[Any]:
        partitions = await self._clients.partitions(reader, [topic])
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        records: list[Any] = []
        while len(records) < limit:
            left = [tp for tp in partitions if await reader.position(tp) < ends[tp]]
            if not left:
                break
            batch = await reader.getmany(*left, timeout_ms=1000, max_records=limit - len(records))
            for items in batch.values():
                records.extend(items)
        return records

    async def _inspector(self, group: str | None) -> AIOKafkaConsumer:
        """A consumer of *group* that never joins it (committed offsets), or a group-less probe."""
        inspector = self._inspectors.get(group)
        if inspector is None:
            inspector = AIOKafkaConsumer(**self.settings.consumer(group))
            try:
                async with asyncio.timeout(self.settings.request_timeout):
                    await inspector.start()
            except BaseException:
                await stop_consumer(inspector, self.settings.request_timeout)
                raise
            self._inspectors[group] = inspector
        return inspector

    def _group_of(self, name: str) -> str:
        readers = self._queue_readers.get(name)
        return readers[0].group if readers else name

    # -- lifecycle -------------------------------------------------------------

    @property
    def idempotent(self) -> bool:
        """Whether the running producer is idempotent (False until the first send)."""
        return self._clients.idempotent

    async def close(self) -> None:
        """Unbind every consumer (committing what settled), flush and close the producer."""
        await super().close()
        inspectors, self._inspectors = self._inspectors, {}
        for inspector in inspectors.values():
            await stop_consumer(inspector, self.settings.request_timeout)
        await self._clients.close()


async def _read_all(readers: list[KafkaQueueReader]) -> None:
    """The read loops of one queue's readers, side by side, feeding one runner."""
    async with asyncio.TaskGroup() as group:
        for reader in readers:
            group.create_task(reader.read(), name=f'kafka reader {reader.group}')


def _dead_letter(record: Any) -> DeadLetter:
    headers = RecordHeaders(record.headers)
    return DeadLetter(bytes(record.value or b'').decode('utf-8', 'replace'), headers.text('x-error'),
                      headers.number('x-attempts', 1), headers.message_id, dict(headers.headers))


def _key(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise ConfigurationError(f'kafka: key must be str or bytes, not {type(key).__name__}')
