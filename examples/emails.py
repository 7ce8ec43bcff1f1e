"""EmailAgent: sends the emails queued on ``mailer`` and reports each on ``email_sent``."""
from __future__ import annotations

from dataclasses import dataclass

from microagent import MicroAgent, consumer, cron, on

from .declarations import queues


@dataclass(frozen=True)
class Email:
    """The DTO a ``mailer`` message becomes (unknown or missing fields dead-letter it)."""

    user_id: int
    address: str
    template: str


class EmailAgent(MicroAgent):
    """Pretends to send emails.

    >>> agent = EmailAgent(broker=MemoryBroker())   # doctest: +SKIP
    """

    @on('pre_stop')
    def goodbye(self) -> None:
        self.log.info('emails: pre_stop, outbox closed')

    @consumer(queues.mailer, timeout=10, dto_class=Email, dto_name='email', max_attempts=3)
    async def send_email(self, email: Email, **kwargs: object) -> None:
        self.log.info('email %r sent to %s', email.template, email.address)
        await self.broker.email_sent.send({'user_id': email.user_id, 'address': email.address})

    @cron('0 9 * * mon', timezone='Europe/Berlin')
    async def weekly_digest(self) -> None:
        self.log.info('emails: weekly digest sent')
