"""What went through a harness's memory hub, in order: sends, signals and every settlement.

>>> journal = Journal(lambda: 0.0)
>>> journal.add('sent', 'mailer', '{"to": "a@b.c"}')
>>> journal.add('ack', 'mailer', '{"to": "a@b.c"}')
>>> journal.sent('mailer'), [r.kind for r in journal.records]
([{'to': 'a@b.c'}], ['sent', 'ack'])
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ['KINDS', 'Journal', 'Record']

KINDS = ('sent', 'send_failed', 'dropped', 'ack', 'retry', 'dead_letter', 'release', 'signal', 'response')


@dataclass(frozen=True)
class Record:
    """One event: *kind* (see :data:`KINDS`) on queue or signal *name*, at virtual time *at*."""

    kind: str
    name: str
    body: str
    attempt: int = 1
    error: str | None = None
    at: float = 0.0

    @property
    def message(self) -> Any:
        """The body decoded (a queue message; for a signal, its ``{"s": sender, "a": args}`` envelope)."""
        return json.loads(self.body)


class Journal:
    """Records in the order they happened; queries by kind and name."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.records: list[Record] = []

    def add(self, kind: str, name: str, body: str, attempt: int = 1, error: str | None = None) -> None:
        self.records.append(Record(kind, name, body, attempt, error, self.clock()))

    def of(self, kind: str, name: str | None = None) -> list[Record]:
        """Records of *kind* (on *name*, if given)."""
        return [r for r in self.records if r.kind == kind and (name is None or r.name == name)]

    def sent(self, queue: str) -> list[Any]:
        """Messages the code sent to *queue* (before any injected fault), in order."""
        return [r.message for r in self.of('sent', queue)]

    def acked(self, queue: str) -> list[Any]:
        """Messages of *queue* whose handler returned (acknowledged), in order."""
        return [r.message for r in self.of('ack', queue)]

    def retried(self, queue: str) -> list[Record]:
        """Failed attempts sent back for a retry (``attempt`` is the failed one, ``error`` why)."""
        return self.of('retry', queue)

    def dead_lettered(self, queue: str) -> list[Record]:
        """Messages moved to ``<queue>.dlq`` (``attempt`` is the last one, ``error`` why)."""
        return self.of('dead_letter', queue)

    def released(self, queue: str) -> list[Record]:
        """Deliveries given back unhandled (a stop or an injected crash): they come again."""
        return self.of('release', queue)

    def signals(self, name: str) -> list[dict[str, Any]]:
        """Arguments of every *name* signal published (RPC requests included), in order."""
        return [r.message.get('a', {}) for r in self.of('signal', name)]

    def clear(self) -> None:
        self.records.clear()
