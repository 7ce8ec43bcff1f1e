"""The load: a producer that sends at a steady rate and writes the outcome of every send to the ledger.

A send that returned is ``confirmed`` (the backend's contract: the broker has
it); one that raised or ran out of time is ``indeterminate`` (it may or may
not be there: it is never counted as lost, and a handling of it is not
unexpected); one refused before anything left the process is ``failed``.

>>> producer = Producer(broker, queue, ledger, rate=50)   # doctest: +SKIP
>>> tasks.spawn(producer.run()); ...; producer.stop()      # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from microagent.broker import AbstractQueueBroker
from microagent.exceptions import ConfigurationError, SerializingError

from .ledger import CONFIRMED, FAILED, INDETERMINATE, Ledger

__all__ = ['Producer']


class Producer:
    """Sends ``{"mid": "m<n>", "mode": "ok"}`` at *rate* per second; every ``slow_every``-th one is slow."""

    def __init__(self, broker: AbstractQueueBroker, queue: str, ledger: Ledger, *, rate: float,
                 slow_every: int = 10, slow_ms: int = 300, send_timeout: float = 5.0) -> None:
        self.broker = broker
        self.queue = queue
        self.ledger = ledger
        self.rate = rate
        self.slow_every = slow_every
        self.slow_ms = slow_ms
        self.send_timeout = send_timeout
        self.sent = 0
        self.running = True
        self.sent_at: dict[str, float] = {}

    def __repr__(self) -> str:
        return f'<Producer {self.queue} {self.rate}/s sent={self.sent}>'

    def stop(self) -> None:
        self.running = False

    async def run(self) -> None:
        """Send until stopped, on a fixed schedule (a slow send delays the next ones, it does not pile up)."""
        period = 1 / self.rate
        next_at = time.monotonic()
        while self.running:
            message: dict[str, Any] = {'mid': f'm{self.sent}', 'mode': 'ok'}
            if self.slow_every and self.sent % self.slow_every == self.slow_every - 1:
                message.update(mode='slow', ms=self.slow_ms)
            self.sent += 1
            await self.send(message)
            next_at = max(next_at + period, time.monotonic() - period)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # pacing the load, not synchronising

    async def send(self, message: dict[str, Any]) -> str:
        """Send one message and record the outcome; the status."""
        return await self.send_raw(message['mid'], self.broker.catalog.queue(self.queue).serialize(message),
                                   mode=message.get('mode', 'ok'))

    async def send_raw(self, mid: str, raw: str, **extra: Any) -> str:
        """Send a raw (already serialized, maybe malformed) body and record the outcome; the status."""
        self.sent_at[mid] = time.time()
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.broker.send(self.queue, raw)
        except (ConfigurationError, SerializingError) as exc:
            status = FAILED
            extra['error'] = type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - any other failure leaves the outcome unknown
            status = INDETERMINATE
            extra['error'] = type(exc).__name__
        else:
            status = CONFIRMED
        self.ledger.send(mid, status, **extra)
        return status
