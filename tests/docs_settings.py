"""A settings module with credentials in its DSNs, for the docs tests (nothing connects)."""
from tests.docs_agents import CATALOG

BUS = {'default': {'backend': 'microagent.tools.redis.RedisSignalBus',
                   'dsn': 'redis://shop:hunter2@redis.internal:6380/3', 'prefix': 'SHOP', 'catalog': CATALOG}}
BROKER = {'default': {'backend': 'microagent.tools.amqp.AMQPBroker',
                      'dsn': 'amqp://shop:hunter2@mq.internal:5672/shop?heartbeat=5', 'catalog': CATALOG}}
AGENT = {
    'shop': {'backend': 'tests.docs_agents.Shop', 'bus': 'default', 'broker': 'default', 'replicas': 2},
    'stock': {'backend': 'tests.docs_agents.Stock', 'bus': 'default', 'broker': 'default'},
}
