"""Launcher test group on Redis whose broker DSN (from the test) has credentials Redis refuses."""
import os

from tests.launcher_agents import settings_for

UID = os.environ['LAUNCHER_TEST_UID']
DSN = 'redis://127.0.0.1:6379/9'

BUS = {'default': {'backend': 'microagent.tools.redis.RedisSignalBus', 'dsn': DSN, 'prefix': f'LT{UID}'}}
BROKER = {'default': {'backend': 'microagent.tools.redis.RedisBroker', 'dsn': os.environ['LAUNCHER_TEST_BAD_DSN'],
                      'prefix': f'lt{UID}'}}
AGENT = {
    'jobs': {'backend': 'tests.launcher_redis_agents.JobWorker', 'bus': 'default', 'broker': 'default',
             'replicas': 1, 'settings': settings_for('jobs')},
}
