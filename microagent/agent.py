"""MicroAgent: a service that talks only to a signal bus and a queue broker.

    class EmailAgent(MicroAgent):
        @consumer(queues.mailer)
        async def send_email(self, **kwargs):
            await self.broker.email_sent.send({'user_id': kwargs['user_id']})

    agent = EmailAgent(broker=RedisBroker('redis://localhost/7'))
    await agent.start()
    ...
    await agent.stop()
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from . import _running
from ._shared import Shared
from ._tasks import TaskSet
from .broker import AbstractQueueBroker, Consumer
from .bus import AbstractSignalBus, Receiver
from .decorators import ConsumerSpec, CronSpec, HookSpec, PeriodicSpec, ReceiverSpec, Spec, specs_of
from .delivery import Effects
from .exceptions import ConfigurationError, MissConfig, ServerInterrupt
from .lease import Lease, lease_for
from .schedule import ScheduledTask, ThreadedJob, lease_ttl
from .timer import CRONTask, PeriodicTask

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ['MicroAgent', 'MissConfig']


class MicroAgent:
    """Base class of agents; handlers are declared with decorators and collected per class.

    Arguments: ``bus`` (a signal bus, needed by ``@receiver``), ``broker`` (a
    queue broker, needed by ``@consumer``), ``log`` and free-form ``settings``.
    ``telemetry`` (a :class:`microagent.telemetry.Telemetry`) traces the
    agent's schedules and hooks; by default the broker's or the bus's.
    """

    _handlers: ClassVar[tuple[tuple[str, Spec], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: list[tuple[str, Spec]] = []
        for name in dir(cls):
            attr = inspect.getattr_static(cls, name, None)
            found.extend((name, spec) for spec in specs_of(attr))
        queues = [spec.queue.name for _, spec in found if isinstance(spec, ConsumerSpec)]
        twice = sorted({q for q in queues if queues.count(q) > 1})
        if twice:
            raise ConfigurationError(f'{cls.__name__}: more than one consumer of queue(s) {twice}')
        cls._handlers = tuple(found)

    def __init__(self, bus: Any = None, broker: Any = None, log: logging.Logger | None = None,
                 settings: dict[str, Any] | None = None, telemetry: Telemetry | None = None) -> None:
        self.bus = bus
        self.broker = broker
        self.telemetry = telemetry or _telemetry_of(broker) or _telemetry_of(bus)
        if self.telemetry is not None:
            self.telemetry.watch(self)
        self.log = log or logging.getLogger(f'microagent.{type(self).__name__}')
        self.settings = settings or {}
        self.hooks: dict[str, list[Callable[[], Any]]] = {'pre_start': [], 'post_start': [], 'pre_stop': [],
                                                          'server': []}
        self.receivers: list[Receiver] = []
        self.consumers: list[Consumer] = []
        self.schedules: list[ScheduledTask] = []
        self._receiver_tasks = TaskSet(f'{type(self).__name__} receivers')
        self._loops = TaskSet(f'{type(self).__name__} schedules')
        self._servers = TaskSet(f'{type(self).__name__} servers')
        self._serving: asyncio.Task[Any] | None = None
        self._effects_started: list[Effects] = []
        self.started = False
        for name, spec in self._handlers:
            self._bind_spec(name, spec)
        _check_backend(self, 'bus')
        _check_backend(self, 'broker')

    def __repr__(self) -> str:
        return f'<{type(self).__name__} bus={self.bus!r} broker={self.broker!r}>'

    @property
    def periodic_tasks(self) -> list[PeriodicTask]:
        """The agent's ``@periodic`` methods as scheduled tasks."""
        return [t for t in self.schedules if isinstance(t, PeriodicTask)]

    @property
    def cron_tasks(self) -> list[CRONTask]:
        """The agent's ``@cron`` methods as scheduled tasks."""
        return [t for t in self.schedules if isinstance(t, CRONTask)]

    def _bind_spec(self, name: str, spec: Spec) -> None:
        method = getattr(self, name)
        label = f'{type(self).__name__}.{name}'
        if isinstance(spec, HookSpec):
            self.hooks[spec.event].append(method)
        elif isinstance(spec, ReceiverSpec):
            self.receivers.extend(Receiver(self, method, s, spec.timeout, self._receiver_tasks) for s in spec.signals)
        elif isinstance(spec, ConsumerSpec):
            self.consumers.append(Consumer(self, method, spec.queue, spec.timeout, dict(spec.options),
                                           spec.dto_class, spec.dto_name))
        elif isinstance(spec, PeriodicSpec | CronSpec):
            self.schedules.append(self._scheduled(label, method, spec))

    def _scheduled(self, label: str, method: Callable[[], Any], spec: PeriodicSpec | CronSpec) -> ScheduledTask:
        if not inspect.iscoroutinefunction(method):
            method = ThreadedJob(method, label, self.log)
        task: ScheduledTask
        if isinstance(spec, PeriodicSpec):
            task = PeriodicTask(label, method, spec.timeout, self.log, period=spec.period, jitter=spec.jitter,
                                start_after=spec.start_after)
        else:
            task = CRONTask(label, method, spec.timeout, self.log, cron=spec.cron)
        task.overlap, task.catch_up, task.singleton = spec.overlap, spec.catch_up, spec.singleton
        task.telemetry = self.telemetry
        if spec.singleton:
            task.lease = self._lease(label, lease_ttl(task.interval()))
        return task

    def _lease(self, label: str, ttl: float) -> Lease:
        # The lease lives on the agent's own backend, connecting as it does (TLS, SASL); it opens its
        # connection only when the schedule starts.
        found: list[tuple[object, AbstractQueueBroker | AbstractSignalBus | None]] = [
            (self.settings.get('lease_dsn'), None), (getattr(self.broker, 'dsn', None), self.broker),
            (getattr(self.bus, 'dsn', None), self.bus)]
        dsn, backend = next(((d, b) for d, b in found if isinstance(d, str)), (None, None))
        if not isinstance(dsn, str):
            raise ConfigurationError(f'{label}: singleton=True needs a bus or broker with a DSN '
                                     "(or settings={'lease_dsn': 'memory://'} with mocks)")
        prefix = self.settings.get('lease_prefix', 'microagent.lease')
        inherited = backend.lease_options() if isinstance(backend, AbstractQueueBroker | AbstractSignalBus) else {}
        options = {**inherited, **(self.settings.get('lease_options') or {})}  # e.g. Kafka's session_timeout
        return lease_for(dsn, f'{prefix}.{label}', ttl, **options)

    async def start(self, enable_periodic_tasks: bool = True, enable_receiving_signals: bool = True,
                    enable_consuming_messages: bool = True, enable_servers_running: bool = True) -> None:
        """Run pre_start hooks, bind receivers and consumers, start schedules, run post_start hooks.

        Then, if there are ``@on('server')`` sub-services, run them until they
        end (``ServerInterrupt`` ends one gracefully); otherwise return.

        A started agent stays alive until :meth:`stop`, even if nobody holds
        it (``asyncio.create_task(Agent(...).start())``): see ``microagent._running``.
        """
        # First thing, before any await: a start task nobody holds may be collected at its first await.
        _running.keep(self)
        try:
            await self._start(enable_periodic_tasks, enable_receiving_signals, enable_consuming_messages)
        except BaseException:
            if not self.started:
                _running.release(self)
            raise
        if enable_servers_running and self.hooks['server']:
            self._serving = asyncio.current_task()
            for server in self.hooks['server']:
                self._servers.spawn(self._serve(server), name=f'server {server.__name__}')
            await self._servers.drain(None)

    async def _start(self, enable_periodic_tasks: bool, enable_receiving_signals: bool,
                     enable_consuming_messages: bool) -> None:
        await self._run_hooks('pre_start')
        if enable_receiving_signals:
            await self.bind_receivers(self.receivers)
        if enable_consuming_messages:
            # Effects first: a consumer's first message may already need its database and relay.
            for effects in self._effects():
                await effects.start(self)
                self._effects_started.append(effects)
            await self.bind_consumers(self.consumers)
        if enable_periodic_tasks:
            for task in self.schedules:
                self._loops.spawn(task.run(), name=f'schedule {task.name}')
        self.started = True
        await self._run_hooks('post_start')

    async def bind_receivers(self, receivers: list[Receiver]) -> None:
        """Bind signal receivers to bus subscribers (``start`` does it)."""
        for receiver in receivers:
            await self.bus.bind_receiver(receiver)

    async def bind_consumers(self, consumers: list[Consumer]) -> None:
        """Bind message consumers to queues (``start`` does it)."""
        for consumer in consumers:
            await self.broker.bind_consumer(consumer)

    async def stop(self, timeout: float = 30.0, *, close: bool = True) -> None:
        """Stop intake, let in-flight handlers finish until *timeout*, run pre_stop hooks, close.

        Handlers still running at the deadline are cancelled; their messages are
        not acknowledged, so the broker delivers them again. With ``close``
        the bus and broker connections are closed (they reopen lazily if used),
        unless they are still in use: another agent's handlers are bound to
        them, or an ``async with broker:`` block holds them (the ownership
        rule, :mod:`microagent._shared`).
        """
        deadline = time.monotonic() + timeout
        await self._loops.cancel()
        if self.bus is not None and self.receivers:
            self.bus.unbind_receivers(self)
        cuts = await asyncio.gather(
            *(self.broker.unbind(c.queue.name, timeout) for c in self.consumers if self.started),
            self._receiver_tasks.drain(timeout),
            *(task.runs.drain(timeout) for task in self.schedules),
        )
        if any(cuts):
            self.log.warning('%s: %d handlers cut at the stop deadline', type(self).__name__, sum(cuts))
        await self._servers.drain(max(0.0, deadline - time.monotonic()) if self._serving else 0)
        while self._effects_started:
            await self._effects_started.pop().stop(self)
        self.started = False
        try:
            await self._run_hooks('pre_stop')
            if close:
                await _close(self.bus, self.broker)
        finally:
            _running.release(self)

    def ready(self) -> bool:
        """Whether the agent is started, its bus subscriptions live and every consumer connected and reading.

        False while a connection is lost (the backends reconnect by themselves); what ``/readyz`` reports.

        >>> MicroAgent().ready()   # not started
        False
        """
        if not self.started:
            return False
        if self.receivers and isinstance(self.bus, AbstractSignalBus) and not self.bus.connected():
            return False
        broker = self.broker
        return not isinstance(broker, AbstractQueueBroker) or all(broker.consuming(c.queue.name)
                                                                  for c in self.consumers)

    def _effects(self) -> list[Effects]:
        """The distinct ``effects=`` objects of this agent's consumers, in declaration order."""
        found: list[Effects] = []
        for consumer in self.consumers:
            effects = consumer.options.get('effects')
            if effects is not None and not any(effects is seen for seen in found):
                found.append(effects)
        return found

    async def _serve(self, server: Callable[[], Any]) -> None:
        try:
            await server()
        except ServerInterrupt:
            self.log.info('%s: server %s interrupted', type(self).__name__, server.__name__)
        except Exception:
            self.log.exception('%s: server %s failed', type(self).__name__, server.__name__)

    async def _run_hooks(self, event: str) -> None:
        for hook in self.hooks[event]:
            if self.telemetry is None or getattr(hook, '__self__', None) is not self:
                await _call(hook)
                continue
            # Only the agent's own hooks (bound methods) get a span, not callbacks others appended.
            with self.telemetry.running(f'{type(self).__name__}.{hook.__name__}', f'hook {event}'):
                await _call(hook)

    def info(self) -> dict[str, Any]:
        """A JSON-serialisable description of the agent's handlers and schedules."""
        def name(func: Any) -> str:
            return str(getattr(func, '__name__', func))
        return {
            'name': type(self).__name__,
            'hooks': {event: [name(h) for h in hooks] for event, hooks in self.hooks.items() if hooks},
            'receivers': [{'handler': name(r.handler), 'signal': r.signal.name, 'timeout': r.timeout}
                          for r in self.receivers],
            'consumers': [{'handler': name(c.handler), 'queue': c.queue.name, 'timeout': c.timeout,
                           'dto_class': name(c.dto_class) if c.dto_class else None,
                           'options': {k: v for k, v in c.options.items() if _jsonable(v)},
                           **({'effects': str(c.options['effects'])} if c.options.get('effects') else {})}
                          for c in self.consumers],
            'schedules': [task.info() for task in self.schedules],
        }


