"""Launcher settings for the example group: ``marun examples.settings``.

The zero-setup default runs on memory:// backends: the launcher then runs
every agent in one process (the memory hub does not cross processes).
"""

BUS = {
    'default': {'backend': 'microagent.tools.memory.MemorySignalBus', 'dsn': 'memory://'},
}
BROKER = {
    'default': {'backend': 'microagent.tools.memory.MemoryBroker', 'dsn': 'memory://'},
}

# The same group on Redis, one process per agent replica (needs a Redis server):
#
# BUS = {
#     'default': {'backend': 'microagent.tools.redis.RedisSignalBus', 'dsn': 'redis://localhost:6379/7',
#                 'prefix': 'EXAMPLES'},
# }
# BROKER = {
#     'default': {'backend': 'microagent.tools.redis.RedisBroker', 'dsn': 'redis://localhost:6379/7'},
# }

AGENT = {
    'users': {
        'backend': 'examples.users.UserAgent',
        'bus': 'default',
        'broker': 'default',
        'settings': {'domain': 'example.com', 'seed_users': 1},
    },
    'comments': {
        'backend': 'examples.comments.CommentAgent',
        'bus': 'default',
    },
    'emails': {
        'backend': 'examples.emails.EmailAgent',
        'broker': 'default',
        'replicas': 2,
    },
}
