"""Capped exponential backoff with full jitter: the one delay rule of every reconnect and restart loop.

Attempt *n* (from 0) waits a uniformly random time in ``[floor, min(cap, base * 2**n)]``. The jitter
is "full" (down to the floor, not a few per cent around the ceiling) so that a fleet of processes that
lost the same broker at the same moment does not come back in lock-step and hit it all at once.
"""
from __future__ import annotations

import random
from collections.abc import Callable

from .exceptions import ConfigurationError

__all__ = ['Backoff', 'ceiling']

_MAX_EXPONENT = 62  # 2**62 * any sane base is far past every cap; keeps the float finite


def ceiling(base: float, cap: float, attempt: int) -> float:
    """The largest delay of attempt *attempt* (from 0): ``min(cap, base * 2**attempt)``.

    >>> ceiling(0.1, 2.0, 0), ceiling(0.1, 2.0, 3), ceiling(0.1, 2.0, 10)
    (0.1, 0.8, 2.0)
    """
    return min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))


class Backoff:
    """Delays for one retry loop: :meth:`next` grows until :meth:`reset` (after a success).

    *rand* returns a float in ``[0, 1)`` (``random.random`` by default; tests pass a fixed one).
    *floor* is the smallest delay (a loop that must not spin); a *cap* below
    *base* makes every ceiling the cap.

    >>> backoff = Backoff(0.1, 1.0, rand=lambda: 1.0)
    >>> [backoff.next() for _ in range(6)]
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    >>> backoff.reset()
    >>> Backoff(0.1, 1.0, rand=lambda: 0.5).next()
    0.05
    """

    __slots__ = ('attempt', 'base', 'cap', 'floor', 'rand')

    def __init__(self, base: float, cap: float, *, floor: float = 0.0,
                 rand: Callable[[], float] = random.random) -> None:
        if min(base, cap, floor) < 0:
            raise ConfigurationError(f'backoff delays cannot be negative: base={base}, cap={cap}, floor={floor}')
        self.base = base
        self.cap = cap
        self.floor = floor
        self.rand = rand
        self.attempt = 0

    def __repr__(self) -> str:
        return f'<Backoff base={self.base} cap={self.cap} attempt={self.attempt}>'

    def delay(self, attempt: int) -> float:
        """A jittered delay for attempt *attempt* (from 0), without moving this loop's count."""
        return max(self.floor, ceiling(self.base, self.cap, attempt) * self.rand())

    def next(self) -> float:
        """The delay before the next attempt; each call raises the ceiling (up to the cap)."""
        value = self.delay(self.attempt)
        self.attempt += 1
        return value

    def reset(self) -> None:
        """Back to the first delay (the connection worked)."""
        self.attempt = 0
