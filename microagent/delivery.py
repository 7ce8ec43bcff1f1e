"""The at-least-once delivery machinery shared by every queue broker.

A backend turns what it reads into :class:`Delivery` objects and hands them to
the :class:`ConsumerRunner` of the queue. The runner owns everything else:
decoding, the DTO, the handler call with its timeout, retries with backoff,
dead-lettering and the in-flight limit. Each delivery is settled exactly once:
``ack``, ``retry``, ``dead_letter`` or, on shutdown, ``release``.

What a delivery carries besides its body (the contract of every backend, see
``microagent.broker``): ``message_id``, the message's stable id, and
``headers``, the sender's ``str -> str`` mapping. A retry's new copy and a
dead letter carry ``headers`` as they are when ``retry`` or ``dead_letter``
is called: unchanged, but for the link to the failed attempt's span that the
runner adds when tracing is on (``microagent-failed-attempt``); a backend
whose retry redelivers the stored message itself (NATS) keeps them as sent.
Only ``attempt`` grows. ``copy_id`` is the
broker's id of this one copy (a stream entry id, a delivery tag, a
topic/partition/offset), different on each delivery. Inside a handler,
:func:`current_delivery` is the delivery being handled::

    @consumer(queues.mailer)
    async def send_email(self, **message):
        delivery = current_delivery()
        log.info('mail %s, trace %s', delivery.message_id, delivery.headers.get('traceparent'))

A consumer declared with ``effects=`` (see :class:`Effects`) has its handler
called through that object, which wraps each call in a scope of its own (a
database transaction with an inbox for ``microagent.effects.PostgresEffects``).
"""
from __future__ import annotations

import abc
import asyncio
import collections
import contextvars
import inspect
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._context import set_handler
from ._message import NO_HEADERS
from ._tasks import TaskSet
from ._watchdog import Watchdog
from .exceptions import SerializingError

if TYPE_CHECKING:
    from .broker import AbstractQueueBroker, Consumer
    from .telemetry import Telemetry

__all__ = ['RAW_KEYWORDS', 'ConsumerRunner', 'ConsumerStats', 'DeadLetter', 'Delivery', 'Effects', 'current_delivery']

# Keywords under which backends hand their own message to handlers that name them (microagent 1.9's API).
RAW_KEYWORDS = frozenset({'amqp', 'kafka'})

# The delivery a handler is running for: each delivery is handled in a task of its own, so the
# variable is that handler's alone (documented in the module docstring; nothing else is global).
_CURRENT: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar('microagent_delivery', default=None)


def current_delivery() -> Delivery | None:
    """The delivery whose handler is running (its ``message_id``, ``headers``, ``attempt``); None elsewhere.

    >>> current_delivery() is None
    True
    """
    return _CURRENT.get()


# The keyword an effects-wrapped handler receives its scope (transaction) under.
EFFECTS_KEYWORD = 'tx'


class Delivery(abc.ABC):
    """One message read from a queue, waiting to be settled.

    ``attempt`` starts at 1 and travels with the message across retries.
    ``message_id`` is the message's stable id, given at send and kept across
    retries and into the dead-letter queue; ``headers`` the sender's headers,
    kept the same way. ``copy_id`` is the broker's id of this copy (stream
    id, delivery tag, partition/offset), for logs. A message sent before ids
    existed has none: the id of its first copy serves, and its retries carry it.
    """

    __slots__ = ('attempt', 'body', 'copy_id', 'headers', 'message_id')

    def __init__(self, body: bytes | str, attempt: int = 1, copy_id: str = '', message_id: str = '',
                 headers: Mapping[str, str] = NO_HEADERS) -> None:
        self.body = body
        self.attempt = attempt
        self.copy_id = copy_id
        self.message_id = message_id or copy_id
        self.headers = headers

    @abc.abstractmethod
    async def ack(self) -> None:
        """The handler succeeded: remove the message for good."""

    @abc.abstractmethod
    async def retry(self, delay: float, error: str) -> None:
        """Bring the message back with ``attempt + 1`` after *delay* seconds, then settle this copy.

        The new copy must be durable before this one is acknowledged, so a
        crash in between gives a duplicate, never a loss.
        """

    @abc.abstractmethod
    async def dead_letter(self, error: str) -> None:
        """Move the message to ``<queue>.dlq`` with *error* and the attempt count."""

    async def release(self) -> None:  # noqa: B027 - optional hook with a safe default
        """Give the message back unhandled (shutdown); it is redelivered without an attempt counted.

        The default does nothing: the broker redelivers what was never acked.
        """

    def raw(self) -> dict[str, Any]:
        """The backend's own message, by keyword, for handlers that name it (``amqp``, ``kafka``); none here."""
        return {}


