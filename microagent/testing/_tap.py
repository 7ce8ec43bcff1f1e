"""The harness's tap on its memory hub: records into the journal, applies the faults, keeps virtual time."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence

from ..tools.memory import Tap, Timer
from ._clock import VirtualClock
from ._faults import Faults
from ._journal import Journal

__all__ = ['HarnessTap']

RESPONSE = ':response:'


class HarnessTap(Tap):
    """Counts what is in transit (due on the next loop turns) and what waits on the virtual clock."""

    def __init__(self, journal: Journal, faults: Faults, clock: VirtualClock) -> None:
        self.journal = journal
        self.faults = faults
        self.clock = clock
        self.in_transit = 0
        self.delayed: collections.Counter[str] = collections.Counter()

    def sent(self, queue: str, body: str) -> Sequence[float]:
        return self._send('queue', 'sent', queue, body)

    def signalled(self, channel: str, body: str) -> Sequence[float]:
        if RESPONSE in channel:
            self.journal.add('response', channel.rsplit(':', 1)[-1], body)
            return (0.0,)
        return self._send('signal', 'signal', channel.rsplit(':', 1)[-1], body)

    def _send(self, kind: str, record: str, name: str, body: str) -> Sequence[float]:
        try:
            copies = self.faults.on_send(kind, name)
        except Exception:
            self.journal.add('send_failed', name, body)
            raise
        self.journal.add(record, name, body)
        if not copies:
            self.journal.add('dropped', name, body)
        return copies

    def settled(self, queue: str, outcome: str, body: str, attempt: int, error: str | None) -> int:
        self.journal.add(outcome, queue, body, attempt, error)
        return self.faults.on_ack(queue) if outcome == 'ack' else 0

    def call_later(self, queue: str | None, delay: float, callback: Callable[[], None]) -> Timer:
        if delay <= 0:
            # Due on the next loop turn: work in progress until it ran.
            self.in_transit += 1

            def soon() -> None:
                self.in_transit -= 1
                callback()
            return asyncio.get_running_loop().call_soon(soon)
        key = queue or ''
        self.delayed[key] += 1

        def due() -> None:
            self.delayed[key] -= 1
            callback()
        return self.clock.call_later(delay, due)
