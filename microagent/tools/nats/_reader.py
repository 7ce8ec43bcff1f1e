"""Reading one queue's durable pull consumer: pull requests sized by free slots, settling, crash count.

The reader keeps pull requests open on a private inbox for as many messages
as its runner has free slots (``credit`` counts what was asked for and not
yet received). Each message goes to the runner the moment it arrives; when
handlers finish and enough slots are free, one more request asks for them.
Requests expire after ``pull_expires`` seconds (the server says how many of
its messages it did not send) and carry idle heartbeats: a request that
falls silent (its server restarted) is forgotten after ``2 x pull_heartbeat +
1`` seconds, and a reconnect forgets them all at once. A message that still
arrives for a forgotten request waits in a small backlog for a free slot.

While a message is being handled, the reader tells the server so
(``in_progress``) every ``ack_wait / 3``: a slow handler never loses its
message to another consumer; a dead one does, after ``ack_wait``.

Attempts: the message's JetStream delivery count (plus the attempts made
before it was copied at a shutdown, header ``x-attempt``). A
message whose handler killed its process comes back counted; past
``max_attempts`` it goes to the dead letters before any handler sees it, so a
crash loop ends there.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..._tasks import TaskSet
from ...delivery import Delivery
from ._topology import ATTEMPT_BASE, MESSAGE_ID, consumer_config, queue_config, received_headers

if TYPE_CHECKING:
    from ...delivery import ConsumerRunner
    from ._broker import NATSBroker

__all__ = ['LOST_ATTEMPT', 'NATSDelivery', 'NATSQueueReader']

LOST_ATTEMPT = 'delivered again after an attempt that never settled (its consumer died or lost its connection)'
_ACK_PREFIX = '$JS.ACK.'
_GONE = ('Consumer Deleted', 'Consumer is push based')

log = logging.getLogger('microagent.nats')


class NATSQueueReader:
    """Reads one queue for one broker; see the module docstring.

    Not run: needs a NATS server.
    >>> reader = NATSQueueReader(broker, 'mailer', runner)   # doctest: +SKIP
    >>> await reader.start(); broker._start_reader('mailer', reader.run())   # doctest: +SKIP
    """

    def __init__(self, broker: NATSBroker, name: str, runner: ConsumerRunner) -> None:
        self.broker = broker
        self.name = name
        self.runner = runner
        self.stream = broker.names.stream(name)
        self.credit = 0
        self.backlog: collections.deque[NATSDelivery] = collections.deque()
        self.inflight: dict[int, NATSDelivery] = {}
        self.changed = asyncio.Event()
        self.heard = time.monotonic()
        self.threshold = max(1, runner.max_inflight // 4)
        self.setup_needed = False
        self.tasks = TaskSet(f'NATS queue {name} settles')
        self._sub: Subscription | None = None
        self._inbox = ''
        self._next = f'$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}'

    async def prepare(self) -> None:
        """Make sure the stream and the durable consumer exist (BackendError at once if they cannot be made)."""
        broker = self.broker
        await broker.ensure(queue_config(broker.names, self.name, broker.replicas))
        js = await broker.nats.jetstream()
        config = consumer_config(broker.names, self.name, ack_wait=broker.ack_wait,
                                 max_ack_pending=broker.max_ack_pending)
        try:
            await js.add_consumer(self.stream, config)
        except nats.js.errors.BadRequestError:
            # It exists with other settings (another replica's, an older version's): use it as it is.
            info = await js.consumer_info(self.stream, self.name)
            broker.log.debug('NATSBroker: consumer %s exists (ack_wait %ss); used as it is', self.name,
                             info.config.ack_wait)
        self.setup_needed = False

    async def start(self) -> None:
        """Prepare the consumer and subscribe the private inbox its messages arrive on."""
        await self.prepare()
        client = await self.broker.nats.client()
        self._inbox = client.new_inbox()
        self._sub = await client.subscribe(self._inbox, cb=self._on_message)
        self.broker.nats.listeners.append(self._on_reconnect)

    async def run(self) -> None:
        """The reader task: keep pull requests open for the free slots until the runner stops."""
        heartbeat = self.broker.pull_heartbeat
        while self.runner.active:
            try:
                await self._top_up()
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                self.broker.log.warning('NATSBroker: queue %s: %s; trying again', self.name,
                                        self.broker.nats.describe(exc))
                self.setup_needed = True
            self.changed.clear()
            try:
                async with asyncio.timeout(heartbeat):
                    await self.changed.wait()
            except TimeoutError:
                if self.credit and time.monotonic() - self.heard > 2 * heartbeat + 1:
                    self.credit = 0  # its requests died with the server they were made on

    async def _top_up(self) -> None:
        if self.setup_needed:
            await self.prepare()
        self._feed()
        want = self.runner.free_slots - self.credit - len(self.backlog)
        if want <= 0 or (self.credit and want < self.threshold):
            return
        client = await self.broker.nats.client()
        request = {'batch': want, 'expires': int(self.broker.pull_expires * 1e9),
                   'idle_heartbeat': int(self.broker.pull_heartbeat * 1e9)}
        if not self.credit:
            self.heard = time.monotonic()
        self.credit += want
        await client.publish(self._next, json.dumps(request).encode(), reply=self._inbox)

    def _feed(self) -> None:
        while self.backlog and self.runner.free_slots > 0 and self.runner.active:
            self._submit(self.backlog.popleft())

    def _submit(self, delivery: NATSDelivery) -> None:
        self.inflight[id(delivery)] = delivery
        self.runner.submit(delivery)

    async def _on_message(self, msg: Msg) -> None:
        self.heard = time.monotonic()
        if not msg.reply or not msg.reply.startswith(_ACK_PREFIX):
            self._on_status(msg)
            return
        self.credit = max(0, self.credit - 1)
        delivery = NATSDelivery(self, msg)
        if delivery.attempt > self.runner.max_attempts:
            self.tasks.spawn(self._crashed(delivery), name=f'NATS dead-letter {self.name}')
            self.changed.set()
        elif not self.runner.active:
            self.tasks.spawn(_quiet(delivery.release()), name=f'NATS release {self.name}')
        elif self.runner.free_slots > 0 and not self.backlog:
            self._submit(delivery)
        else:
            self.backlog.append(delivery)

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get('Status', '')
        if status == '100':
            return  # an idle heartbeat: the request is alive
        pending = headers.get('Nats-Pending-Messages')
        if status in ('404', '408', '409') and pending is not None and pending.isdigit():
            self.credit = max(0, self.credit - int(pending))
        else:
            self.credit = 0  # the request ended without saying how much of it: ask again
        if status == '503' or any(gone in str(headers.get('Description', '')) for gone in _GONE):
            self.setup_needed = True
        if status not in ('404', '408'):
            self.broker.log.debug('NATSBroker: queue %s: pull request ended: %s %s', self.name, status,
                                  headers.get('Description', ''))
        self.changed.set()

    def _on_reconnect(self) -> None:
        # Requests made on the old connection may be gone with it (a restarted server forgets them).
        self.credit = 0
        self.changed.set()

    async def _crashed(self, delivery: NATSDelivery) -> None:
        self.broker.log.error('NATSBroker: queue %s: message %s delivered %d times without being settled, '
                              'dead-lettering', self.name, delivery.message_id, delivery.attempt - 1)
        self.runner.stats.dead_lettered += 1
        await _quiet(delivery.dead_letter(LOST_ATTEMPT))

    def forget(self, delivery: NATSDelivery) -> None:
        """*delivery* is being settled: its slot frees up, the reader may ask for more."""
        self.inflight.pop(id(delivery), None)
        self.changed.set()

    async def keep_alive(self) -> None:
        """Tell the server every ``ack_wait / 3`` that messages held for longer are still being worked on."""
        interval = self.broker.ack_wait / 3
        while True:
            await asyncio.sleep(interval)  # the renewal period, not a synchronisation
            now = time.monotonic()
            for delivery in [*self.inflight.values(), *self.backlog]:
                if now - delivery.received >= interval:
                    await _quiet(delivery.msg.in_progress())

    async def close(self) -> None:
        """Give back what waits in the backlog, let settles finish, stop listening."""
        if self._on_reconnect in self.broker.nats.listeners:
            self.broker.nats.listeners.remove(self._on_reconnect)
        while self.backlog:
            await _quiet(self.backlog.popleft().release())
        await self.tasks.drain(5)
        sub, self._sub = self._sub, None
        if sub is not None:
            await _quiet(sub.unsubscribe())


async def _quiet(action: Any) -> None:
    try:
        await action
    except Exception as exc:  # noqa: BLE001 - unsettled means redelivered after ack_wait: never lost
        log.debug('NATS: settling failed (the message comes again): %s', type(exc).__name__)


class NATSDelivery(Delivery):
    """One message of a queue's pull consumer."""

    __slots__ = ('msg', 'reader', 'received')

    def __init__(self, reader: NATSQueueReader, msg: Msg) -> None:
        meta = msg.metadata
        raw = msg.headers or {}
        base = raw.get(ATTEMPT_BASE, '0')
        attempt = (int(base) if base.isdigit() else 0) + meta.num_delivered
        super().__init__(msg.data, attempt, str(meta.sequence.stream), raw.get(MESSAGE_ID, ''),
                         received_headers(raw))
        self.reader = reader
        self.msg = msg
        self.received = time.monotonic()

    async def ack(self) -> None:
        self.reader.forget(self)
        await self.msg.ack()

    async def retry(self, delay: float, error: str) -> None:
        # The same stored message comes back after *delay*, its delivery count one higher.
        self.reader.forget(self)
        await self.msg.nak(delay=max(0.0, delay))

    async def dead_letter(self, error: str) -> None:
        reader = self.reader
        await reader.broker.publish_dead_letter(reader.name, self._data(), self._own(), error, self.attempt)
        reader.forget(self)
        await self.msg.ack()

    async def release(self) -> None:
        # A nak would count an attempt: a copy that keeps the count goes to the back of the queue instead.
        reader = self.reader
        await reader.broker.publish_copy(reader.name, self._data(), self._own(), self.attempt - 1)
        reader.forget(self)
        await self.msg.ack()

    def _own(self) -> dict[str, str]:
        # What a copy of this message keeps: its id and the caller's headers.
        return {**self.headers, MESSAGE_ID: self.message_id}

    def _data(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else self.body.encode()

