"""In-memory signal bus and queue broker: the whole contract inside one process.

Buses and brokers built with the same DSN in the same event loop share one
hub, so agents in one process talk to each other exactly as they would over
Redis, RabbitMQ or Kafka (acks, retries, dead letters, exchanges, RPC)::

    bus = MemorySignalBus('memory://')
    broker = MemoryBroker('memory://')

``memory://other`` is a separate hub. Nothing crosses processes.
"""
from ._broker import MemoryBroker
from ._bus import MemorySignalBus
from ._lease import MemoryLease

__all__ = ['MemoryBroker', 'MemoryLease', 'MemorySignalBus']
