"""The launcher settings of the group under test, from the environment the driver sets.

``REL_BACKEND`` (redis, amqp, kafka, nats), ``REL_DSN``, ``REL_REPLICAS`` and
``REL_BROKER_OPTIONS`` (a JSON object of broker keyword arguments)::

    REL_BACKEND=redis REL_DSN=redis://127.0.0.1:6390/0 REL_QUEUE=q1 REL_LEDGER=/tmp/l \\
        marun reliability.group_settings --grace 3
"""
from __future__ import annotations

import json
import os

BACKENDS = {
    'redis': 'reliability.worker.LedgerRedisBroker',
    'amqp': 'reliability.worker.LedgerAMQPBroker',
    'kafka': 'reliability.worker.LedgerKafkaBroker',
    'nats': 'reliability.worker.LedgerNATSBroker',
}

BROKER = {'default': {'backend': BACKENDS[os.environ.get('REL_BACKEND', 'redis')],
                      'dsn': os.environ.get('REL_DSN', 'redis://127.0.0.1:6390/0'),
                      **json.loads(os.environ.get('REL_BROKER_OPTIONS', '{}'))}}
AGENT = {'worker': {'backend': 'reliability.worker.LedgerAgent', 'broker': 'default',
                    'replicas': int(os.environ.get('REL_REPLICAS', '2'))}}
