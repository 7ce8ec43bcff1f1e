"""Launcher settings of the multi-process trace test: the backend from TELEMETRY_TEST_BACKEND.

Kafka has no signal bus: its chain takes signals and RPC over Redis, the queue over Kafka.
"""
import os

UID = os.environ['TELEMETRY_TEST_UID']
_KIND = os.environ['TELEMETRY_TEST_BACKEND']
_REDIS = {'backend': 'microagent.tools.redis.RedisSignalBus', 'dsn': 'redis://127.0.0.1:6379/9', 'prefix': f'TT{UID}'}
_BUSES = {
    'redis': _REDIS,
    'amqp': {'backend': 'microagent.tools.amqp.AMQPSignalBus', 'dsn': 'amqp://guest:guest@127.0.0.1:5672/',
             'prefix': f'TT{UID}'},
    'kafka': _REDIS,
    'nats': {'backend': 'microagent.tools.nats.NATSSignalBus', 'dsn': os.environ.get('TELEMETRY_TEST_NATS', ''),
             'prefix': f'TT{UID}'},
}
_BROKERS = {
    'redis': {'backend': 'microagent.tools.redis.RedisBroker', 'dsn': 'redis://127.0.0.1:6379/9',
              'prefix': f'tt{UID}'},
    'amqp': {'backend': 'microagent.tools.amqp.AMQPBroker', 'dsn': 'amqp://guest:guest@127.0.0.1:5672/',
             'queue_expires': 120},
    'kafka': {'backend': 'microagent.tools.kafka.KafkaBroker', 'dsn': f'kafka://{os.environ.get("TELEMETRY_TEST_KAFKA")}',
              'session_timeout': 2.0, 'fetch_max_wait_ms': 100},
    'nats': {'backend': 'microagent.tools.nats.NATSBroker', 'dsn': os.environ.get('TELEMETRY_TEST_NATS', ''),
             'prefix': f'tt{UID}'},
}
BUS = {'default': _BUSES[_KIND]}
BROKER = {'default': _BROKERS[_KIND]}
AGENT = {
    name: {'backend': f'tests.telemetry_agents.{cls}', 'bus': 'default', 'broker': 'default', 'replicas': 1}
    for name, cls in (('front', 'Front'), ('worker', 'Worker'), ('pricer', 'Pricer'))
}
