"""Progress of a long command-line action: one status line on stderr, rewritten in place, on a terminal only.

Output meant for programs (stdout, pipes, CI logs) never carries it.

>>> import io
>>> out = io.StringIO()
>>> progress = Progress(stream=out, enabled=True)
>>> progress.step('reading queue lengths', 1, 3)
>>> progress.done()
>>> out.getvalue()
'\\r\\x1b[K[1/3] reading queue lengths\\r\\x1b[K'
"""
from __future__ import annotations

import sys
from typing import TextIO

__all__ = ['Progress']


class Progress:
    """Writes ``[n/total] what`` over the previous status; ``done()`` clears it.

    ``enabled`` defaults to whether *stream* (stderr) is a terminal.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._shown = False

    def step(self, text: str, index: int | None = None, total: int | None = None) -> None:
        """Show *text*, with ``[index/total]`` before it when given."""
        if not self.enabled:
            return
        count = f'[{index}/{total}] ' if index is not None and total is not None else ''
        self.stream.write(f'\r\x1b[K{count}{text}')
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        """Clear the status line."""
        if self.enabled and self._shown:
            self.stream.write('\r\x1b[K')
            self.stream.flush()
            self._shown = False
