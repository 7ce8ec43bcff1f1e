"""UserAgent: signs users up, asks for their welcome email and checks their comments over RPC."""
from __future__ import annotations

import itertools
import os

from microagent import MicroAgent, ServerInterrupt, consumer, on, periodic

from .declarations import queues, signals


class UserAgent(MicroAgent):
    """Creates a user every few seconds; ``settings``: ``domain`` of the addresses, ``seed_users``.

    >>> agent = UserAgent(bus=MemorySignalBus(), broker=MemoryBroker())   # doctest: +SKIP
    """

    @on('pre_start')
    def setup(self) -> None:
        # Replicas must not hand out the same ids: the pid keeps them apart without a database.
        self.ids = itertools.count(os.getpid() % 1000 * 1000 + 1)
        self.domain = self.settings.get('domain', 'example.com')
        self.log.info('users: ready to sign people up at %s', self.domain)

    @on('post_start')
    def announce(self) -> None:
        self.log.info('users: consuming email_sent')

    @on('pre_stop')
    def goodbye(self) -> None:
        self.log.info('users: pre_stop, goodbye')

    @on('server')
    async def seed(self) -> None:
        """A sub-service that imports the first users, then ends gracefully."""
        for _ in range(int(self.settings.get('seed_users', 1))):
            await self.create_user()
        raise ServerInterrupt('seed users imported')

    @periodic(period=3, timeout=5, start_after=2)
    async def sign_up(self) -> None:
        await self.create_user()

    async def create_user(self) -> None:
        user_id = next(self.ids)
        email = f'user{user_id}@{self.domain}'
        self.log.info('user %d created (%s)', user_id, email)
        await self.bus.user_created.send('users', user_id=user_id, email=email)
        await self.broker.mailer.send({'user_id': user_id, 'address': email, 'template': 'welcome'})

    @consumer(queues.email_sent, timeout=10)
    async def on_email_sent(self, user_id: int, address: str, **kwargs: object) -> None:
        """The welcome email went out: ask the comments agent how many comments the user has (RPC)."""
        try:
            response = await self.bus.rpc_comments_count.call('users', timeout=5, user_id=user_id)
        except TimeoutError:
            self.log.warning('user %d: comments agent did not answer', user_id)
            return
        count = next(iter(response.values()))
        self.log.info('user %d has %d comment(s), welcome email delivered to %s', user_id, count, address)


__all__ = ['UserAgent', 'signals']
