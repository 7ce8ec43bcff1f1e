"""One bound queue on Kafka: a consumer in the queue's group, commits, retries and rebalances.

A queue ``q`` reads the topics ``q`` (direct sends), ``q.retry`` (its delayed
retries) and, when bound to exchange ``ex``, the topic ``ex`` (filtered by the
queue's topic patterns), each with a reader (a consumer) of its own in the
groups ``q``, ``q.retry`` and ``q.exchange`` (:func:`reading`; ``q`` is the
consumer's ``group=`` when set): N replicas share the partitions, each
message is handled once per group.

* Offsets are committed only for settled messages, per partition, up to the
  lowest offset still in flight (:class:`PartitionOffsets`), by a commit task
  that coalesces settles into one OffsetCommit. At most ``window`` handled
  messages wait for their commit: past that, reading waits for the commit, so
  a member that dies makes the group handle again at most ``max_inflight``
  running plus ``window`` handled messages.
* A retry is a new record in ``q.retry`` with ``x-attempt`` and
  ``x-not-before`` headers (``kafka._wire``), acknowledged by the broker
  before the old offset counts as done.
  A retry record that is not due pauses only its ``q.retry`` partition until
  it is (seek back, pause, resume on a timer): ``q`` itself never waits.
* On a rebalance the revoked partitions get a bounded wait for their
  in-flight handlers, then a commit; a commit that fails because the group
  moved on is logged, never raised (the new owner re-reads from the last
  committed offset: a duplicate, never a loss).
* After the process did not run for half a session timeout (SIGSTOP, a
  blocked loop: :class:`StallWatch`), or after a commit was refused, fetched
  records are given back and nothing is handed out until the group's verdict
  (a rebalance, or none within a few heartbeats): a zombie member never
  handles the backlog that its successor now owns.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from ..._tasks import TaskSet
from ...delivery import ConsumerRunner, Delivery
from ...exceptions import BackendError, DeliveryError
from ._attempts import LOST_ATTEMPT, PartitionAttempts, Snapshot, Solo, attempts_topic
from ._client import KafkaClients, stop_consumer
from ._offsets import PartitionOffsets
from ._stall import StallWatch
from ._wire import RecordHeaders, outgoing

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

__all__ = ['KafkaQueueReader', 'dlq_topic', 'reading', 'retry_topic']

log = logging.getLogger('microagent.kafka')
FETCH_WAIT_MS = 500          # getmany wait: how soon a stopped reader notices
REVOKE_WAIT = 5.0            # how long a rebalance waits for in-flight handlers of revoked partitions
COMMIT_RETRY = 0.5


def retry_topic(queue: str) -> str:
    return f'{queue}.retry'


def dlq_topic(queue: str) -> str:
    return f'{queue}.dlq'


def reading(queue: str, exchange: str | None, group: str) -> list[tuple[list[str], str]]:
    """The (topics, consumer group) pairs that read *queue*: one consumer per topic.

    One aiokafka consumer keeps one fetch in flight per broker; a fetch for
    only idle topics (the retry topic, most of the time) is a long poll that
    some brokers (tansu) hold for ``fetch_max_wait_ms`` even when the queue's
    own topic has data by then. A consumer (and group) per topic never waits
    behind another topic's poll.

    >>> reading('mailer', 'mail', 'mailer')
    [(['mailer'], 'mailer'), (['mailer.retry'], 'mailer.retry'), (['mail'], 'mailer.exchange')]
    """
    pairs = [([queue], group), ([retry_topic(queue)], f'{group}.retry')]
    return pairs + ([([exchange], f'{group}.exchange')] if exchange else [])


class KafkaDelivery(Delivery):
    """A record of a partition; settling it lets the partition's commit position move."""

    __slots__ = ('_part', '_reader', '_record')

    def __init__(self, reader: KafkaQueueReader, part: PartitionOffsets, record: ConsumerRecord[Any, Any],
                 attempt: int, headers: RecordHeaders) -> None:
        super().__init__(record.value or b'', attempt, f'{record.topic}/{record.partition}/{record.offset}',
                         headers.message_id, headers.headers)
        self._reader = reader
        self._part = part
        self._record = record

    async def ack(self) -> None:
        self._reader.settle(self._part, self._record.offset)

    async def retry(self, delay: float, error: str) -> None:
        due = int((time.time() + delay) * 1000)
        headers = outgoing(self.message_id, self.headers, x_attempt=self.attempt + 1, x_not_before=due,
                           x_error=error[:1000])
        await self._reader.clients.produce(retry_topic(self._reader.name), self.body_bytes, headers,
                                           key=self._record.key)
        self._reader.settle(self._part, self._record.offset)

    async def dead_letter(self, error: str) -> None:
        headers = outgoing(self.message_id, self.headers, x_attempts=self.attempt, x_error=error,
                           x_source=self.copy_id)
        await self._reader.clients.produce(dlq_topic(self._reader.name), self.body_bytes, headers,
                                           key=self._record.key)
        self._reader.settle(self._part, self._record.offset)

    @property
    def offset(self) -> int:
        return int(self._record.offset)

    def raw(self) -> dict[str, Any]:
        """``kafka``: the aiokafka ``ConsumerRecord``, for handlers with a ``kafka`` parameter."""
        return {'kafka': self._record}

    async def release(self) -> None:
        self._reader.release(self._part, self._record.offset)

    @property
    def body_bytes(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else self.body.encode()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, reader: KafkaQueueReader) -> None:
        self.reader = reader

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.reader.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.reader.assigned(set(assigned))


