"""The chain under test in the effects fault run: two consumer stages with effects and a relay, run by ``marun``.

    producer -> REL_QUEUE -> FirstStage  (effects: a row in <prefix>effect_a, a send to REL_QUEUE_out)
                                 outbox -> RelayAgent (publishes; may SIGKILL itself right after a publish)
                         REL_QUEUE_out -> SecondStage (effects: a row in <prefix>effect_b)

The effect tables have no unique key: a message whose effect happened twice shows as two rows. Every
handler run (committed or not) is a ``begin`` line of the ledger. Configuration from the environment
the driver sets: ``REL_PG_DSN`` (through the PostgreSQL fault proxy), ``REL_PG_PREFIX``, ``REL_QUEUE``,
``REL_LEDGER``, ``REL_RELAY_DIE`` (the chance that the relay kills itself after a publish, before its
commit: the case the receiving inbox deduplicates).

>>> # marun reliability.effects_settings  (with REL_* in the environment)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Coroutine
from typing import Any

from microagent import MicroAgent, Queue, consumer, on
from microagent.effects import PostgresEffects, Relay
from microagent.tools.amqp import AMQPBroker
from microagent.tools.kafka import KafkaBroker
from microagent.tools.nats import NATSBroker
from microagent.tools.redis import RedisBroker

from .ledger import Ledger

__all__ = ['FirstStage', 'RelayAMQPBroker', 'RelayAgent', 'RelayKafkaBroker', 'RelayNATSBroker', 'RelayRedisBroker',
           'SecondStage']

QUEUE = Queue(name=os.environ.get('REL_QUEUE', 'reliability_effects'))
QUEUE_OUT = Queue(name=f'{QUEUE.name}_out')
PREFIX = os.environ.get('REL_PG_PREFIX', 'rel_')
LEDGER_DIR = os.environ.get('REL_LEDGER', '')
# A PostgreSQL restart or a cut fails every transaction in flight: enough attempts (with the suite's short
# backoff) to ride out an outage of a few seconds instead of dead-lettering; the deployment choice of a
# consumer whose database may restart.
ATTEMPTS = 60
EFFECTS = PostgresEffects(os.environ.get('REL_PG_DSN', 'postgresql://postgres@127.0.0.1:5432/postgres'),
                          prefix=PREFIX, relay=False, max_size=4, statement_timeout=5.0, connect_timeout=5.0)


class _Ledgered(MicroAgent):
    ledger: Ledger

    @on('pre_start')
    def open_ledger(self) -> None:
        self.ledger = Ledger(LEDGER_DIR, type(self).__name__.lower(), fsync=False)

    @on('pre_stop')
    def close_ledger(self) -> None:
        self.ledger.close()


class FirstStage(_Ledgered):
    """Records effect A and sends the message on, in one transaction."""

    @consumer(QUEUE, timeout=30, effects=EFFECTS, max_attempts=ATTEMPTS)
    async def handle(self, tx: Any, mid: str, mode: str = 'ok', ms: int = 0, **_: Any) -> None:
        self.ledger.write({'k': 'run_a', 'id': mid, 'pid': self.ledger.pid})
        if mode == 'slow':
            await asyncio.sleep(ms / 1000)  # the work itself: a handler that takes a while
        await tx.execute(f'INSERT INTO {PREFIX}effect_a (mid, pid) VALUES ($1, $2)', mid, os.getpid())
        await getattr(tx.broker, QUEUE_OUT.name).send({'mid': mid})


class SecondStage(_Ledgered):
    """Records effect B for what the relay delivered."""

    @consumer(QUEUE_OUT, timeout=30, effects=EFFECTS, max_attempts=ATTEMPTS)
    async def handle(self, tx: Any, mid: str, **_: Any) -> None:
        self.ledger.write({'k': 'run_b', 'id': mid, 'pid': self.ledger.pid})
        await tx.execute(f'INSERT INTO {PREFIX}effect_b (mid, pid) VALUES ($1, $2)', mid, os.getpid())


class RelayAgent(MicroAgent):
    """Runs a relay of the outbox through its broker (one of the ``Relay*Broker`` classes below)."""

    relay: Relay

    @on('post_start')
    async def start_relay(self) -> None:
        self.relay = EFFECTS.relay(self.broker, poll_interval=0.5, publish_timeout=5.0, max_backoff=1.0)
        await self.relay.start()

    @on('pre_stop')
    async def stop_relay(self) -> None:
        await self.relay.stop()
        await EFFECTS.close()


class _DiesAfterSend:
    """A broker whose process may SIGKILL itself right after a send returned (published, not yet deleted)."""

    chance = float(os.environ.get('REL_RELAY_DIE', '0'))

    def send(self, name: str, message: str | bytes, **kwargs: Any) -> Coroutine[Any, Any, None]:
        return self._then_maybe_die(super().send(name, message, **kwargs))  # type: ignore[misc]

    async def _then_maybe_die(self, sending: Coroutine[Any, Any, None]) -> None:
        await sending
        if self.chance and random.random() < self.chance:  # noqa: S311 - a fault, not crypto
            os.kill(os.getpid(), signal.SIGKILL)


class RelayRedisBroker(_DiesAfterSend, RedisBroker):
    """RedisBroker for the relay agent."""


class RelayAMQPBroker(_DiesAfterSend, AMQPBroker):
    """AMQPBroker for the relay agent."""


class RelayKafkaBroker(_DiesAfterSend, KafkaBroker):
    """KafkaBroker for the relay agent."""


class RelayNATSBroker(_DiesAfterSend, NATSBroker):
    """NATSBroker for the relay agent."""