@runtime_checkable
class Effects(Protocol):
    """What ``@consumer(queue, effects=...)`` takes: it runs each delivery's handler in a scope of its own.

    ``run`` calls ``consumer.handler(**kwargs, tx=scope)`` and returns True, or
    returns False without calling it when the delivery was already handled (a
    redelivered duplicate); either way the runner acknowledges the delivery.
    An exception is a failed attempt (retried, then dead-lettered) as with a
    plain handler. The agent calls ``start`` before its consumers are bound
    and ``stop`` after they are drained.

    Not run: a fragment of an agent class (needs PostgreSQL).
    >>> @consumer(queues.orders, effects=PostgresEffects('postgresql://localhost/app'))  # doctest: +SKIP
    ... async def handle(self, tx, order_id): ...
    """

    async def run(self, consumer: Consumer, delivery: Delivery, kwargs: dict[str, Any]) -> bool:
        """Handle one delivery (see the class docstring)."""

    async def start(self, agent: Any) -> None:
        """The agent starts consuming through this object."""

    async def stop(self, agent: Any) -> None:
        """The agent stopped consuming through this object."""


@dataclass(frozen=True)
class DeadLetter:
    """A message in a dead-letter queue, as ``broker.dead_letters(name)`` returns it.

    ``message_id`` and ``headers`` are the ones it was sent with ('' and
    empty for messages dead-lettered before ids and headers existed).

    >>> DeadLetter('{"n": 1}', 'ValueError: poison', 5, 'c0ffee', {'k': 'v'}).headers
    {'k': 'v'}
    """

    body: str
    error: str
    attempts: int
    message_id: str = ''
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ConsumerStats:
    """Counters of one consumer, read by the launcher's metrics."""

    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    latencies: list[float] = field(default_factory=list)

    def observe(self, seconds: float) -> None:
        if len(self.latencies) < 10_000:
            self.latencies.append(seconds)


