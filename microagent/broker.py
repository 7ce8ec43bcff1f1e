"""The queue broker contract.

Delivery contract, the same for every backend (the shared contract suite in
``tests/contract`` checks it):

* **At least once.** A message is acknowledged only after its handler
  returned. A consumer that dies, times out or is stopped mid-handler loses
  nothing: the message comes back (to this or another consumer).
* **Retries.** A failed handler is retried with exponential backoff; the
  attempt count travels with the message. After ``max_attempts`` the message
  goes to ``<queue>.dlq`` with the error. Undecodable or oversized payloads and
  messages the handler (or its DTO) cannot accept go there at once.
* **In-flight limit.** A consumer runs at most ``max_inflight`` handlers and
  holds at most ``prefetch`` more messages read ahead (memory and Kafka:
  ``max_inflight`` by default; Redis, RabbitMQ, NATS: 0, as their crash count
  would count those too), so a handler that ends is replaced without a read
  round trip; a stop gives those back at once. Backends read no more than the
  free slots.
* **Ordering.** FIFO per queue (per partition for Kafka) for first
  deliveries; retries and concurrency (``max_inflight > 1``) may reorder.
* **Idempotency.** Duplicates are possible after crashes: handlers should be
  idempotent (the stable message id below tells duplicates apart).
* **Exchanges.** ``broker.<exchange>.send(msg, topic=None)`` reaches every
  queue bound to the exchange whose topic patterns match (no patterns: all).
* **Message id.** Every message gets an id when it is sent: 32 hex digits of
  a random UUID, or the caller's ``message_id=`` (a str of at most 255
  bytes). It is the same on every retry, in the dead-letter queue
  (``DeadLetter.message_id``) and on every queue an exchange send reaches;
  consumers see it as ``Delivery.message_id`` (``Delivery.copy_id`` is the
  broker's id of one copy). ``send_many`` gives each message its own id
  (or takes ``message_ids=``, one per message).
* **Headers.** ``send``, ``send_many`` and exchange sends take
  ``headers={'name': 'value'}``, a ``str -> str`` mapping carried with the
  message on every backend, kept across retries and into the dead-letter
  queue, and seen by consumers as ``Delivery.headers``. The names the
  backends use themselves (``microagent._message.RESERVED_HEADERS``:
  ``x-attempt``, ``x-error``... ) are refused.
* **Send options.** Each backend names the extra options it takes
  (``AbstractQueueBroker.send_options``: AMQP ``timeout``, Kafka ``key``);
  any other option is an :class:`UnsupportedOption` error naming the backend
  and the option, never silently dropped.
* **Wire compatibility.** A message written before ids and headers existed
  still decodes: its id is its first copy's ``copy_id``, its headers empty.

>>> from microagent import Catalog, Queue
>>> from microagent.tools.memory import MemoryBroker
>>> catalog = Catalog()
>>> mailer = Queue('mailer', catalog=catalog)
>>> broker = MemoryBroker('memory://', catalog=catalog)
>>> await broker.mailer.send({'to': 'a@b.c'}, headers={'tenant': 'acme'}, message_id='m-1')
>>> await broker.mailer.length()
1
>>> await broker.mailer.send({'to': 'a@b.c'}, key='a')
Traceback (most recent call last):
...
microagent.exceptions.UnsupportedOption: MemoryBroker.send: unsupported option 'key' (supported: headers, message_id)
"""
from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ._dsn import mask_dsn
from ._message import check_message_id, message_ids_for, new_message_id
from ._shared import Shared
from ._tasks import TaskSet, cancel_task
from .catalog import DEFAULT_CATALOG, Catalog
from .delivery import ConsumerRunner, DeadLetter
from .exceptions import BackendError, ConfigurationError, DeliveryError, QueueNotFound, UnsupportedOption
from .queue import Queue
from .wire import MICROAGENT1, NATIVE, check_wire

if TYPE_CHECKING:
    import asyncio

    from .agent import MicroAgent
    from .telemetry import Telemetry

__all__ = ['AbstractQueueBroker', 'BoundExchange', 'BoundQueue', 'Consumer']


@dataclass
class Consumer:
    """A handler of an agent bound to a queue (made by ``@consumer``)."""

    agent: MicroAgent
    handler: Callable[..., Awaitable[None]]
    queue: Queue
    timeout: float
    options: dict[str, Any] = field(default_factory=dict)
    dto_class: type | None = None
    dto_name: str | None = None


