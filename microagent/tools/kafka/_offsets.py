"""Offset bookkeeping of one assigned Kafka partition.

With ``max_inflight > 1`` handlers finish out of order, but Kafka only stores
one committed offset per partition: "everything before this is done". A
:class:`PartitionOffsets` therefore remembers every offset handed out, in
fetch order, and moves the commit position only over a settled prefix::

    part = PartitionOffsets()
    part.take(10); part.take(11)
    part.settle(11)        # False: 10 is still running, nothing to commit
    part.settle(10)        # True: commit 12 (10 and 11 are done)

A released delivery (shutdown) stays pending forever, so nothing after it is
committed by this member: the group gets it again, with what followed it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._attempts import PartitionAttempts

__all__ = ['PartitionOffsets']


class PartitionOffsets:
    """Pending offsets of one partition and the position the group may commit."""

    __slots__ = ('attempts', 'busy', 'committed', 'pending', 'position', 'revoked')

    def __init__(self) -> None:
        self.pending: dict[int, bool] = {}   # offset -> settled, in fetch (= offset) order
        self.position: int | None = None     # next offset to commit; None: nothing settled yet
        self.committed: int | None = None    # what the last successful commit stored
        self.busy = 0                        # deliveries handed to the runner, not settled/released
        self.revoked = False                 # a rebalance took the partition: settles are ignored
        self.attempts: PartitionAttempts | None = None  # crash counts, once the last owner's note is read

    def __repr__(self) -> str:
        return f'<PartitionOffsets pending={len(self.pending)} position={self.position} busy={self.busy}>'

    def take(self, offset: int, *, handled: bool = True) -> None:
        """Remember *offset* as pending; ``handled`` counts it as in-flight."""
        self.pending[offset] = False
        if handled:
            self.busy += 1

    def settle(self, offset: int, *, handled: bool = True) -> bool:
        """Mark *offset* done; whether the commit position moved."""
        if self.revoked or offset not in self.pending:
            return False
        if handled:
            self.busy -= 1
        self.pending[offset] = True
        moved = False
        while self.pending:
            first = next(iter(self.pending))
            if not self.pending[first]:
                break
            del self.pending[first]
            self.position = first + 1
            moved = True
        return moved

    def release(self) -> None:
        """An in-flight delivery was given back unsettled: no longer busy, still pending."""
        if not self.revoked:
            self.busy -= 1

    @property
    def dirty(self) -> bool:
        """Whether there is a position to commit that was not committed yet."""
        return self.position is not None and self.position != self.committed
