"""In-memory signal bus and queue broker: the whole contract inside one process.

Buses and brokers built with the same DSN in the same event loop share one
hub, so agents in one process talk to each other exactly as they would over
Redis, RabbitMQ or Kafka (acks, retries, dead letters, exchanges, RPC)::

    bus = MemorySignalBus('memory://')
    broker = MemoryBroker('memory://')

``memory://other`` is a separate hub. Nothing crosses processes. A :class:`Tap`
installed on a hub (``set_tap``) sees every send and settlement: the test kit
(:mod:`microagent.testing`) records traffic and injects faults through it.
"""
from ._broker import MemoryBroker
from ._bus import MemorySignalBus
from ._lease import MemoryLease
from ._tap import Tap, Timer, set_tap

__all__ = ['MemoryBroker', 'MemoryLease', 'MemorySignalBus', 'Tap', 'Timer', 'set_tap']
