"""Counting a crash as an attempt on Kafka: an attempt record written before handlers start.

A Kafka record has no delivery count: a consumer that dies while handling a
record leaves its offset uncommitted, the group reads it again, and a
message whose handler kills its process would do so for ever, stopping its
partition. So each reader notes, before it starts handlers, which offsets of
a partition are being started, in a small record of the topic
``<group>.attempts`` (compacted; key ``<topic>/<partition>``, one record per
note, the latest one counts). The next owner of the partition reads the
latest note at assignment (:meth:`KafkaClients.last_record`) and knows how
often each record it gets was started without being settled.

A note is a :class:`Snapshot`: "every offset below ``hi`` was started once
more than it settled, except those in ``counts``, started that often". To
keep notes rare, a reader notes ``ahead`` offsets at once (one note per
``max_inflight`` records, not one per record); the records of that range that
had not started when the process died are counted too. That is safe because a
record with a count (a *suspect*) is handled alone: no other handler of its
queue runs in this process while it does, and its note names only it. A crash
then convicts the one record that was running, and the others keep the count
they had. A suspect whose count reaches ``max_attempts`` goes to the dead
letters with ``x-error`` saying its consumer died, before any handler sees it.

A clean stop or rebalance writes a note without the range: records given back
unstarted (or cut by the stop) are not counted.

>>> snap = Snapshot(hi=12, counts={10: 3})
>>> snap.count(10), snap.count(11), snap.count(12)
(3, 1, 0)
>>> Snapshot.decode(snap.encode()) == snap
True
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ['PartitionAttempts', 'Snapshot', 'Solo', 'attempts_topic']

# What a dead-lettered crash loop carries as its error (as on NATS and RabbitMQ: "an attempt never settled").
LOST_ATTEMPT = 'started again after an attempt that never settled (its consumer died while handling it)'


def attempts_topic(group: str) -> str:
    """The topic where the readers of *group* note their attempts.

    >>> attempts_topic('mailer')
    'mailer.attempts'
    """
    return f'{group}.attempts'


@dataclass
class Snapshot:
    """Starts that never settled, per offset: ``counts`` named, 1 for other offsets below ``hi``."""

    hi: int = 0
    counts: dict[int, int] = field(default_factory=dict)

    def count(self, offset: int) -> int:
        """How often the record at *offset* was started without being settled."""
        found = self.counts.get(offset)
        if found is not None:
            return found
        return 1 if offset < self.hi else 0

    def encode(self) -> bytes:
        return json.dumps({'hi': self.hi, 'n': {str(k): v for k, v in self.counts.items()}},
                          separators=(',', ':')).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Snapshot:
        """A note as written by :meth:`encode`; garbage is an empty note (a bad record must not stop a reader).

        >>> Snapshot.decode(b'not json')
        Snapshot(hi=0, counts={})
        """
        try:
            data = json.loads(raw or b'{}')
            return cls(int(data.get('hi', 0)), {int(k): int(v) for k, v in dict(data.get('n', {})).items()})
        except (ValueError, TypeError, AttributeError):
            return cls()


class PartitionAttempts:
    """The crash counts of one assigned partition: what the last owner noted, what this reader started.

    >>> book = PartitionAttempts(Snapshot(hi=5, counts={3: 2}), committed=3)
    >>> book.prior(3), book.prior(4), book.prior(5)
    (2, 1, 0)
    >>> book.needs_note(5)
    True
    >>> book.note(5, ahead=4)
    Snapshot(hi=9, counts={3: 2})
    >>> book.start(5, 1); book.needs_note(8)
    False
    """

    __slots__ = ('_hi', '_loaded_hi', 'loaded', 'noted', 'started')

    def __init__(self, snapshot: Snapshot, committed: int) -> None:
        # Offsets below the committed one are never read again: their counts are gone.
        self.loaded = {o: n for o, n in snapshot.counts.items() if o >= committed and n > 0}
        self._loaded_hi = snapshot.hi if snapshot.hi > committed else 0
        self.started: dict[int, int] = {}   # in flight here: offset -> starts counted, this one included
        self._hi = -1                        # offsets below it may start without a new note
        self.noted = False                   # a note was written for this assignment (a clean stop rewrites it)

    def __repr__(self) -> str:
        return f'<PartitionAttempts suspects={len(self.loaded)} started={len(self.started)} hi={self._hi}>'

    def prior(self, offset: int) -> int:
        """Starts of the record at *offset* that never settled (0: it is not a suspect)."""
        found = self.loaded.get(offset)
        if found is not None:
            return found
        return 1 if offset < self._loaded_hi else 0

    def needs_note(self, offset: int) -> bool:
        return offset >= self._hi

    def note(self, offset: int, ahead: int) -> Snapshot:
        """The note to write before *offset* and the *ahead* - 1 offsets after it start."""
        self._hi = offset + max(1, ahead)
        self.noted = True
        return Snapshot(max(self._hi, self._loaded_hi), self._suspects(over=1))

    def alone(self, offset: int, count: int) -> Snapshot:
        """The note to write before the suspect at *offset* starts alone, its *count*-th start."""
        self._hi = -1  # after it, the next ordinary start needs a fresh note
        self.noted = True
        self.start(offset, count)
        return Snapshot(self._loaded_hi, self._suspects(over=0))

    def clean(self) -> Snapshot:
        """The note of a clean stop or rebalance: what is still running, and the suspects' counts."""
        self._hi = -1
        return Snapshot(self._loaded_hi, self._suspects(over=0))

    def start(self, offset: int, count: int) -> None:
        self.started[offset] = count
        self.loaded.pop(offset, None)

    def settle(self, offset: int) -> None:
        self.started.pop(offset, None)
        self.loaded.pop(offset, None)

    def release(self, offset: int) -> None:
        """Given back unhandled (a stop): this start does not count, the earlier ones still do."""
        count = self.started.pop(offset, 0)
        if count > 1:
            self.loaded[offset] = count - 1

    def _suspects(self, over: int) -> dict[int, int]:
        return {**self.loaded, **{o: n for o, n in self.started.items() if n > over}}


class Solo:
    """Lets one suspect of a queue run alone: its readers hand nothing else out meanwhile.

    >>> solo = Solo()
    >>> async with solo.hold():   # the reader waits for the runner to idle, runs the suspect, waits for its settle
    ...     print('alone')
    alone
    """

    __slots__ = ('_open',)

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    async def wait(self) -> None:
        """Until no suspect runs."""
        await self._open.wait()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()