class BoundQueue:
    """A queue seen through a broker: ``await broker.mailer.send({'to': 'a@b.c'})``."""

    __slots__ = ('broker', 'queue')

    def __init__(self, broker: AbstractQueueBroker, queue: Queue) -> None:
        self.broker = broker
        self.queue = queue

    def __repr__(self) -> str:
        return f'<BoundQueue {self.queue.name} of {self.broker!r}>'

    async def send(self, message: dict[str, Any], *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None, **options: Any) -> None:
        """Serialize *message* (SerializingError: nothing is sent) and write it to the queue.

        ``headers`` and ``message_id`` as in the module docstring; other
        options are the backend's (:attr:`AbstractQueueBroker.send_options`).
        """
        if options:
            self.broker.check_options('send', options)
        broker = self.broker
        telemetry = broker.telemetry
        if telemetry is None:
            await broker.send(self.queue.name, self.queue.serialize(message), headers=headers,
                              message_id=message_id, **options)
            return
        raw = self.queue.serialize(message)
        message_id = message_id or new_message_id()  # the span names the id the message gets
        with telemetry.producing(broker.dsn, self.queue.name, message_id) as context:
            await broker.send(self.queue.name, raw, headers={**(headers or {}), **context},
                              message_id=message_id, **options)

    __call__ = send

    async def send_many(self, messages: Sequence[dict[str, Any]], *, headers: Mapping[str, str] | None = None,
                        message_ids: Sequence[str] | None = None, **options: Any) -> None:
        """Send several messages in one batch or pipeline, where the backend has one.

        Every message gets *headers* and an id of its own (or its entry of *message_ids*).
        """
        if options:
            self.broker.check_options('send_many', options)
        raw = [self.queue.serialize(m) for m in messages]
        broker = self.broker
        if broker.telemetry is None:
            await broker.send_many(self.queue.name, raw, headers=headers, message_ids=message_ids, **options)
            return
        # One span for the batch: every message carries it.
        with broker.telemetry.producing(broker.dsn, self.queue.name, count=len(raw)) as context:
            await broker.send_many(self.queue.name, raw, headers={**(headers or {}), **context},
                                   message_ids=message_ids, **options)

    async def length(self) -> int:
        """Messages waiting in the queue."""
        return await self.broker.queue_length(self.queue.name)


class BoundExchange:
    """An exchange seen through a broker: ``await broker.push.send(msg, topic='push.ios')``."""

    __slots__ = ('broker', 'name')

    def __init__(self, broker: AbstractQueueBroker, name: str) -> None:
        self.broker = broker
        self.name = name

    def __repr__(self) -> str:
        return f'<BoundExchange {self.name} of {self.broker!r}>'

    async def send(self, message: dict[str, Any], topic: str | None = None, *,
                   headers: Mapping[str, str] | None = None, message_id: str | None = None,
                   **options: Any) -> None:
        """Send *message* to every queue bound to the exchange whose patterns match *topic*.

        Every queue reached gets the same message id and *headers*.
        """
        if options:
            self.broker.check_options('publish', options)
        routed = self.broker.catalog.route(self.name, topic)
        if not routed:
            # Never a silent drop: the same answer as AMQP's mandatory flag, on every backend.
            raise DeliveryError(f'exchange {self.name!r}: no bound queue accepts topic {topic!r}')
        broker = self.broker
        raw = routed[0].serialize(message)
        if broker.telemetry is None:
            await broker.publish(self.name, raw, topic=topic, headers=headers, message_id=message_id, **options)
            return
        message_id = message_id or new_message_id()
        with broker.telemetry.producing(broker.dsn, self.name, message_id, operation='publish') as context:
            await broker.publish(self.name, raw, topic=topic, headers={**(headers or {}), **context},
                                 message_id=message_id, **options)

    __call__ = send