class KafkaQueueReader:
    """The consumer of one bound queue: read loop, offset tracking, commits, deferred retries.

    Not run: needs a Kafka broker.
    >>> reader = KafkaQueueReader(clients, broker.runner('mailer'), group='mailer')   # doctest: +SKIP
    >>> await reader.start()     # topics created, group joined in the background  # doctest: +SKIP
    >>> await reader.read()      # until the runner stops                         # doctest: +SKIP
    >>> await reader.close()     # final commit, leave the group                  # doctest: +SKIP
    """

    def __init__(self, clients: KafkaClients, runner: ConsumerRunner, group: str, window: int = 0,
                 topics: list[str] | None = None, *, solo: Solo | None = None) -> None:
        self.clients = clients
        self.solo = solo or Solo()       # shared by a queue's readers: a crash suspect runs alone
        self.window = window if window > 0 else 4 * runner.max_inflight
        self._unsaved = 0                # handled messages whose offsets no successful commit covers yet
        self._saved = asyncio.Event()
        self.runner = runner
        self.queue = runner.queue
        self.name = runner.queue.name
        self.group = group
        self.topics = topics or [self.name]
        self._retries = retry_topic(self.name)
        self._notes = attempts_topic(group)
        self._books: dict[TopicPartition, asyncio.Task[PartitionAttempts]] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()
        self._parts: dict[TopicPartition, PartitionOffsets] = {}
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._rebalanced = asyncio.Event()
        self._expelled = False           # a commit was refused: the group moved on without this member
        session = clients.settings.session_timeout
        self._stall = StallWatch(limit=session / 2, interval=max(0.1, session / 10))
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks = TaskSet(f'kafka commits {self.name}')

    def __repr__(self) -> str:
        return f'<KafkaQueueReader {self.name} group={self.group} partitions={len(self._parts)}>'

    @property
    def consuming(self) -> bool:
        """Started, in its group (the first assignment came) and not fenced out of it (readiness)."""
        return self.consumer is not None and self.ready.is_set() and not self._expelled

    async def start(self) -> None:
        """Create the topics, join the group (the join completes in the background)."""
        settings = self.clients.settings
        await self.clients.ensure_topics([*self.topics, self._notes])
        consumer = AIOKafkaConsumer(**settings.consumer(self.group))
        try:
            async with asyncio.timeout(settings.request_timeout):
                await consumer.start()
            consumer.subscribe(self.topics, listener=_Listener(self))
        except BaseException:
            await stop_consumer(consumer, settings.request_timeout)
            raise
        self.consumer = consumer
        self._stall.start()
        self._tasks.spawn(self._commit_loop(), name=f'kafka commits {self.name}')

    # -- reading ---------------------------------------------------------------

    async def read(self) -> None:
        """The read loop: fetch at most the free slots, hand records to the runner."""
        consumer, runner = self.consumer, self.runner
        if consumer is None:
            return
        while runner.active:
            free = await self._room()
            if free <= 0:
                continue
            try:
                batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=free)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive a failing fetch
                log.warning('kafka %s: fetch failed (%s), retrying', self.name, type(exc).__name__)
                await asyncio.sleep(COMMIT_RETRY)  # back off a failing fetch, not synchronisation
                continue
            if self._stall.stalled():
                await self._fence(consumer, batch)
                continue
            for tp, records in batch.items():
                await self._take(tp, records)

    async def _fence(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        """After a stall or a refused commit: give *batch* back and hand nothing out until the group's verdict.

        A refused commit means the group moved on: wait for the rebalance. A
        stall may or may not have cost the membership: aiokafka's heartbeat,
        due at once after the stall, tells; a rebalance that does not begin
        within a few heartbeat intervals means the member is still in. (No
        commit is used as a probe: aiokafka sends a commit with the generation
        current when it leaves, so one delayed past a rejoin would be accepted
        and could move the group's offsets back.)
        """
        for tp, records in batch.items():
            if records and tp in self._parts:
                consumer.seek(tp, records[0].offset)
        self._rebalanced.clear()
        session = self.clients.settings.session_timeout
        try:
            async with asyncio.timeout(session if self._expelled else 3 * session / 10):
                await self._rebalanced.wait()
        except TimeoutError:
            if self._expelled:
                return  # still waiting for the rebalance: the next read fences again
            log.info('kafka %s: the process stalled; still a member of %s, reading on', self.name, self.group)
            self._stall.clear()
            return
        log.warning('kafka %s: the process stalled or was expelled from %s; rebalanced, reading the new '
                    'assignment', self.name, self.group)

    async def _room(self) -> int:
        """Records the reader may take now: free in-flight slots, within the uncommitted window.

        A full window waits until commits bring it down to half: taking one
        record per commit round trip would make every cycle a tiny one.
        """
        free = await self.runner.wait_slots()
        if self._unsaved >= self.window:
            while self._unsaved > self.window // 2 and self.runner.active:
                self._saved.clear()
                self._dirty.set()
                try:  # bounded: the loop re-checks that the runner is still active
                    async with asyncio.timeout(FETCH_WAIT_MS / 1000):
                        await self._saved.wait()
                except TimeoutError:
                    pass
            return 0
        # Taken and not settled yet (running, or prefetched in the runner) counts against the window too.
        room = self.window - self._unsaved - sum(part.busy for part in self._parts.values())
        if room <= 0:
            self._changed.clear()
            try:  # until one of them settles; bounded: the loop re-checks that the runner is still active
                async with asyncio.timeout(FETCH_WAIT_MS / 1000):
                    await self._changed.wait()
            except TimeoutError:
                pass
            return 0
        return min(free, room)

    async def _take(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        part = self._parts.get(tp)
        if part is None:  # revoked between the fetch and now: the new owner reads it
            return
        book = part.attempts = await self._book(tp)
        retries, exchange = tp.topic == self._retries, tp.topic == self.queue.exchange
        for record in records:
            if self._parts.get(tp) is not part or not self.runner.active:
                return  # revoked or stopping meanwhile: what was not started is read again
            headers = RecordHeaders(record.headers)
            attempt = 1
            if retries:
                now_ms = time.time() * 1000
                due = headers.number('x-not-before', 0)
                if due > now_ms:
                    self._defer(tp, part, record.offset, (due - now_ms) / 1000)
                    return
                attempt = max(1, headers.number('x-attempt', 2))
            if exchange and not self.queue.accepts(headers.text('x-topic') or None):
                part.take(record.offset, handled=False)
                self._settled(part.settle(record.offset, handled=False))
                continue
            if not await self._start(tp, part, book, record, attempt=attempt, headers=headers):
                self._seek(tp, record.offset)
                await asyncio.sleep(COMMIT_RETRY)  # back off a failing note, not synchronisation
                return

    async def _start(self, tp: TopicPartition, part: PartitionOffsets, book: PartitionAttempts,
                     record: ConsumerRecord[Any, Any], *, attempt: int, headers: RecordHeaders) -> bool:
        """Note the start, then hand *record* to the runner; False when the note could not be written."""
        offset = record.offset
        crashes = book.prior(offset)
        if crashes and attempt + crashes > self.runner.max_attempts:
            await self._crashed(part, book, KafkaDelivery(self, part, record, attempt + crashes - 1, headers))
            return True
        if crashes:
            return await self._alone(tp, part, book, KafkaDelivery(self, part, record, attempt + crashes, headers),
                                     crashes + 1)
        await self.solo.wait()
        if book.needs_note(offset) and not await self._note(tp, book.note(offset, self.runner.max_inflight)):
            return False
        book.start(offset, 1)
        part.take(offset)
        self.runner.submit(KafkaDelivery(self, part, record, attempt, headers))
        return True

    async def _alone(self, tp: TopicPartition, part: PartitionOffsets, book: PartitionAttempts,
                     delivery: KafkaDelivery, count: int) -> bool:
        """A record that was running when a process died runs with no other handler of the queue: if it
        kills this process too, the note names only it."""
        offset = delivery.offset
        async with self.solo.hold():
            await self.runner.wait_idle()
            if not self.runner.active:
                return True  # stopping: not started, so read again by whoever reads next
            if not await self._note(tp, book.alone(offset, count)):
                book.release(offset)
                return False
            part.take(offset)
            self.runner.submit(delivery)
            while offset in book.started and self.runner.active and not part.revoked:
                self._changed.clear()
                await self._changed.wait()
        return True

    async def _crashed(self, part: PartitionOffsets, book: PartitionAttempts, delivery: KafkaDelivery) -> None:
        log.error('kafka %s: message %s was started %d times without being settled (its consumer died), '
                  'dead-lettering', self.name, delivery.message_id, delivery.attempt)
        self.runner.stats.dead_lettered += 1
        part.take(delivery.offset)
        book.start(delivery.offset, book.prior(delivery.offset) + 1)
        try:
            await delivery.dead_letter(LOST_ATTEMPT)
        except (DeliveryError, BackendError) as exc:
            log.warning('kafka %s: cannot dead-letter %s (%s); it is read again later', self.name,
                        delivery.message_id, exc)
            await delivery.release()

    async def _book(self, tp: TopicPartition) -> PartitionAttempts:
        """The partition's crash counts, read from the last note when it was assigned."""
        task = self._books.get(tp)
        if task is None:
            task = self._books[tp] = self._tasks.spawn(self._load(tp), name=f'kafka attempts {tp}')
        return await asyncio.shield(task)

    async def _load(self, tp: TopicPartition) -> PartitionAttempts:
        consumer = self.consumer
        try:
            # Bounded by the session, not the request timeout: the partition waits for this (a blackhole).
            async with asyncio.timeout(self.clients.settings.session_timeout):
                committed = (await consumer.committed(tp) if consumer is not None else None) or 0
                raw = await self.clients.last_record(self._notes, tp.partition, _note_key(tp))
        except Exception as exc:  # noqa: BLE001 - without the note, crashes before this one are not counted
            log.warning('kafka %s: cannot read the attempt note of %s (%s); earlier crashes are not counted',
                        self.name, tp, type(exc).__name__)
            return PartitionAttempts(Snapshot(), 0)
        return PartitionAttempts(Snapshot.decode(raw), committed)

    async def _note(self, tp: TopicPartition, snapshot: Snapshot) -> bool:
        try:
            await self.clients.write_note(self._notes, tp.partition, _note_key(tp), snapshot.encode())
        except (DeliveryError, BackendError) as exc:
            log.warning('kafka %s: cannot note the attempts of %s (%s); handlers wait', self.name, tp, exc)
            return False
        return True

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        if self.consumer is not None and tp in self._parts:
            self.consumer.seek(tp, offset)

    def _defer(self, tp: TopicPartition, part: PartitionOffsets, offset: int, delay: float) -> None:
        """Hold a not-yet-due retry partition at *offset* until *delay* has passed."""
        if self.consumer is None:
            return
        consumer: AIOKafkaConsumer = self.consumer
        consumer.seek(tp, offset)
        consumer.pause(tp)
        handle: asyncio.TimerHandle

        def due() -> None:
            self._timers.discard(handle)
            current = self.consumer
            if self._parts.get(tp) is part and current is not None and current is consumer:
                try:
                    current.resume(tp)
                except Exception as exc:  # noqa: BLE001 - unassigned meanwhile: the new owner resumes
                    log.debug('kafka %s: cannot resume %s: %s', self.name, tp, type(exc).__name__)
        handle = asyncio.get_running_loop().call_later(max(0.0, delay), due)
        self._timers.add(handle)

    # -- settling and committing ----------------------------------------------

    def settle(self, part: PartitionOffsets, offset: int) -> None:
        # The book forgets the offset even on a revoked partition: a suspect running alone waits for that.
        if part.attempts is not None:
            part.attempts.settle(offset)
        if not part.revoked:
            self._unsaved += 1
        self._settled(part.settle(offset))

    def release(self, part: PartitionOffsets, offset: int) -> None:
        if part.attempts is not None:
            part.attempts.release(offset)
        part.release()
        self._changed.set()

    def _settled(self, moved: bool) -> None:
        self._changed.set()
        if moved:
            self._dirty.set()

    async def _commit_loop(self) -> None:
        """Commit settled positions as they move, one OffsetCommit for many settles."""
        while True:
            await self._dirty.wait()
            # One turn of the loop lets handlers that finished together settle first: one commit for all.
            await asyncio.sleep(0)
            self._dirty.clear()
            if not await self.commit():
                await asyncio.sleep(COMMIT_RETRY)  # back off a failing commit before the next try
                self._dirty.set()

    async def commit(self, only: set[TopicPartition] | None = None) -> bool:
        """Commit the dirty positions (of *only*); False when the commit failed and should be retried."""
        consumer = self.consumer
        chosen = {tp: part for tp, part in self._parts.items() if part.dirty and (only is None or tp in only)}
        if consumer is None or not chosen:
            return True
        offsets = {tp: part.position for tp, part in chosen.items()}
        covered = self._unsaved if only is None else 0
        try:
            async with asyncio.timeout(self.clients.settings.request_timeout):
                await consumer.commit(offsets)
        except CommitFailedError:
            # The group moved on without us: hand nothing more out until the rebalance (see _fence).
            log.warning('kafka %s: commit refused, this member is no longer in the group %s', self.name, self.group)
            self._expelled = True
            self._stall.mark()
            return False
        except (KafkaError, OSError, TimeoutError) as exc:
            # Retried by the commit loop; never raised: unsettled offsets are re-read, never lost.
            log.warning('kafka %s: commit of %d partition(s) failed: %s', self.name, len(offsets),
                        type(exc).__name__)
            return False
        for tp, part in chosen.items():
            part.committed = offsets[tp]
        self._unsaved = max(0, self._unsaved - covered)
        self._saved.set()
        return True

    # -- rebalances ------------------------------------------------------------

    def assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._parts[tp] = PartitionOffsets()
            # The last owner's note is read now, before the first fetch of the partition is handed out.
            self._books.pop(tp, None)
            self._books[tp] = self._tasks.spawn(self._load(tp), name=f'kafka attempts {tp}')
        # A new generation reads from the committed offsets: whatever a stall left in the buffer is gone,
        # and what was handled but not committed is the new owners' to handle again.
        self._stall.clear()
        self._expelled = False
        self._unsaved = 0
        self._saved.set()
        self._rebalanced.set()
        self.ready.set()

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        mine = {tp for tp in revoked if tp in self._parts}
        try:
            async with asyncio.timeout(REVOKE_WAIT):
                while any(self._parts[tp].busy > 0 for tp in mine):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.warning('kafka %s: rebalance while handlers still run; they may run again elsewhere', self.name)
        if await self.commit(mine):  # a broker that refuses the commit would not take the notes either
            await self._clean(mine)
        for tp in mine:
            self._parts.pop(tp).revoked = True
            self._books.pop(tp, None)
        self._changed.set()  # a suspect running alone on a revoked partition stops holding the queue

    async def _clean(self, partitions: set[TopicPartition]) -> None:
        """Leaving partitions cleanly: their notes count only what still runs (and the suspects)."""
        for tp in partitions:
            part = self._parts.get(tp)
            if part is not None and part.attempts is not None and part.attempts.noted:
                await self._note(tp, part.attempts.clean())

    async def close(self) -> None:
        """Final commit of what settled, then leave the group."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._stall.close()
        await self._tasks.cancel()
        consumer, settings = self.consumer, self.clients.settings
        if consumer is None:
            return
        if await self.commit():
            await self._clean(set(self._parts))
        self.consumer = None
        await stop_consumer(consumer, settings.request_timeout)


def _note_key(tp: TopicPartition) -> bytes:
    return f'{tp.topic}/{tp.partition}'.encode()
