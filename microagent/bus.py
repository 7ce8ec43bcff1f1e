"""The signal bus contract: at-most-once pub/sub events, and RPC over them.

Signals are fire-and-forget: every receiver subscribed when a signal is sent
gets it once; a receiver that is down misses it. A receiver's return value is
its RPC response: ``await bus.<signal>.call(sender, **kwargs)`` returns the
first one, ``{'<Class>.<method>': value}``; ``bus.<signal>.waiter(...)`` yields
each until the caller stops or the timeout passes.

Wire format (JSON, the signal's codec): ``{"s": sender, "a": {args}}`` plus,
for RPC, ``"c"`` (correlation id) and ``"r"`` (reply channel), and, when the
sender gave ``headers={...}`` (a ``str -> str`` mapping, as on queues),
``"h"``. A response is ``{"c": id, "r": {"Class.method": value}}`` (plus
``"h"``, the responder's trace context, when tracing is on). Receivers
ignore envelope keys they do not know, so older ones read newer envelopes.
A receiver reads the headers of the signal it handles with
:func:`signal_headers` (a context variable set for each handler call).
``headers`` is taken as a signal argument when the signal declares one by
that name.

With ``wire='microagent1'`` a bus writes microagent 1.9's format instead
(:mod:`microagent.wire`: the arguments alone, so no headers); every bus whose
backend can subscribe to channel prefixes reads both.

Receiving is tolerant, sending is strict. ``send``/``call`` refuse arguments
that do not fit the local declaration. A received signal that does not fit
(a sender with newer or older declarations, in a rolling deploy) is still
delivered: each handler gets the arguments it takes (all with ``**kwargs``,
the unknown ones left out otherwise) and is skipped only when a required
argument is missing; each difference is logged once per bus, signal and argument.
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from ._context import set_handler
from ._dsn import mask_dsn
from ._jsonlib import get_codec
from ._lane import SignalLane
from ._message import NO_HEADERS, check_headers, user_headers
from ._rpc import First, Inbox, until
from ._shared import Shared
from ._tasks import TaskSet
from ._timeouts import within
from ._tolerant import Complaints, HandlerParams, log_problems
from .catalog import DEFAULT_CATALOG, Catalog
from .exceptions import ConfigurationError, SerializingError, SignalNotFound
from .signal import Signal
from .wire import MICROAGENT1, NATIVE, check_sender, check_wire, legacy_channel, parse_legacy

if TYPE_CHECKING:
    from .agent import MicroAgent
    from .telemetry import Telemetry

__all__ = ['AbstractSignalBus', 'BoundSignal', 'BusStats', 'Receiver', 'signal_envelope', 'signal_headers']

# The headers of the signal a receiver is handling: each handler call runs in a context of its own.
_HEADERS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar('microagent_signal_headers',
                                                                             default=NO_HEADERS)


def signal_headers() -> Mapping[str, str]:
    """The headers of the signal whose receiver is running (empty elsewhere, or when it had none).

    >>> dict(signal_headers())
    {}
    """
    return _HEADERS.get()


@dataclass
class BusStats:
    """Counters of one bus, read by the launcher's metrics: per signal, per receiver, RPC latencies.

    ``sent``, ``received`` and ``dropped`` (undecodable or not matching the
    declaration) count signals by name; ``handled`` and ``failed`` count
    receiver runs by ``'Class.method'``; ``latencies`` holds RPC call times
    until the first response, per signal (drained by whoever reports them).

    >>> stats = BusStats(); stats.sent['user_created'] += 1; stats.rpc('rpc_count', 0.01); stats.latencies
    {'rpc_count': [0.01]}
    """

    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    handled: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def rpc(self, signal: str, seconds: float) -> None:
        found = self.latencies.setdefault(signal, [])
        if len(found) < 10_000:
            found.append(seconds)


def signal_envelope(signal: Signal, sender: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The envelope of a send of *signal* (see the module docstring); SignalArgumentsError if *kwargs* misfit.

    A ``headers`` keyword the signal does not declare is taken out of *kwargs* into the envelope.

    >>> signal_envelope(Signal('ping_envelope', ['n'], catalog=Catalog()), 'me', {'n': 1, 'headers': {'k': 'v'}})
    {'s': 'me', 'a': {'n': 1}, 'h': {'k': 'v'}}
    """
    headers = None
    if 'headers' in kwargs and 'headers' not in signal.providing_args:
        headers = check_headers(kwargs.pop('headers'))
    signal.check(kwargs)
    envelope: dict[str, Any] = {'s': sender, 'a': kwargs}
    if headers:
        envelope['h'] = headers
    return envelope


