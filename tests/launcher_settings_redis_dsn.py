"""Launcher test group on Redis whose DSNs come from the test (a refused login, a proxy it cuts)."""
import os

from tests.launcher_agents import settings_for

UID = os.environ['LAUNCHER_TEST_UID']
DSN = 'redis://127.0.0.1:6379/9'

BUS = {'default': {'backend': 'microagent.tools.redis.RedisSignalBus',
                   'dsn': os.environ.get('LAUNCHER_TEST_BUS_DSN', DSN), 'prefix': f'LT{UID}'}}
BROKER = {'default': {'backend': 'microagent.tools.redis.RedisBroker',
                      'dsn': os.environ.get('LAUNCHER_TEST_BROKER_DSN', DSN), 'prefix': f'lt{UID}'}}
AGENT = {
    'jobs': {'backend': 'tests.launcher_redis_agents.JobWorker', 'bus': 'default', 'broker': 'default',
             'replicas': 1, 'settings': settings_for('jobs')},
}
