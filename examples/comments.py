"""CommentAgent: posts a welcome comment for every new user and counts comments (RPC)."""
from __future__ import annotations

import collections
import itertools
from typing import Any

from microagent import MicroAgent, cron, on, receiver

from .declarations import signals


class CommentAgent(MicroAgent):
    """Keeps comment counts in memory; answers ``rpc_comments_count``.

    >>> agent = CommentAgent(bus=MemorySignalBus())   # doctest: +SKIP
    """

    @on('pre_start')
    def setup(self) -> None:
        self.counts: collections.Counter[int] = collections.Counter()
        self.ids = itertools.count(1)

    @on('pre_stop')
    def goodbye(self) -> None:
        self.log.info('comments: pre_stop, %d comment(s) posted', sum(self.counts.values()))

    @receiver(signals.user_created)
    async def welcome(self, signal: Any, sender: str, user_id: int, email: str) -> None:
        comment_id = next(self.ids)
        self.counts[user_id] += 1
        self.log.info('comment %d posted for user %d (signal from %s)', comment_id, user_id, sender)
        await self.bus.comment_posted.send('comments', user_id=user_id, comment_id=comment_id)

    @receiver(signals.rpc_comments_count, timeout=5)
    async def comments_count(self, signal: Any, sender: str, user_id: int) -> int:
        return self.counts[user_id]

    @cron('*/10 * * * * *', timeout=5)
    async def report(self) -> None:
        """Every 10 seconds (a 6-field cron, seconds first)."""
        self.log.info('comments: %d user(s), %d comment(s)', len(self.counts), sum(self.counts.values()))
