"""The launcher settings of the effects fault run: two consumer stages and a relay, from the driver's environment.

``REL_BACKEND`` (redis, amqp, kafka, nats), ``REL_DSN``, ``REL_BROKER_OPTIONS`` as for
:mod:`reliability.group_settings`; ``REL_REPLICAS`` replicas of each stage and of the relay; the rest
is read by :mod:`reliability.effects_agents`::

    REL_BACKEND=redis REL_DSN=redis://127.0.0.1:6390/0 REL_PG_DSN=postgresql://... REL_QUEUE=q1 \\
        REL_LEDGER=/tmp/l marun reliability.effects_settings --grace 3
"""
from __future__ import annotations

import json
import os

_BACKEND = os.environ.get('REL_BACKEND', 'redis')
_OPTIONS = {'dsn': os.environ.get('REL_DSN', 'redis://127.0.0.1:6390/0'),
            **json.loads(os.environ.get('REL_BROKER_OPTIONS', '{}'))}
_BROKERS = {'redis': 'microagent.tools.redis.RedisBroker', 'amqp': 'microagent.tools.amqp.AMQPBroker',
            'kafka': 'microagent.tools.kafka.KafkaBroker', 'nats': 'microagent.tools.nats.NATSBroker'}
_RELAY_BROKERS = {'redis': 'reliability.effects_agents.RelayRedisBroker',
                  'amqp': 'reliability.effects_agents.RelayAMQPBroker',
                  'kafka': 'reliability.effects_agents.RelayKafkaBroker',
                  'nats': 'reliability.effects_agents.RelayNATSBroker'}
_REPLICAS = int(os.environ.get('REL_REPLICAS', '2'))

BROKER = {'default': {'backend': _BROKERS[_BACKEND], **_OPTIONS},
          'relay': {'backend': _RELAY_BROKERS[_BACKEND], **_OPTIONS}}
AGENT = {
    'first': {'backend': 'reliability.effects_agents.FirstStage', 'broker': 'default', 'replicas': _REPLICAS},
    'second': {'backend': 'reliability.effects_agents.SecondStage', 'broker': 'default', 'replicas': _REPLICAS},
    'relay': {'backend': 'reliability.effects_agents.RelayAgent', 'broker': 'relay', 'replicas': _REPLICAS},
}