class ConsumerRunner:
    """Runs one consumer's handler over deliveries, at most ``max_inflight`` at once.

    It also holds up to ``prefetch`` deliveries (by default ``max_inflight``
    where the broker's ``read_ahead`` says so, else none) waiting for a slot,
    so a handler that ends is replaced at once, not one read round trip
    later; a stop gives those back at once (``release``).
    ``free_slots`` counts both: a backend reads that many. Backend read loop::

        while runner.active:
            free = await runner.wait_slots()            # >= 1
            for delivery in await read(count=free):
                runner.submit(delivery)
    """

    def __init__(self, broker: AbstractQueueBroker, consumer: Consumer) -> None:
        self.broker = broker
        self.consumer = consumer
        self.queue = consumer.queue
        options = consumer.options
        self.max_inflight = int(options.get('max_inflight', broker.max_inflight))
        self.prefetch = max(0, int(options.get('prefetch', self.max_inflight if broker.read_ahead else 0)))
        self.max_attempts = int(options.get('max_attempts', broker.max_attempts))
        self.retry_delay = float(options.get('retry_delay', broker.retry_delay))
        self.active = True
        self.stats = ConsumerStats()
        self._tasks = TaskSet(f'consumer {self.queue.name}')
        self._free = self.max_inflight          # handler slots
        self._waiting: collections.deque[Delivery] = collections.deque()  # prefetched, waiting for a slot
        self._settling = 0                      # handlers done, their ack (retry, dead letter) on its way
        self._changed = asyncio.Event()
        self._effects: Effects | None = options.get('effects')
        self._accepts = _accepts(consumer, injected=EFFECTS_KEYWORD if self._effects is not None else None)
        self._raw = _raw_keywords(consumer)
        self._label = f'{type(consumer.agent).__name__}.{getattr(consumer.handler, "__name__", "handler")}'
        self._watchdog = Watchdog(consumer.timeout)
        # Tracing is decided once per consumer: without it the hot path pays one None check.
        self._telemetry: Telemetry | None = getattr(broker, 'telemetry', None)

    def __repr__(self) -> str:
        return (f'<ConsumerRunner {self.queue.name} -> {self._label} free={self._free}/{self.max_inflight} '
                f'waiting={len(self._waiting)}>')

    @property
    def free_slots(self) -> int:
        """How many more deliveries the runner takes now: free handler slots plus room to prefetch."""
        # Acks on their way take no handler slot and, up to max_inflight of them, no prefetch room either.
        return self._free + self.prefetch - len(self._waiting) - max(0, self._settling - self.max_inflight)

    @property
    def inflight(self) -> int:
        """Deliveries held: handlers running, prefetched ones waiting for a slot, handled ones settling."""
        return self.max_inflight - self._free + len(self._waiting) + self._settling

    @property
    def running(self) -> int:
        """Handlers running now (never more than ``max_inflight``)."""
        return self.max_inflight - self._free

    async def wait_slots(self) -> int:
        """Wait until the runner takes at least one more delivery; how many."""
        while self.free_slots <= 0:
            self._changed.clear()
            await self._changed.wait()
        return self.free_slots

    async def wait_idle(self) -> None:
        """Wait until no handler of this consumer runs or waits (Kafka runs a crash suspect alone)."""
        while self._free < self.max_inflight or self._waiting or self._settling:
            self._changed.clear()
            await self._changed.wait()

    def submit(self, delivery: Delivery) -> None:
        """Handle *delivery* in a task of its own (takes a slot until settled), or keep it until a slot frees."""
        if self._free <= 0 and self.active:
            self._waiting.append(delivery)
            return
        self._free -= 1
        self._tasks.spawn(self._run(delivery), name=self._label)

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1``: exponential, capped, with a little jitter."""
        delay = min(self.retry_delay * 2 ** (attempt - 1), self.broker.max_retry_delay)
        return float(delay * random.uniform(0.9, 1.1))  # noqa: S311 - jitter, not crypto

    async def drain(self, timeout: float | None) -> int:
        """Stop intake, wait for in-flight handlers until *timeout*, cancel (release) the rest."""
        self.active = False
        self._changed.set()
        waiting, self._waiting = list(self._waiting), collections.deque()
        for delivery in waiting:  # never started: back to the broker at once, for another consumer
            self._tasks.spawn(self._settle(delivery.release(), delivery, 'release'), name=f'{self._label} release')
        cut = await self._tasks.drain(timeout)
        self._watchdog.close()
        return cut

    async def _run(self, delivery: Delivery) -> None:
        _CURRENT.set(delivery)
        set_handler(self._label)
        telemetry = self._telemetry
        try:
            if telemetry is None:
                await self._process(delivery)
            else:
                with telemetry.processing(self.broker.dsn, self.queue.name, self._label, delivery) as run:
                    run.error = await self._process(delivery)
        except asyncio.CancelledError:
            await self._settle(delivery.release(), delivery, 'release')
            raise
        finally:
            self._settling -= 1
            self._changed.set()

    def _handler_ended(self) -> None:
        """The handler returned (or never ran): its slot goes to the next delivery while this one settles."""
        self._free += 1
        self._settling += 1
        if self._waiting and self.active:
            self.submit(self._waiting.popleft())  # the next one starts now: no read, no ack in between
        self._changed.set()

    async def _process(self, delivery: Delivery) -> str | None:
        """Decode, run the handler, settle; the error type when the run failed."""
        started = time.perf_counter()
        try:
            kwargs, problem = self._decode(delivery)
            error = None if problem else await self._call(delivery, kwargs)
        finally:
            self._handler_ended()
        if problem:
            self.broker.log.error('%s: dead-lettering %s: %s', self._label, delivery.message_id, problem)
            self.stats.dead_lettered += 1
            if self._telemetry is not None:
                self._telemetry.failed(problem, delivery)
            await self._settle(delivery.dead_letter(problem), delivery, 'dead_letter')
            return 'rejected'
        if error is not None:
            return await self._failed(delivery, error)
        self.stats.handled += 1
        self.stats.observe(time.perf_counter() - started)
        if self._telemetry is not None:
            await self._settle(delivery.ack(), delivery, 'ack')
            return None
        try:  # the hot path: no settle wrapper without tracing
            await delivery.ack()
        except Exception as exc:  # noqa: BLE001 - unacked means redelivered later, never lost
            self._unsettled(delivery, exc)
        return None

    async def _call(self, delivery: Delivery, kwargs: dict[str, Any]) -> BaseException | None:
        """Run the handler under its timeout; the exception it failed with, or None."""
        watch = self._watchdog.watch()
        try:
            if self._effects is None:
                await self.consumer.handler(**kwargs)
            else:
                await self._effects.run(self.consumer, delivery, kwargs)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            # Our watchdog's cancel, not a stop: the handler timed out.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return TimeoutError(f'handler timed out after {self.consumer.timeout}s')
        except Exception as exc:  # noqa: BLE001 - a handler error must never stop the consumer
            return exc
        finally:
            watch.done()
        return None

    def _decode(self, delivery: Delivery) -> tuple[dict[str, Any], str | None]:
        if len(delivery.body) > self.broker.max_message_size:
            return {}, f'message of {len(delivery.body)} bytes exceeds {self.broker.max_message_size}'
        try:
            data = self.queue.deserialize(delivery.body)
        except SerializingError as exc:
            return {}, str(exc)
        consumer = self.consumer
        if consumer.dto_class is not None:
            try:
                dto = consumer.dto_class(**data)
            except Exception as exc:  # noqa: BLE001 - any DTO failure dead-letters the message
                dto_label = getattr(consumer.dto_class, '__name__', 'dto')
                return {}, f'{self._label}: {dto_label} rejected the message: {exc}'
            data = {**data, consumer.dto_name or 'dto': dto}
        if self._raw:
            raw = delivery.raw()
            data.update((key, raw[key]) for key in self._raw if key in raw)
        if not self._accepts(data):
            return {}, f'{self._label} cannot accept keys {sorted(data)}'
        return data, None

    async def _failed(self, delivery: Delivery, exc: BaseException) -> str:
        error = f'{type(exc).__name__}: {exc}' if str(exc) else type(exc).__name__
        self.stats.failed += 1
        if self._telemetry is not None:
            # The next attempt (or the dead letter) carries a link to this attempt's span.
            self._telemetry.failed(exc, delivery)
        if delivery.attempt >= self.max_attempts:
            self.broker.log.error('%s failed attempt %d/%d, dead-lettering: %s', self._label,
                                  delivery.attempt, self.max_attempts, error, exc_info=exc)
            self.stats.dead_lettered += 1
            await self._settle(delivery.dead_letter(error), delivery, 'dead_letter')
        else:
            delay = self.backoff(delivery.attempt)
            self.broker.log.warning('%s failed attempt %d/%d, retry in %.2fs: %s', self._label,
                                    delivery.attempt, self.max_attempts, delay, error, exc_info=exc)
            self.stats.retried += 1
            await self._settle(delivery.retry(delay, error), delivery, 'retry')
        return type(exc).__qualname__

    async def _settle(self, action: Any, delivery: Delivery, operation: str) -> None:
        telemetry = self._telemetry
        try:
            if telemetry is None:
                await action
            else:
                with telemetry.settling(self.broker.dsn, self.queue.name, self._label, delivery, operation):
                    await action
        except Exception as exc:  # noqa: BLE001 - unsettled means redelivered later, never lost
            self._unsettled(delivery, exc)

    def _unsettled(self, delivery: Delivery, exc: Exception) -> None:
        self.broker.log.warning('%s: cannot settle %s (%s); the broker will redeliver it',
                                self._label, delivery.message_id, type(exc).__name__)


def _raw_keywords(consumer: Consumer) -> frozenset[str]:
    """The raw-message keywords (``amqp``, ``kafka``) the handler names as parameters.

    Only named ones: a handler taking ``**kwargs`` often passes them on
    (``broker.x.send(kwargs)``), and a raw message is not JSON.
    """
    try:
        names = inspect.signature(consumer.handler).parameters
    except (TypeError, ValueError):
        return frozenset()
    return RAW_KEYWORDS.intersection(n for n, p in names.items() if p.kind is not p.VAR_KEYWORD)


def _accepts(consumer: Consumer, injected: str | None = None) -> Any:
    """A predicate: can the handler be called with these keyword arguments?

    *injected* names an argument the runner adds itself (``tx``): a message
    must not carry it, and the handler need not find it in the message.
    """
    accepts = _accepts_keys(consumer, injected)
    if injected is None:
        return accepts
    return lambda data: injected not in data and accepts(data)


def _accepts_keys(consumer: Consumer, injected: str | None) -> Any:
    try:
        params = [p for p in inspect.signature(consumer.handler).parameters.values() if p.name != injected]
    except (TypeError, ValueError):
        return lambda data: True
    # Runs for every message: name sets give the answer Signature.bind(**data) would, at a
    # fraction of its cost (bind was ~10% of a consumer's CPU in the benchmarks).
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = frozenset(p.name for p in params if p.kind in keywords)
    required = frozenset(p.name for p in params if p.kind in keywords and p.default is p.empty)
    if any(p.kind is p.POSITIONAL_ONLY and p.default is p.empty for p in params):
        return lambda data: False
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return required.issubset
    return lambda data: required.issubset(data) and named.issuperset(data)
