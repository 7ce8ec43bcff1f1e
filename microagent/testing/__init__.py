"""A test kit for agents: the memory backend, a virtual clock, fault injection and assertions.

Import it in your own test suite (pytest with pytest-asyncio, or plain asyncio)::

    from microagent.testing import Harness

    async def test_welcome_email_is_sent():
        async with Harness(start='2026-01-05T08:00:00+00:00', retry_delay=1) as h:
            h.add(EmailAgent)
            await h.start()
            h.faults.crash(queue='mailer')          # the first handler run dies mid-flight
            await h.broker.mailer.send({'user_id': 1, 'address': 'a@b.c', 'template': 'hi'})
            await h.settle()
            assert len(h.released('mailer')) == 1 and len(h.acked('mailer')) == 1
            await h.advance(7 * 24 * 3600)          # every cron and periodic run of a week, in order

See docs/testing.md.
"""
from ._clock import VirtualClock, spin, to_seconds
from ._faults import Faults, HandlerCrashed
from ._harness import Harness
from ._journal import Journal, Record

__all__ = ['Faults', 'HandlerCrashed', 'Harness', 'Journal', 'Record', 'VirtualClock', 'spin', 'to_seconds']
