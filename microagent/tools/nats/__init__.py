"""NATS backends: a signal bus on core NATS and an at-least-once queue broker on JetStream.

DSN ``nats://[user:password@]host:4222[,host2:4222]`` (several hosts: one
cluster) or ``tls://`` (TLS, certificates verified). Nothing connects until
first use; the first connect fails at once when no server can be used, and
after that the client rides through outages::

    bus = NATSSignalBus('nats://localhost:4222')
    broker = NATSBroker('nats://localhost:4222')
    await broker.user_created.send({'user_id': 1})   # returns once JetStream stored it

The server needs JetStream enabled (``nats-server -js``) for the broker and
the singleton lease. See :mod:`microagent.tools.nats._bus`,
:mod:`microagent.tools.nats._broker` and :mod:`microagent.tools.nats._lease`.
"""
from __future__ import annotations

from ._broker import NATSBroker
from ._bus import NATSSignalBus
from ._lease import NATSLease

__all__ = ['NATSBroker', 'NATSLease', 'NATSSignalBus']