@dataclass(eq=False)
class Receiver:
    """A handler of an agent subscribed to a signal (made by ``@receiver``)."""

    agent: MicroAgent
    handler: Callable[..., Awaitable[Any]]
    signal: Signal
    timeout: float
    tasks: TaskSet
    params: HandlerParams = field(init=False, repr=False)
    #: ``'<AgentClass>.<method>'``: the receiver's name in responses, counters and logs.
    key: str = field(init=False, repr=False)
    #: Where its signals run: inline in a task of ``tasks`` until one has to wait (:mod:`microagent._lane`).
    lane: SignalLane = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.params = HandlerParams.of(self.handler)
        self.key = f'{type(self.agent).__name__}.{getattr(self.handler, "__name__", "handler")}'
        self.lane = SignalLane(self.tasks, f'receiver {self.key}')


class BoundSignal:
    """A signal seen through a bus: ``await bus.user_created.send('users', user_id=1)``."""

    __slots__ = ('bus', 'signal')

    def __init__(self, bus: AbstractSignalBus, signal: Signal) -> None:
        self.bus = bus
        self.signal = signal

    def __repr__(self) -> str:
        return f'<BoundSignal {self.signal.name} of {self.bus!r}>'

    async def send(self, sender: str, **kwargs: Any) -> None:
        """Check the arguments (SignalArgumentsError: nothing sent) and publish the signal.

        ``headers={...}`` travels in the envelope (see the module docstring).
        """
        envelope = self._envelope(sender, kwargs)
        bus = self.bus
        bus.stats.sent[self.signal.name] += 1
        if bus.telemetry is None:
            await bus.send(*self._outgoing(envelope))
            return
        with bus.telemetry.producing(bus.dsn, self.signal.name) as context:
            envelope['h'] = {**envelope.get('h', {}), **context}
            await bus.send(*self._outgoing(envelope))

    def _outgoing(self, envelope: dict[str, Any], corr: str = '', reply: str = '') -> tuple[str, str]:
        """The channel and body of *envelope* in the bus's wire format (*corr* and *reply*: an RPC request)."""
        bus, signal = self.bus, self.signal
        if bus.wire is NATIVE:
            return bus.channel(signal.name), signal.serialize({**envelope, 'c': corr, 'r': reply} if corr else envelope)
        # microagent 1.9: the arguments are the body, an RPC request id rides on the channel.
        channel = legacy_channel(bus.prefix, signal.name, check_sender(envelope['s']), corr)
        return channel, signal.serialize(envelope['a'])

    def _envelope(self, sender: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        envelope = signal_envelope(self.signal, sender, kwargs)
        bus = self.bus
        if 'h' in envelope and bus.wire is not NATIVE and bus.complaints.first(('headers', self.signal.name)):
            bus.log.warning('Signal %s: wire microagent1 has no envelope: headers are not sent (logged once)',
                            self.signal.name)
        return envelope

    __call__ = send

    async def call(self, sender: str, timeout: float = 60, **kwargs: Any) -> dict[str, Any]:
        """Send as RPC; the first response ``{'Class.method': value}``, or TimeoutError."""
        started = time.perf_counter()
        bus = self.bus
        if bus.telemetry is None:  # the common case, without the waiter's iterator and queue
            envelope = self._envelope(sender, kwargs)
            bus.stats.sent[self.signal.name] += 1
            response = await self._first(envelope, timeout)
            if response is None:
                raise TimeoutError(f'no response to signal {self.signal.name!r} within {timeout}s')
            bus.stats.rpc(self.signal.name, time.perf_counter() - started)
            return response
        async with self.waiter(sender, timeout=timeout, **kwargs) as responses:
            async for response in responses:
                seconds = time.perf_counter() - started
                self.bus.stats.rpc(self.signal.name, seconds)
                if self.bus.telemetry is not None:
                    self.bus.telemetry.rpc_done(self.signal.name, seconds)
                return response
        raise TimeoutError(f'no response to signal {self.signal.name!r} within {timeout}s')

    @contextlib.asynccontextmanager
    async def waiter(self, sender: str, timeout: float = 60,
                     **kwargs: Any) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Send as RPC and iterate over responses until the caller breaks or *timeout* passes.

        Not run: a fragment of an agent's code (needs Redis and a declared signal).
        >>> async with bus.rpc_comments_count.waiter('api', user_id=1) as responses:  # doctest: +SKIP
        ...     async for response in responses:
        ...         print(response)
        """
        envelope = self._envelope(sender, kwargs)
        bus = self.bus
        bus.stats.sent[self.signal.name] += 1
        if bus.telemetry is None:
            async with self._request(envelope, timeout, None) as responses:
                yield responses
            return
        with bus.telemetry.calling(bus.dsn, self.signal.name) as span:
            envelope['h'] = {**envelope.get('h', {}), **bus.telemetry.carrier()}
            async with self._request(envelope, timeout, span) as responses:
                yield responses

    async def _first(self, envelope: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send *envelope* as an RPC request; its first response, None if none came within *timeout*."""
        bus = self.bus
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # covering the request too, as in _request
        reply = await within(bus.response_channel(), timeout)
        corr = bus.correlation_id()
        first: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        bus.pending_calls[corr] = First(first)
        try:
            channel, message = self._outgoing(envelope, corr, reply)
            await within(bus.send(channel, message), deadline - loop.time())
            timer = loop.call_at(deadline, First.expire, first)
            try:
                response = await first
            finally:
                timer.cancel()
        finally:
            bus.pending_calls.pop(corr, None)
        return None if response is None else response['r']

    @contextlib.asynccontextmanager
    async def _request(self, envelope: dict[str, Any], timeout: float,
                       span: Any) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        corr = self.bus.correlation_id()
        # The deadline covers the request too: a publish stuck on a dead route must not outlive the call.
        deadline = asyncio.get_running_loop().time() + timeout
        async with asyncio.timeout_at(deadline):
            reply = await self.bus.response_channel()
        self.bus.pending_calls[corr] = inbox
        try:
            channel, message = self._outgoing(envelope, corr, reply)
            async with asyncio.timeout_at(deadline):
                await self.bus.send(channel, message)
            yield until(inbox, deadline, self.bus.telemetry, span)
        finally:
            self.bus.pending_calls.pop(corr, None)


class AbstractSignalBus(Shared, abc.ABC):
    """Signal bus is an abstract interface with two basic methods - send and bind.

    Backends implement ``send(channel, message)`` and ``bind(channel)`` and feed
    what arrives on a bound channel to :meth:`receiver`. ``telemetry`` (a
    :class:`microagent.telemetry.Telemetry`, default None: off) traces signals,
    receivers and RPC, with the trace context in the envelope's headers.

    A backend that can subscribe to every channel starting with a string sets
    ``prefix_binds`` and implements :meth:`bind_prefix`: it then reads
    microagent 1.9's channels too, and can write them (``wire='microagent1'``).
    ``prefix`` defaults to the catalog's ``default_prefix`` (a declarations
    file may set it), else ``PUBSUB``.

    >>> from microagent import Catalog, Signal
    >>> from microagent.tools.memory import MemorySignalBus   # RedisSignalBus('redis://...') alike
    >>> catalog = Catalog()
    >>> _ = Signal('user_created', ['user_id'], catalog=catalog)
    >>> bus = MemorySignalBus('memory://doc', catalog=catalog)
    >>> await bus.user_created.send('user_agent', user_id=1)
    """

    #: Whether :meth:`bind_prefix` works: the backend can read (and write) microagent 1.9's channels.
    prefix_binds = False

    def __init__(self, dsn: str, *, uid: str | None = None, prefix: str | None = None,
                 log: logging.Logger | None = None, catalog: Catalog | None = None,
                 telemetry: Telemetry | None = None, wire: str = NATIVE) -> None:
        self.dsn = dsn
        self.uid = uid or uuid.uuid4().hex
        self.catalog = catalog or DEFAULT_CATALOG
        self.prefix = prefix or self.catalog.default_prefix or 'PUBSUB'
        self.log = log or logging.getLogger('microagent.bus')
        self.telemetry = telemetry
        self.stats = BusStats()
        self.wire = MICROAGENT1 if check_wire(type(self).__name__, wire) == MICROAGENT1 else NATIVE
        if self.wire is MICROAGENT1 and not self.prefix_binds:
            # microagent 1.9 had a Redis bus only: nothing to speak its format with here.
            self.log.info('%s: microagent 1.9 has no such bus; wire=microagent1 keeps the native format',
                          type(self).__name__)
            self.wire = NATIVE
        self.complaints = Complaints()
        self.receivers: dict[str, list[Receiver]] = {}
        # Inboxes of the RPC calls made through this bus, by correlation id (the calls fill and empty it).
        self.pending_calls: dict[str, Inbox] = {}
        # Correlation ids: unique per bus and process (a random head), cheap (a counter, not a uuid each).
        self._correlation = map(f'{uuid.uuid4().hex[:16]}{{:016x}}'.format, itertools.count())
        self._response_bound: asyncio.Lock | None = None
        self._response_ready = False
        self._tasks = TaskSet(f'{type(self).__name__} tasks')

    def lease_options(self) -> dict[str, Any]:
        """What a lease on this bus's backend needs to connect as the bus does; the broker's twin.

        See :meth:`microagent.broker.AbstractQueueBroker.lease_options`.
        """
        return {}

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {mask_dsn(self.dsn)}>'

    __str__ = __repr__

    def __getattr__(self, name: str) -> BoundSignal:
        if name.startswith('_'):
            raise AttributeError(name)
        try:
            return BoundSignal(self, self.catalog.signal(name))
        except SignalNotFound:
            raise SignalNotFound(f'{type(self).__name__}: no signal {name!r} is declared') from None

    def correlation_id(self) -> str:
        """A new RPC correlation id: 32 hex digits, unique per bus."""
        return next(self._correlation)

    def channel(self, name: str) -> str:
        """The channel of signal *name* under this bus's prefix."""
        return f'{self.prefix}:{name}'

    # -- the backend interface ------------------------------------------------

    @abc.abstractmethod
    async def send(self, channel: str, message: str) -> None:
        """Publish a raw message to *channel* (at most once, no confirmation of receipt)."""

    @abc.abstractmethod
    async def bind(self, channel: str) -> None:
        """Subscribe to *channel*; each message is passed to ``self.receiver(channel, message)``."""

    async def bind_prefix(self, head: str) -> None:
        """Subscribe to every channel starting with *head* (backends with ``prefix_binds``)."""
        raise ConfigurationError(f'{type(self).__name__} cannot subscribe to channel prefixes')

    def has_handlers(self) -> bool:
        """Whether receivers are bound (an agent's ``stop()`` then leaves this bus open)."""
        return any(self.receivers.values())

    def connected(self) -> bool:
        """Whether every bound channel is subscribed on a live connection (readiness; False while reconnecting).

        >>> from microagent.tools.memory import MemorySignalBus
        >>> MemorySignalBus('memory://').connected()
        True
        """
        return True

    async def close(self) -> None:
        """Unsubscribe and close connections; a closed bus reconnects lazily when used again."""
        await self._tasks.cancel()
        self.receivers.clear()
        self._response_ready = False

    # -- receiving ---------------------------------------------------------------

    async def bind_receiver(self, receiver: Receiver) -> None:
        """Subscribe *receiver* to its signal (the channels are bound once per bus)."""
        name = receiver.signal.name
        first = name not in self.receivers
        self.receivers.setdefault(name, []).append(receiver)
        if first:
            await self.bind(self.channel(name))
            if self.prefix_binds:
                await self.bind_prefix(legacy_channel(self.prefix, name, ''))

    def unbind_receivers(self, agent: MicroAgent) -> None:
        """Stop delivering signals to *agent* (its running handlers go on)."""
        for name, receivers in self.receivers.items():
            self.receivers[name] = [r for r in receivers if r.agent is not agent]

    async def response_channel(self) -> str:
        """The channel RPC responses to this bus arrive on (bound on first use)."""
        channel = f'{self.prefix}:response:{self.uid}'
        if not self._response_ready:
            self._response_bound = self._response_bound or asyncio.Lock()
            async with self._response_bound:
                if not self._response_ready:
                    await self.bind(channel)
                    if self.wire is MICROAGENT1:
                        # 1.9 answers on PREFIX:response:<its own uid>#<request id>.
                        await self.bind_prefix(f'{self.prefix}:response:')
                    self._response_ready = True
        return channel

    def receiver(self, channel: str, message: str | bytes) -> None:
        """Entry point for backends: dispatch one message that arrived on *channel*."""
        head = self.prefix + ':'
        if channel.startswith('response:', len(head)):
            self._on_response(channel, message)
            return
        name = channel[len(head):]
        receivers = self.receivers.get(name)
        if receivers:
            envelope = self._decode(receivers[0].signal, message)
        elif receivers is None:  # not one of our channels: microagent 1.9's?
            name, envelope = self._decode_legacy(channel, message)
            receivers = self.receivers.get(name)
        if not receivers:
            return
        if envelope is None:
            self.stats.dropped[name] += 1
            return
        self.stats.received[name] += 1
        run = self._run if self.telemetry is None else self._traced
        for receiver in receivers:
            receiver.lane.submit(run(receiver, envelope))

    def _decode(self, signal: Signal, message: str | bytes) -> dict[str, Any] | None:
        try:
            envelope = signal.deserialize(message)
        except SerializingError as exc:
            self.log.error('Signal %s: dropped undecodable message: %s', signal.name, exc)
            return None
        args = envelope.get('a')
        if not isinstance(args, dict):
            self.log.error('Signal %s: dropped message without an arguments object', signal.name)
            return None
        if signal.mismatch(args) is not None:
            log_problems(self.log, self.complaints, signal, args)
        return envelope

    def _decode_legacy(self, channel: str, message: str | bytes) -> tuple[str, dict[str, Any] | None]:
        """A microagent 1.9 signal (``PREFIX:name:sender[#id]``, the arguments as the body) as an envelope."""
        parsed = parse_legacy(self.prefix, channel)
        receivers = self.receivers.get(parsed[0]) if parsed else None
        if not parsed or not receivers:
            return '', None
        name, sender, request = parsed
        signal = receivers[0].signal
        try:
            args = signal.deserialize(message)
        except SerializingError as exc:
            self.log.error('Signal %s: dropped undecodable microagent 1.9 message: %s', name, exc)
            return name, None
        if signal.mismatch(args) is not None:
            log_problems(self.log, self.complaints, signal, args)
        # 'w' marks the 1.9 format: the response goes back in it.
        return name, {'s': sender, 'a': args, 'c': request, 'w': MICROAGENT1}

    async def _traced(self, receiver: Receiver, envelope: dict[str, Any]) -> None:
        """:meth:`_run` in the telemetry's span of the receiver's run."""
        telemetry = self.telemetry
        if telemetry is None:  # switched off since the signal arrived
            await self._run(receiver, envelope)
            return
        rpc = bool(envelope.get('c') and (envelope.get('r') or envelope.get('w')))
        with telemetry.receiving(self.dsn, receiver.signal.name, receiver.key, envelope.get('h'), rpc):
            await self._run(receiver, envelope)

    async def _run(self, receiver: Receiver, envelope: dict[str, Any]) -> None:
        """Run *receiver* on one signal (in a context of its own: see :mod:`microagent._lane`)."""
        headers = envelope.get('h')
        if headers:
            _HEADERS.set(user_headers(headers) if isinstance(headers, dict) else NO_HEADERS)
        set_handler(receiver.key)
        params = receiver.params
        kwargs = None
        if not params.takes_all:  # the usual **kwargs handler takes any signal as it is
            kwargs = params.fit({'signal': receiver.signal, 'sender': envelope.get('s'), **envelope['a']})
            if kwargs is None:
                self._skipped(receiver, envelope['a'])
                return
        try:
            if kwargs is None:
                running = receiver.handler(signal=receiver.signal, sender=envelope.get('s'), **envelope['a'])
            else:
                running = receiver.handler(**kwargs)
            if type(running) is CoroutineType:
                result = await within(running, receiver.timeout)
            else:  # an awaitable of another kind: the general timeout
                async with asyncio.timeout(receiver.timeout):
                    result = await running
        except Exception as exc:
            self.stats.failed[receiver.key] += 1
            if self.telemetry is not None:
                self.telemetry.failed(exc)
            self.log.exception('Receiver %s failed on signal %s', receiver.key, receiver.signal.name)
            return
        self.stats.handled[receiver.key] += 1
        if envelope.get('c') and (envelope.get('r') or envelope.get('w')):
            await self._respond(receiver, envelope, result)

    def _skipped(self, receiver: Receiver, args: dict[str, Any]) -> None:
        missing = receiver.params.missing({'signal': None, 'sender': None, **args})
        if self.complaints.first((receiver.key, receiver.signal.name, tuple(missing))):
            self.log.error('Receiver %s skipped signal %s: it requires %s, not received (logged once)',
                           receiver.key, receiver.signal.name, missing)

    async def _respond(self, receiver: Receiver, envelope: dict[str, Any], result: Any) -> None:
        codec = get_codec(receiver.signal.jsonlib)
        try:
            if envelope.get('w') is MICROAGENT1:
                # 1.9's answer: the result alone, on PREFIX:response:<our uid>#<request id>.
                channel = f'{self.prefix}:response:{self.uid}#{envelope["c"]}'
                await self.send(channel, codec.dumps({receiver.key: result}))
                return
            response: dict[str, Any] = {'c': envelope['c'], 'r': {receiver.key: result}}
            if self.telemetry is not None:
                response['h'] = self.telemetry.carrier()  # the responder's span, for the caller to link to
            await self.send(envelope['r'], codec.dumps(response))
        except Exception:
            self.log.exception('Receiver %s: cannot send the RPC response', receiver.key)

    def _on_response(self, channel: str, message: str | bytes) -> None:
        corr = channel.partition('#')[2]  # microagent 1.9's response: the id on the channel, the result alone
        try:
            response = get_codec('json').loads(message)
            if corr:
                response = {'c': corr, 'r': response}
            inbox = self.pending_calls.get(response['c'])
            if not isinstance(response.get('r'), dict):
                raise KeyError('r')
        except (SerializingError, KeyError, TypeError, AttributeError):
            self.log.error('Dropped a malformed RPC response')
            return
        if inbox is not None:
            inbox.put_nowait(response)