def _telemetry_of(backend: Any) -> Telemetry | None:
    # Only real buses and brokers: a mock answers any attribute name with a queue or signal.
    if isinstance(backend, AbstractQueueBroker | AbstractSignalBus):
        return backend.telemetry
    return None


async def _call(hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


_NEEDS: dict[str, tuple[str, type, str, str]] = {
    'bus': ('receivers', AbstractSignalBus, 'bind_receiver', 'signal bus'),
    'broker': ('consumers', AbstractQueueBroker, 'bind_consumer', 'queue broker'),
}


def _check_backend(agent: MicroAgent, kind: str) -> None:
    """MissConfig unless the agent's *kind* is a bus/broker (a subclass of the base, or any with its method: mocks)."""
    handlers, base, method, what = _NEEDS[kind]
    if not getattr(agent, handlers):
        return
    value, name = getattr(agent, kind), type(agent).__name__
    if value is None:
        raise MissConfig(f'{name} has {handlers} but no {kind}')
    if not isinstance(value, base) and not callable(getattr(value, method, None)):
        raise MissConfig(f'{name} has {handlers}: {kind} must be a {what} ({base.__name__}), got {value!r}')


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None))


async def _close(bus: Any, broker: Any) -> None:
    # The ownership rule (microagent._shared): a bus or broker still in use (another agent's handlers
    # bound, an ``async with`` block open) stays open. Objects without the rule (mocks) are closed.
    for backend in (bus, broker):
        if backend is not None and not (isinstance(backend, Shared) and backend.in_use):
            await _call_close(backend)


async def _call_close(backend: Any) -> None:
    result = backend.close()
    if inspect.isawaitable(result):
        await result


