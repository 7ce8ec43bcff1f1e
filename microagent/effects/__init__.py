"""Exactly-once effects on PostgreSQL: an inbox and a transactional outbox (``pip install "microagent[postgres]"``).

    from microagent.effects import PostgresEffects

    effects = PostgresEffects('postgresql://app@localhost/app')

    @consumer(queues.orders, effects=effects)
    async def handle(self, tx, order_id: int, **_):
        await tx.execute('INSERT INTO orders (id) VALUES ($1)', order_id)
        await tx.broker.billing.send({'order_id': order_id})

See docs/exactly-once.md for what is guaranteed and what is not.
"""
from ._effects import ISOLATION_LEVELS, PostgresEffects
from ._ids import inbox_key, outgoing_id
from ._outbox import OutboxBroker, OutboxBus, Staged
from ._relay import Relay
from ._schema import SCHEMA_VERSION, Tables, migrate, prune_inbox, schema_version, statements, status
from ._transaction import Transaction

__all__ = ['ISOLATION_LEVELS', 'SCHEMA_VERSION', 'OutboxBroker', 'OutboxBus', 'PostgresEffects', 'Relay', 'Staged',
           'Tables', 'Transaction', 'inbox_key', 'migrate', 'outgoing_id', 'prune_inbox', 'schema_version',
           'statements', 'status']