class AbstractQueueBroker(Shared, abc.ABC):
    """Broker is an abstract interface with two basic methods - send and bind.

    All declared queues are attributes of a broker (``broker.mailer``), and so
    are the exchanges they are bound to. Options common to every backend:
    ``max_attempts`` (5), ``max_inflight`` per consumer (32), ``retry_delay``
    (first backoff, 1 s), ``max_retry_delay`` (60 s), ``max_message_size``
    (bytes, 1 MiB; larger messages are dead-lettered before parsing), ``wire``
    (``'native'``, or ``'microagent1'`` to share queues with microagent 1.9
    agents: :mod:`microagent.wire`).

    A backend implements ``send``, ``bind`` and ``queue_length`` (the three
    abstract methods); ``dead_letters`` is optional.

    ``send_options`` names the send options a backend takes besides
    ``headers`` and ``message_id`` (see the module docstring).
    ``telemetry`` (a :class:`microagent.telemetry.Telemetry`, default None:
    off) traces every send and handler run and puts the trace context in the
    message headers.

    >>> from microagent import Catalog, Queue
    >>> from microagent.tools.memory import MemoryBroker
    >>> catalog = Catalog()
    >>> user_created = Queue('user_created', catalog=catalog)
    >>> broker = MemoryBroker('memory://', catalog=catalog)
    >>> await broker.user_created.send({'user_id': 1})
    >>> await broker.user_created.length()
    1
    """

    send_options: ClassVar[frozenset[str]] = frozenset()
    # Whether consumers read ahead by default (prefetch = max_inflight): only where a consumer's death does
    # not count an attempt for every message it held (Redis, RabbitMQ and NATS count them all, so messages
    # read ahead beside one that kills its process would be counted with it).
    read_ahead: ClassVar[bool] = False

    def __init__(self, dsn: str, *, uid: str | None = None, log: logging.Logger | None = None,
                 catalog: Catalog | None = None, max_attempts: int = 5, max_inflight: int = 32,
                 retry_delay: float = 1.0, max_retry_delay: float = 60.0,
                 max_message_size: int = 1024 * 1024, telemetry: Telemetry | None = None,
                 wire: str = NATIVE) -> None:
        if max_attempts < 1 or max_inflight < 1 or retry_delay < 0 or max_message_size < 1:
            raise ConfigurationError('max_attempts, max_inflight and max_message_size must be >= 1, '
                                     'retry_delay >= 0')
        self.dsn = dsn
        self.uid = uid or uuid.uuid4().hex
        self.log = log or logging.getLogger('microagent.broker')
        self.catalog = catalog or DEFAULT_CATALOG
        self.max_attempts = max_attempts
        self.max_inflight = max_inflight
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.max_message_size = max_message_size
        self.telemetry = telemetry
        self.wire = MICROAGENT1 if check_wire(type(self).__name__, wire) == MICROAGENT1 else NATIVE
        self._bindings: dict[str, Consumer] = {}
        self._runners: dict[str, ConsumerRunner] = {}
        self._readers: dict[str, asyncio.Task[Any]] = {}
        self._tasks = TaskSet(f'{type(self).__name__} tasks')

    def lease_options(self) -> dict[str, Any]:
        """Keyword arguments for this backend's lease, so it connects the way this broker does (TLS, SASL).

        A singleton schedule's lease lives on its agent's broker
        (:func:`microagent.lease.lease_for`); backends with connection
        settings beyond the DSN return them here.

        >>> from microagent.tools.memory import MemoryBroker
        >>> MemoryBroker('memory://').lease_options()
        {}
        """
        return {}

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {mask_dsn(self.dsn)}>'

    __str__ = __repr__

    def __getattr__(self, name: str) -> BoundQueue | BoundExchange:
        if name.startswith('_'):
            raise AttributeError(name)
        bound: BoundQueue | BoundExchange
        try:
            bound = BoundQueue(self, self.catalog.queue(name))
        except QueueNotFound:
            if not self.catalog.is_exchange(name):
                raise QueueNotFound(f'{type(self).__name__}: no queue or exchange {name!r} is declared') from None
            bound = BoundExchange(self, name)
        # Cached: later lookups of this name are plain attribute reads on the hot path.
        self.__dict__[name] = bound
        return bound

    # -- the backend interface ------------------------------------------------

    def check_options(self, method: str, options: Mapping[str, Any]) -> None:
        """Raise :class:`UnsupportedOption` for an option of *method* this backend does not know."""
        for name in options:
            if name not in self.send_options:
                known = ', '.join(sorted({'headers', 'message_id', *self.send_options}))
                raise UnsupportedOption(f'{type(self).__name__}.{method}: unsupported option {name!r} '
                                        f'(supported: {known})')

    @abc.abstractmethod
    async def send(self, name: str, message: str, *, headers: Mapping[str, str] | None = None,
                   message_id: str | None = None) -> None:
        """Write a raw (serialized) message to queue *name*; returns once the broker has it.

        The message gets *message_id* (a new id when None) and *headers*
        (checked: :func:`microagent._message.check_headers`). A backend takes
        the extra options it names in :attr:`send_options` as keyword
        arguments, and answers any other with :class:`UnsupportedOption`
        (``if options: self.check_options('send', options)`` after its own).
        """

    @abc.abstractmethod
    async def bind(self, name: str) -> None:
        """Start reading queue *name* into ``self._runners[name]`` (see :class:`ConsumerRunner`).

        Backends usually ``self._start_reader(name, self._read(runner))``; the
        reader task may be cancelled at any await: what it read and did not
        submit is redelivered by the broker.
        """

    @abc.abstractmethod
    async def queue_length(self, name: str, **options: Any) -> int:
        """Messages waiting in queue *name* (not yet taken by a consumer)."""

    def partition_lengths(self, name: str) -> dict[str, int]:
        """The backlog of queue *name* per partition, as the last ``queue_length`` read it.

        For backends whose queues are partitioned (Kafka: ``{'topic/partition': lag}``);
        the others keep one backlog per queue and return ``{}``. Nothing is read
        from the network here: metrics call it right after ``queue_length``.

        >>> from microagent.tools.memory import MemoryBroker
        >>> MemoryBroker('memory://').partition_lengths('mailer')   # one backlog per queue: no parts
        {}
        """
        return {}

    async def dead_letters(self, name: str, limit: int = 100) -> list[DeadLetter]:
        """Up to *limit* messages in ``<name>.dlq``, oldest first, without removing them.

        A backend that keeps no dead letters need not implement it: this
        default raises :class:`BackendError` saying so.
        """
        raise BackendError(f'{type(self).__name__} keeps no dead letters (it does not implement dead_letters)')

    @staticmethod
    def prepared_data(consumer: Consumer, raw_data: str | bytes) -> dict[str, Any]:
        """The handler's keyword arguments for a raw message: decoded, with the DTO (microagent 1.9's helper).

        For backends that call handlers themselves; the built-in ones go
        through :class:`~microagent.delivery.ConsumerRunner`.

        Not run: a fragment: ``consumer`` is a bound consumer of an agent.
        >>> data = AbstractQueueBroker.prepared_data(consumer, '{"user_id": 1}')   # doctest: +SKIP
        """
        data = consumer.queue.deserialize(raw_data)
        if consumer.dto_class is not None:
            data[consumer.dto_name or 'dto'] = consumer.dto_class(**data)
        return data

    async def publish(self, exchange: str, message: str, topic: str | None = None, *,
                      headers: Mapping[str, str] | None = None, message_id: str | None = None,
                      **options: Any) -> None:
        """Send *message* to every queue bound to *exchange* that accepts *topic*, with one id.

        The default routes with the catalog and sends to each queue; backends
        with native exchanges override it.
        """
        if options:
            self.check_options('publish', options)
        message_id = check_message_id(message_id) if message_id is not None else new_message_id()
        for queue in self.catalog.route(exchange, topic):
            await self.send(queue.name, message, headers=headers, message_id=message_id, **options)

    async def send_many(self, name: str, messages: Sequence[str], *, headers: Mapping[str, str] | None = None,
                        message_ids: Sequence[str] | None = None, **options: Any) -> None:
        """Write several raw messages; backends override with a pipeline or batch."""
        if options:
            self.check_options('send_many', options)
        for message, message_id in zip(messages, message_ids_for(messages, message_ids), strict=True):
            await self.send(name, message, headers=headers, message_id=message_id, **options)

    def has_handlers(self) -> bool:
        """Whether consumers are bound (an agent's ``stop()`` then leaves this broker open)."""
        return bool(self._bindings)

    async def close(self) -> None:
        """Stop every consumer (releasing unfinished messages) and close connections.

        A closed broker may be used again: connections are opened lazily.
        """
        for name in list(self._runners):
            await self.unbind(name, timeout=0)
        await self._tasks.cancel()

    # -- consumers -------------------------------------------------------------

    async def bind_consumer(self, consumer: Consumer) -> None:
        """Bind a consumer of an agent to this broker and start reading its queue."""
        name = consumer.queue.name
        if name in self._bindings:
            raise ConfigurationError(f'queue {name!r} already has a consumer on {self!r}')
        self._bindings[name] = consumer
        self._runners[name] = ConsumerRunner(self, consumer)
        try:
            await self.bind(name)
        except BaseException:
            self._bindings.pop(name, None)
            self._runners.pop(name, None)
            raise

    async def unbind(self, name: str, timeout: float | None = 30.0) -> int:
        """Stop reading *name*, let in-flight handlers finish until *timeout*; how many were cut."""
        runner = self._runners.pop(name, None)
        self._bindings.pop(name, None)
        if runner is None:
            return 0
        runner.active = False
        await cancel_task(self._readers.pop(name, None))
        await self._give_back_unstarted(name)
        return await runner.drain(timeout)

    async def _give_back_unstarted(self, name: str) -> None:
        """Unbinding, reader stopped: give back at once what the backend received but never handed out
        (a push consumer's buffer), before the running handlers are awaited."""

    def consuming(self, name: str) -> bool:
        """Whether the consumer of queue *name* is bound, connected and reading (readiness).

        >>> from microagent.tools.memory import MemoryBroker
        >>> MemoryBroker('memory://').consuming('mailer')   # nothing bound
        False
        """
        return name in self._runners

    def runner(self, name: str) -> ConsumerRunner:
        """The runner of the consumer bound to *name* (its stats, its in-flight count)."""
        return self._runners[name]

    def _start_reader(self, name: str, coro: Any) -> None:
        self._readers[name] = self._tasks.spawn(coro, name=f'{type(self).__name__} reader {name}')
