"""The agent under test: a consumer that writes every handling to the ledger, run by ``marun``.

Configuration comes from the environment (the launcher passes it to every
worker process): ``REL_QUEUE`` (queue name), ``REL_LEDGER`` (ledger
directory). Messages are ``{"mid": "m42", "mode": "ok"}`` where ``mode`` is

* ``ok``: handled at once; ``slow``: takes ``ms`` milliseconds;
* ``poison``: always raises (dead-lettered after ``max_attempts``);
* ``kill-once``: the first process to see it SIGKILLs itself (a marker file
  remembers it), the next attempt succeeds;
* ``kill-always``: SIGKILLs every process that handles it.

The broker classes here (``LedgerRedisBroker``...) are the real backends
whose runner also tells the handler the attempt number, so the ledger holds
the attempt the broker counted.

>>> # marun reliability.group_settings  (with REL_* in the environment)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import signal
from pathlib import Path
from typing import Any

from microagent import MicroAgent, Queue, consumer, on
from microagent.delivery import ConsumerRunner, Delivery
from microagent.tools.amqp import AMQPBroker
from microagent.tools.kafka import KafkaBroker
from microagent.tools.nats import NATSBroker
from microagent.tools.redis import RedisBroker

from .ledger import Ledger

__all__ = ['LedgerAMQPBroker', 'LedgerAgent', 'LedgerKafkaBroker', 'LedgerNATSBroker', 'LedgerRedisBroker', 'QUEUE']

ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar('attempt', default=1)
QUEUE = Queue(name=os.environ.get('REL_QUEUE', 'reliability_default'))
LEDGER_DIR = os.environ.get('REL_LEDGER', '')


class _Runner(ConsumerRunner):
    async def _process(self, delivery: Delivery) -> None:
        # Each delivery runs in a task of its own: the variable is seen by this handler call only.
        ATTEMPT.set(delivery.attempt)
        await super()._process(delivery)


class _LedgerRunnerMixin:
    _runners: dict[str, ConsumerRunner]
    _bindings: dict[str, Any]

    def _install_runner(self, name: str) -> None:
        self._runners[name] = _Runner(self, self._bindings[name])  # type: ignore[arg-type]


class LedgerRedisBroker(_LedgerRunnerMixin, RedisBroker):
    """RedisBroker whose handlers learn the attempt number."""

    async def bind(self, name: str) -> None:
        self._install_runner(name)
        await super().bind(name)


class LedgerAMQPBroker(_LedgerRunnerMixin, AMQPBroker):
    """AMQPBroker whose handlers learn the attempt number."""

    async def bind(self, name: str) -> None:
        self._install_runner(name)
        await super().bind(name)


class LedgerKafkaBroker(_LedgerRunnerMixin, KafkaBroker):
    """KafkaBroker whose handlers learn the attempt number."""

    async def bind(self, name: str) -> None:
        self._install_runner(name)
        await super().bind(name)


class LedgerNATSBroker(_LedgerRunnerMixin, NATSBroker):
    """NATSBroker whose handlers learn the attempt number."""

    async def bind(self, name: str) -> None:
        self._install_runner(name)
        await super().bind(name)


class LedgerAgent(MicroAgent):
    """Handles the test queue and records begin and end of every attempt in its ledger file."""

    ledger: Ledger

    @on('pre_start')
    def open_ledger(self) -> None:
        # No fsync by default: a SIGKILL keeps what was written (the page cache outlives the process), and an
        # fsync under a busy disk can block the event loop for seconds, which would distort what is measured.
        self.ledger = Ledger(LEDGER_DIR, 'worker', fsync=os.environ.get('REL_FSYNC', '0') == '1')

    @consumer(QUEUE, timeout=60)
    async def handle(self, mid: str, mode: str = 'ok', ms: int = 0, **_: Any) -> None:
        attempt = ATTEMPT.get()
        started = self.ledger.begin(mid, attempt)
        if mode == 'slow':
            await asyncio.sleep(ms / 1000)  # the work itself: a handler that takes a while
        elif mode == 'poison':
            raise ValueError(f'poison message {mid}')
        elif mode in ('kill-once', 'kill-always'):
            self._maybe_die(mid, always=mode == 'kill-always')
        self.ledger.handled(mid, attempt, started)

    def _maybe_die(self, mid: str, *, always: bool) -> None:
        marker = Path(LEDGER_DIR) / f'killed-{mid}'
        if always or not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    @on('pre_stop')
    def close_ledger(self) -> None:
        self.ledger.close()

