"""Periodic and cron methods of an agent (microagent 1.9's ``timer`` module).

.. code-block:: python

    class Agent(MicroAgent):

        @periodic(period=3, timeout=10, start_after=2)  # in seconds
        async def periodic_handler(self):
            pass  # code here

        @cron('*/10 * * * *', timeout=10)  # in seconds
        def cron_handler(self):
            pass  # a sync method runs in a worker thread

Each decorated method becomes a :class:`PeriodicTask` or a :class:`CRONTask`
of the agent (``agent.periodic_tasks``, ``agent.cron_tasks``), both
:class:`~microagent.schedule.ScheduledTask`: fixed rate, no overlap,
misfires skipped, correct cron (day-of-month/day-of-week OR rule, DST, time
zones); see :mod:`microagent.schedule` and docs/scheduling.md. An exception is
logged in the agent's logger and the schedule goes on.

Not run: a fragment: ``agent`` is the reader's agent.
>>> task = agent.cron_tasks[0]      # doctest: +SKIP
>>> task.info()['next_run']         # doctest: +SKIP
'2026-01-01T04:00:00+00:00'
"""
from __future__ import annotations

from .schedule import Cron, ScheduledTask

__all__ = ['CRONTask', 'Cron', 'PeriodicTask', 'ScheduledTask']


class PeriodicTask(ScheduledTask):
    """A ``@periodic`` method of an agent: ``period`` seconds apart, the first ``start_after`` seconds after start.

    Not run: a fragment: ``agent`` is the reader's agent.
    >>> agent.periodic_tasks[0].period   # doctest: +SKIP
    5.0
    """


class CRONTask(ScheduledTask):
    """A ``@cron`` method of an agent: ``cron`` (:class:`~microagent.schedule.Cron`) gives its fire times.

    ``next_run`` (and ``info()['next_run']``) is the next fire time; ``start_after``
    and ``period`` stay 0 and None (microagent 1.9 computed them as the delay to
    the next run).

    Not run: a fragment: ``agent`` is the reader's agent.
    >>> agent.cron_tasks[0].cron.spec   # doctest: +SKIP
    '0 */4 * * *'
    """
