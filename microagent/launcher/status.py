"""The status display: a live table on a TTY, plain log lines otherwise.

On a TTY the table (agent, pid, state, restarts, handled, failed) stays at
the bottom of the terminal and log lines scroll above it::

    AGENT      PID    STATE     RESTARTS  HANDLED  FAILED
    users      4242   running          0       12       0

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> display = Display(lambda: slots, table=False)    # doctest: +SKIP
>>> display.write('a log line')                      # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from .slot import Slot

__all__ = ['Display', 'rows']

log = logging.getLogger('microagent.launcher')
HEADER = ('AGENT', 'PID', 'STATE', 'RESTARTS', 'HANDLED', 'FAILED')


def rows(slots: list[Slot]) -> list[tuple[str, ...]]:
    """One row per agent instance: name, pid, state, restarts, handled, failed.

    >>> rows([Slot('users', 'examples.settings', [('users', 0)])])
    [('users', '-', 'pending', '0', '0', '0')]
    """
    out: list[tuple[str, ...]] = []
    for slot in slots:
        for agent, replica in slot.instances:
            state = slot.state
            if state == 'running' and not slot.ready.get((agent, replica), False):
                state = 'starting'
            sums = slot.instance_totals(agent, replica)
            out.append((slot.row_name(agent, replica), str(slot.pid or '-'), state, str(slot.restarts),
                        str(sums['handled']), str(sums['failed'])))
    return out


def render(slots: list[Slot]) -> list[str]:
    """The table as lines, columns padded to fit.

    >>> render([])
    ['AGENT  PID  STATE  RESTARTS  HANDLED  FAILED']
    """
    table = [HEADER, *rows(slots)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    return ['  '.join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths,
                                                                                                   strict=True)))
            for r in table]


class Display:
    """Where the supervisor writes: log lines plus, on a TTY, the live table below them."""

    def __init__(self, slots: Callable[[], list[Slot]], table: bool, stream: TextIO | None = None,
                 interval: float = 1.0, summary_every: float = 10.0) -> None:
        self.slots = slots
        self.table = table
        self.stream = stream or sys.stderr
        self.interval = interval
        self.summary_every = summary_every
        self._drawn = 0
        self._closed = False

    def write(self, line: str) -> None:
        """Print one log line (above the table, on a TTY)."""
        self._clear()
        self.stream.write(line + '\n')
        self._draw()

    async def run(self) -> None:
        """Redraw the table every *interval* (TTY) or log a summary every *summary_every* seconds."""
        ticks = 0
        while True:
            await asyncio.sleep(self.interval)  # a display refresh period, not synchronisation
            ticks += 1
            if self.table:
                self._clear()
                self._draw()
            elif ticks * self.interval >= self.summary_every:
                ticks = 0
                self.summary()

    def summary(self) -> None:
        """Log one line per agent instance (the table's content, for logs)."""
        for name, pid, state, restarts, handled, failed in rows(self.slots()):
            log.info('status %s: pid=%s state=%s restarts=%s handled=%s failed=%s',
                     name, pid, state, restarts, handled, failed)

    def close(self) -> None:
        """Leave the last table on screen (TTY) or log a final summary."""
        if self.table:
            self._clear()
            self._draw()
            self._drawn = 0
        else:
            self.summary()
        self._closed = True
        self.stream.flush()

    def _clear(self) -> None:
        if self.table and self._drawn:
            # Cursor up to the table's first line, then erase to the end of the screen.
            self.stream.write(f'\x1b[{self._drawn}F\x1b[J')
            self._drawn = 0

    def _draw(self) -> None:
        if not self.table or self._closed:
            self.stream.flush()
            return
        lines = render(self.slots())
        self.stream.write('\x1b[7m' + lines[0] + '\x1b[0m\n' + ''.join(line + '\n' for line in lines[1:]))
        self.stream.flush()
        self._drawn = len(lines)
