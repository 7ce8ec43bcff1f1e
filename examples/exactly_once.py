"""Exactly-once effects: orders are stored and billed once, however often their messages arrive.

    MICROAGENT_DB_DSN=postgresql://postgres@127.0.0.1:5432/test python -m examples.exactly_once

``OrderAgent`` stores each order and asks for an invoice through the outbox, in one transaction;
``BillingAgent`` stores the invoice. The same order is sent twice under one message id (a producer that
retried a send it was not sure about) and the agents are stopped mid-stream and started again: every
order is stored once and billed once. Runs on the memory broker; any other broker works the same.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.effects import PostgresEffects
from microagent.tools.memory import MemoryBroker

catalog = Catalog()
orders = Queue('orders', catalog=catalog)
billing = Queue('billing', catalog=catalog)
effects = PostgresEffects(os.environ.get('MICROAGENT_DB_DSN', 'postgresql://postgres@127.0.0.1:5432/test'),
                          prefix='example_', catalog=catalog)


class OrderAgent(MicroAgent):
    @consumer(orders, effects=effects)
    async def place(self, tx: Any, order_id: int, amount: int) -> None:
        await tx.execute('INSERT INTO example_orders (id, amount) VALUES ($1, $2)', order_id, amount)
        await tx.broker.billing.send({'order_id': order_id, 'amount': amount})  # sent after the commit


class BillingAgent(MicroAgent):
    @consumer(billing, effects=effects)
    async def bill(self, tx: Any, order_id: int, amount: int) -> None:
        await tx.execute('INSERT INTO example_invoices (order_id, amount) VALUES ($1, $2)', order_id, amount)


async def setup() -> None:
    """What ``microagent db init --prefix example_`` does, plus the example's own tables."""
    from microagent.effects import migrate

    connection = await effects.connect()
    try:
        await migrate(connection, effects.tables)
        # No unique keys: an order stored twice would show as two rows.
        await connection.execute('DROP TABLE IF EXISTS example_orders, example_invoices')
        await connection.execute('CREATE TABLE example_orders (id int NOT NULL, amount int NOT NULL)')
        await connection.execute('CREATE TABLE example_invoices (order_id int NOT NULL, amount int NOT NULL)')
        await connection.execute('TRUNCATE example_inbox, example_outbox')
    finally:
        await connection.close()


async def main() -> dict[str, int]:
    await setup()
    broker = MemoryBroker('memory://example', catalog=catalog)
    agents = [OrderAgent(broker=broker), BillingAgent(broker=broker)]
    for agent in agents:
        await agent.start()
    for n in range(1, 6):
        await broker.orders.send({'order_id': n, 'amount': 10 * n}, message_id=f'order-{n}')
    await broker.orders.send({'order_id': 3, 'amount': 30}, message_id='order-3')  # a producer's retry
    for agent in agents:  # a restart in the middle: unfinished work rolls back and comes again
        await agent.stop(timeout=0, close=False)
        await agent.start()
    pool = await effects.pool()
    async with asyncio.timeout(30):
        while await pool.fetchval('SELECT count(*) FROM example_invoices') < 5:
            await asyncio.sleep(0.05)  # the example waits for the relay, as a reader would
    counts = {'orders': await pool.fetchval('SELECT count(*) FROM example_orders'),
              'invoices': await pool.fetchval('SELECT count(*) FROM example_invoices'),
              'distinct orders': await pool.fetchval('SELECT count(DISTINCT id) FROM example_orders')}
    for agent in agents:
        await agent.stop()
    await broker.close()
    return counts


if __name__ == '__main__':
    print(asyncio.run(main()))  # {'orders': 5, 'invoices': 5, 'distinct orders': 5}
