"""An agent's numbers, read in one place: the launcher's reports (``/metrics``, the status page) and the
OpenTelemetry instruments both come from here.

The counters live where the work happens (``ConsumerStats`` of each consumer
runner, ``BusStats`` of each bus, ``ScheduleStats`` of each schedule) and
cost a few integer additions; nothing here runs on the hot path. Per-handler
queue numbers come as :func:`consumer_numbers`; everything else as *series*,
``(name, labels, value)`` triples, counters in :data:`COUNTS` and gauges in
:data:`GAUGES`::

    ('signals_sent', {'signal': 'user_created'}, 12)
    ('receiver_failed', {'handler': 'EmailAgent.on_user', 'signal': 'user_created'}, 1)
    ('schedule_holder', {'handler': 'EmailAgent.digest'}, 1)
    ('queue_partition_lag', {'queue': 'mailer', 'partition': 'mailer/0'}, 3)

>>> COUNTS['signals_dropped']
'Signals dropped: undecodable, or not matching the declaration'
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..agent import MicroAgent
    from ..bus import BusStats
    from ..schedule import ScheduledTask

__all__ = ['CONSUMER_COUNTS', 'COUNTS', 'GAUGES', 'Series', 'bus_stats', 'consumer_numbers', 'schedule_counts',
           'series']

CONSUMER_COUNTS = ('handled', 'failed', 'retried', 'dead_lettered')
COUNTS = {
    'signals_sent': 'Signals sent (RPC requests included)',
    'signals_received': 'Signals received and passed to receivers',
    'signals_dropped': 'Signals dropped: undecodable, or not matching the declaration',
    'receiver_handled': 'Receiver runs that returned',
    'receiver_failed': 'Receiver runs that raised or timed out',
    'schedule_runs': 'Periodic and cron runs started',
    'schedule_failed': 'Periodic and cron runs that raised or timed out',
    'schedule_missed': 'Periodic and cron ticks missed (the process was late)',
}
GAUGES = {
    'schedule_holder': 'Whether this replica holds the singleton lease of the schedule (1) or not (0)',
    'queue_partition_lag': 'Messages waiting per partition of a partitioned queue (Kafka consumer lag), '
                           'as last read',
}

Series = tuple[str, dict[str, str], float]


def consumer_numbers(agent: MicroAgent) -> Iterator[dict[str, Any]]:
    """Per bound consumer: queue, handler, the four counters and in-flight (runner's latencies untouched)."""
    broker = agent.broker
    for consumer in agent.consumers:
        try:
            runner = broker.runner(consumer.queue.name)
        except (KeyError, AttributeError):
            continue  # not bound (yet, or any more)
        stats = runner.stats
        yield {'queue': consumer.queue.name,
               'handler': f'{type(agent).__name__}.{getattr(consumer.handler, "__name__", "handler")}',
               **{name: getattr(stats, name) for name in CONSUMER_COUNTS}, 'inflight': runner.inflight}


def bus_stats(agent: MicroAgent) -> BusStats | None:
    """The counters of the agent's bus (None without a bus, or with a mock)."""
    from ..bus import AbstractSignalBus

    return agent.bus.stats if isinstance(agent.bus, AbstractSignalBus) else None


def series(agent: MicroAgent) -> Iterator[Series]:
    """The agent's bus, partition backlog and schedule numbers (see the module docstring)."""
    stats = bus_stats(agent)
    if stats is not None:
        for name, counter in (('signals_sent', stats.sent), ('signals_received', stats.received),
                              ('signals_dropped', stats.dropped)):
            for signal, value in counter.items():
                yield name, {'signal': signal}, value
        for receiver in agent.receivers:
            labels = {'handler': receiver.key, 'signal': receiver.signal.name}
            yield 'receiver_handled', labels, stats.handled[receiver.key]
            yield 'receiver_failed', labels, stats.failed[receiver.key]
    yield from _partition_lags(agent)
    for task in agent.schedules:
        labels = {'handler': task.name}
        counts = schedule_counts(task)
        for name in ('runs', 'failed', 'missed'):
            yield f'schedule_{name}', labels, counts[name]
        if task.lease is not None:
            yield 'schedule_holder', labels, 1.0 if task.lease.held() else 0.0


def _partition_lags(agent: MicroAgent) -> Iterator[Series]:
    """Per partition of each consumed queue, its backlog as the broker last read it (partitioned queues only)."""
    from ..broker import AbstractQueueBroker

    if not isinstance(agent.broker, AbstractQueueBroker):
        return  # no broker, or a mock
    for consumer in agent.consumers:
        for partition, lag in agent.broker.partition_lengths(consumer.queue.name).items():
            yield 'queue_partition_lag', {'queue': consumer.queue.name, 'partition': partition}, lag


def schedule_counts(task: ScheduledTask) -> dict[str, int]:
    """A schedule's runs, failures (errors and timeouts) and missed ticks (status page and metrics alike)."""
    stats = task.stats
    return {'runs': stats.runs, 'failed': stats.failed + stats.timed_out, 'missed': stats.missed}
