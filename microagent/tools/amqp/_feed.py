"""The deliveries of one AMQP consumer channel on their way to the runner, and the crash count.

The lane hands each delivery to :meth:`Feed.accept` as it arrives: it goes
straight to the runner (a task of its own) when a slot is free and nothing is
queued before it; otherwise it waits in ``inbox`` for the broker's pump task.
``None`` in the inbox: the channel closed.

Crash count. RabbitMQ redelivers a message whose consumer died without
settling it, flagged ``redelivered``, and counts nothing: a message whose
handler kills its process would come back for ever. So a redelivered message
is an attempt that did not finish: before any handler sees it, it goes the
way of a failed attempt (a copy with ``attempt + 1`` after the backoff, or the
dead-letter queue after ``max_attempts``). What this process gives back on
purpose must then not come back flagged: a handler cut by a shutdown and a
message fetched but never started are republished unchanged and acked
(``AMQPDelivery.release``), not requeued. A lost connection requeues what
was in flight, flagged: that counts too (its outcome is unknown), as a
quorum queue's delivery limit would. ``autoack=False`` consumers settle
their messages themselves and see ``amqp.redelivered``; nothing is counted
for them.

On a quorum queue the broker counts: a redelivered message's attempt
already includes its lost ones (``x-delivery-count``, see ``amqp._delivery``),
so it runs at once as that attempt, and past ``max_attempts`` it is
dead-lettered before any handler sees it. No copy is written for a crash.

Not run: needs a RabbitMQ server.
>>> deliveries.consumers[tag] = Feed(broker, queue, runner).accept   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ._connection import CONNECTION_ERRORS
from ._deliveries import Incoming
from ._delivery import AMQPDelivery, ManualAckRunner, Republisher

if TYPE_CHECKING:
    import aiormq.abc

    from ...delivery import ConsumerRunner

__all__ = ['LOST_ATTEMPT', 'Feed']

LOST_ATTEMPT = 'redelivered: an earlier delivery was never settled (its process died or lost its connection)'


class Feed:
    """Deliveries of one consumer channel; see the module docstring.

    Not run: needs a RabbitMQ server.
    >>> feed = Feed(broker, 'mailer', runner)   # doctest: +SKIP
    """

    __slots__ = ('auto', 'broker', 'held', 'inbox', 'name', 'quorum', 'runner', 'tag')

    def __init__(self, broker: Republisher, name: str, runner: ConsumerRunner, *, quorum: bool = False) -> None:
        self.broker = broker
        self.name = name
        self.runner = runner
        self.auto = not isinstance(runner, ManualAckRunner)
        self.quorum = quorum  # a quorum queue: RabbitMQ counts the lost attempts
        self.inbox: asyncio.Queue[Incoming | None] = asyncio.Queue()
        # The message the pump took from the inbox and waits to submit.
        self.held: Incoming | None = None
        self.tag = ''

    def accept(self, incoming: Incoming) -> None:
        """The lane's callback: start the handler now, or queue the message for the pump."""
        runner = self.runner
        if (runner.active and runner.free_slots > 0 and self.held is None and self.inbox.empty()
                and not (incoming.redelivered and self.auto)):
            runner.submit(AMQPDelivery(self.broker, self.name, incoming, self.auto, self.quorum))
        else:
            self.inbox.put_nowait(incoming)

    async def fallback(self, message: aiormq.abc.DeliveredMessage) -> None:
        """aiormq's consumer callback, for a delivery that did not come through the lane."""
        self.accept(Incoming.of(message))

    def delivery(self, incoming: Incoming) -> AMQPDelivery:
        """*incoming* as a delivery of this feed."""
        return AMQPDelivery(self.broker, self.name, incoming, self.auto, self.quorum)

    async def count_lost_attempt(self, delivery: AMQPDelivery) -> bool:
        """A redelivered message: its last attempt never finished; retry it later or dead-letter it.

        False: run it now (a quorum queue counted the lost attempt: this is the next one).
        """
        runner = self.runner
        log = self.broker.log
        if self.quorum:
            if delivery.attempt <= runner.max_attempts:
                log.warning('%s: %s; attempt %d/%d', self.name, LOST_ATTEMPT, delivery.attempt, runner.max_attempts)
                return False
            delivery.attempt -= 1  # the attempts made: the last of them was lost
        try:
            if delivery.attempt >= runner.max_attempts:
                log.error('%s: dead-lettering %s after attempt %d/%d: %s', self.name, delivery.message_id,
                          delivery.attempt, runner.max_attempts, LOST_ATTEMPT)
                runner.stats.dead_lettered += 1
                await delivery.dead_letter(LOST_ATTEMPT)
                return True
            delay = runner.backoff(delivery.attempt)
            log.warning('%s: %s, attempt %d/%d; retry in %.2fs', self.name, LOST_ATTEMPT, delivery.attempt,
                        runner.max_attempts, delay)
            runner.stats.retried += 1
            await delivery.retry(delay, LOST_ATTEMPT)
        except Exception as exc:  # noqa: BLE001 - unsettled: the broker redelivers it, flagged, later
            log.warning('%s: cannot move redelivered %s (%s); the broker will redeliver it', self.name,
                        delivery.message_id, type(exc).__name__)
        return True

    async def give_back(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Unbinding: stop the deliveries, then give back unflagged what never reached a handler.

        Flagged ones are requeued flagged: their lost attempt is still to be counted.
        """
        with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
            # Every delivery sent before the cancel-ok is in the inbox once it returns.
            await channel.basic_cancel(self.tag, timeout=5)
        waiting = [] if self.held is None else [self.held]
        self.held = None
        while not self.inbox.empty():
            message = self.inbox.get_nowait()
            if message is not None:
                waiting.append(message)
        for message in waiting:
            with contextlib.suppress(Exception):
                await self.delivery(message).release()
