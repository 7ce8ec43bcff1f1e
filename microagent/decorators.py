"""Decorators that mark agent methods as handlers.

They only attach a spec to the function; :class:`microagent.MicroAgent`
collects the specs per class when the class is created. Bad arguments raise
:class:`ConfigurationError` (a ValueError) at decoration time.

    class Agent(MicroAgent):
        @on('pre_start')
        async def setup(self): ...

        @periodic(period=5)
        async def refresh_cache(self): ...

        @cron('0 */4 * * *')
        async def send_report(self): ...

        @receiver(signals.user_updated, signals.user_deleted)
        async def send_notification(self, signal, sender, **kwargs): ...

        @consumer(queues.mailer, timeout=30)
        async def send_emails(self, **kwargs): ...
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .delivery import EFFECTS_KEYWORD, Effects
from .exceptions import ConfigurationError
from .queue import Queue
from .schedule import Cron
from .signal import Signal

__all__ = ['ConsumerSpec', 'CronSpec', 'HookSpec', 'PeriodicSpec', 'ReceiverSpec',
           'consumer', 'cron', 'on', 'periodic', 'receiver', 'specs_of']

F = TypeVar('F', bound=Callable[..., Any])
HOOKS = ('pre_start', 'post_start', 'pre_stop', 'server')
MARK = '__microagent__'


@dataclass(frozen=True)
class HookSpec:
    event: str


@dataclass(frozen=True)
class PeriodicSpec:
    period: float
    timeout: float
    start_after: float
    overlap: bool = False
    jitter: float = 0.0
    singleton: bool = False
    catch_up: bool = False


@dataclass(frozen=True)
class CronSpec:
    cron: Cron
    timeout: float
    overlap: bool = False
    singleton: bool = False
    catch_up: bool = False


@dataclass(frozen=True)
class ReceiverSpec:
    signals: tuple[Signal, ...]
    timeout: float


@dataclass(frozen=True)
class ConsumerSpec:
    queue: Queue
    timeout: float
    dto_class: Any
    dto_name: str | None
    options: tuple[tuple[str, Any], ...]


Spec = HookSpec | PeriodicSpec | CronSpec | ReceiverSpec | ConsumerSpec


def specs_of(func: Any) -> tuple[Spec, ...]:
    """The specs attached to *func* by these decorators."""
    return tuple(getattr(func, MARK, ()))


def _mark(spec: Spec, *, need_async: bool = True) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        if not callable(func):
            raise ConfigurationError(f'{type(spec).__name__}: can decorate only functions')
        if need_async and not inspect.iscoroutinefunction(func):
            raise ConfigurationError(f'{func.__qualname__}: must be an async function')
        setattr(func, MARK, (*specs_of(func), spec))
        return func
    return decorate


def _positive(kind: str, **values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigurationError(f'{kind}: {name} must be a positive number, got {value!r}')


def on(event: str) -> Callable[[F], F]:
    """Run the method on an agent life-cycle event: pre_start, post_start, pre_stop or server.

    Not run: a fragment of an agent class body (its declarations are the reader's).
    >>> @on('pre_start')                   # doctest: +SKIP
    ... async def setup(self): ...
    """
    if event not in HOOKS:
        raise ConfigurationError(f'on: unknown event {event!r}, expected one of {HOOKS}')
    return _mark(HookSpec(event), need_async=event == 'server')


def periodic(period: float, timeout: float = 1, start_after: float = 0, *, overlap: bool = False,
             jitter: float = 0, singleton: bool = False, catch_up: bool = False) -> Callable[[F], F]:
    """Run the method every *period* seconds (fixed rate), cancelled after *timeout*.

    Ticks come from the schedule, not from the end of the last run (no drift);
    the first one is *start_after* seconds after start. A tick due while the
    previous run goes on is skipped (``overlap=True`` runs it anyway); a run
    is delayed by a random ``0..jitter`` seconds; errors are logged and the
    schedule goes on. Ticks missed while the process was stalled are skipped,
    or run once with ``catch_up=True``. ``singleton=True``: each tick runs in
    one replica only, through a lease on the agent's backend (ticks then sit on
    multiples of *period* since the epoch). See docs/scheduling.md.

    A plain (sync) method runs in a worker thread, so it never blocks the event
    loop. A thread cannot be cancelled: at the timeout the run is logged as
    timed out and later ticks are skipped until the thread returns.

    Not run: a fragment of an agent class body (its declarations are the reader's).
    >>> @periodic(period=5, timeout=10, start_after=1)   # doctest: +SKIP
    ... async def refresh_cache(self): ...
    """
    _positive('periodic', period=period, timeout=timeout)
    for name, value in (('start_after', start_after), ('jitter', jitter)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(f'periodic: {name} must be a number >= 0, got {value!r}')
    return _mark(PeriodicSpec(float(period), float(timeout), float(start_after),
                              bool(overlap), float(jitter), bool(singleton), bool(catch_up)), need_async=False)


def cron(spec: str, timeout: float = 1, *, timezone: str = 'UTC', overlap: bool = False,
         singleton: bool = False, catch_up: bool = False) -> Callable[[F], F]:
    """Run the method on a cron schedule in the IANA *timezone*, cancelled after *timeout*.

    *spec* has 5 fields (minute hour day-of-month month day-of-week), 6 with
    seconds first, or is one of ``@hourly @daily @weekly @monthly @yearly``.
    An invalid spec raises :class:`ConfigurationError` (a ``ValueError``)
    naming the bad field. DST rules, ``overlap``, ``catch_up``,
    ``singleton`` and sync methods: see :func:`periodic` and docs/scheduling.md.

    Not run: a fragment of an agent class body (its declarations are the reader's).
    >>> @cron('0 */4 * * *', timeout=60, timezone='Europe/Berlin')   # doctest: +SKIP
    ... async def send_report(self): ...
    """
    _positive('cron', timeout=timeout)
    return _mark(CronSpec(Cron(spec, timezone=timezone), float(timeout), bool(overlap), bool(singleton),
                          bool(catch_up)), need_async=False)


def receiver(*signals: Signal, timeout: float = 60) -> Callable[[F], F]:
    """Subscribe the method to one or more signals.

    Not run: a fragment of an agent class body (its declarations are the reader's).
    >>> @receiver(signals.user_updated, signals.user_deleted)   # doctest: +SKIP
    ... async def send_notification(self, signal, sender, **kwargs): ...
    """
    if not signals or not all(isinstance(s, Signal) for s in signals):
        raise ConfigurationError(f'receiver: expected Signal declarations, got {signals!r}')
    _positive('receiver', timeout=timeout)
    return _mark(ReceiverSpec(tuple(signals), float(timeout)))


def _check_counts(options: dict[str, Any]) -> None:
    for key in ('max_inflight', 'max_attempts'):
        if key in options:
            _positive('consumer', **{key: options[key]})
    prefetch = options.get('prefetch', 0)
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise ConfigurationError(f'consumer: prefetch must be an int >= 0, got {prefetch!r}')


def consumer(queue: Queue, timeout: float = 60, dto_class: Any = None, dto_name: str | None = None,
             **options: Any) -> Callable[[F], F]:
    """Binding for consuming messages from queue; only one handler per queue.

    ``dto_class`` (a dataclass, a pydantic model or any callable) is built from
    the message and passed as ``dto_name`` (default ``dto``). Options:
    ``max_inflight``, ``prefetch`` (messages read ahead beside the running
    handlers; memory and Kafka: ``max_inflight`` by default, others 0),
    ``max_attempts``, ``retry_delay``,
    ``effects`` and backend-specific ones. ``effects`` (e.g. ``PostgresEffects(dsn)``, see
    docs/exactly-once.md) runs the handler in a transaction passed as ``tx``.

    Not run: a fragment of an agent class body (its declarations are the reader's).
    >>> @consumer(queues.mailer, timeout=30, dto_class=MyDTO, dto_name='obj')  # doctest: +SKIP
    ... async def handle(self, obj: MyDTO, **kwargs): ...
    >>> @consumer(queues.orders, effects=PostgresEffects('postgresql://localhost/app'))  # doctest: +SKIP
    ... async def record(self, tx, order_id: int): ...
    """
    if not isinstance(queue, Queue):
        raise ConfigurationError(f'consumer: expected a Queue declaration, got {queue!r}')
    _positive('consumer', timeout=timeout)
    if dto_class is not None and not callable(dto_class):
        raise ConfigurationError('consumer: dto_class must be callable')
    if dto_name is not None and (not isinstance(dto_name, str) or not dto_name.isidentifier()):
        raise ConfigurationError(f'consumer: dto_name must be an identifier, got {dto_name!r}')
    _check_counts(options)
    mark = _mark(ConsumerSpec(queue, float(timeout), dto_class, dto_name, tuple(sorted(options.items()))))
    if options.get('effects') is None:
        return mark
    if not isinstance(options['effects'], Effects):
        raise ConfigurationError(f'consumer: effects must have run, start and stop (e.g. PostgresEffects), '
                                 f'got {type(options["effects"]).__name__}')

    def decorate(func: F) -> F:
        # Checked here, not at the first message: a handler that cannot take the transaction is a typo.
        if callable(func) and EFFECTS_KEYWORD not in inspect.signature(func).parameters:
            raise ConfigurationError(f'{func.__qualname__}: a consumer with effects takes the transaction as '
                                     f'an argument named {EFFECTS_KEYWORD!r}')
        return mark(func)
    return decorate
