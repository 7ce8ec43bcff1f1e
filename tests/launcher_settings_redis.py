"""Launcher test group on Redis: two replicas of a job worker, each in its own process."""
import os

from tests.launcher_agents import settings_for

UID = os.environ['LAUNCHER_TEST_UID']
DSN = 'redis://127.0.0.1:6379/9'

BUS = {'default': {'backend': 'microagent.tools.redis.RedisSignalBus', 'dsn': DSN, 'prefix': f'LT{UID}'}}
BROKER = {'default': {'backend': 'microagent.tools.redis.RedisBroker', 'dsn': DSN, 'prefix': f'lt{UID}'}}
AGENT = {
    'jobs': {'backend': 'tests.launcher_redis_agents.JobWorker', 'bus': 'default', 'broker': 'default',
             'replicas': 2, 'settings': settings_for('jobs')},
}
