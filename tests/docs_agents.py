"""Agents for the docs tests: an exchange with topics, a pydantic DTO with a nested model, RPC, schedules."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from microagent import Catalog, MicroAgent, Queue, Signal, consumer, cron, periodic, receiver

CATALOG = Catalog()
order_placed = Signal('order_placed', providing_args={'order_id': 'integer', 'note': ['string', 'null']},
                      description='An order was placed', catalog=CATALOG)
rpc_stock = Signal('rpc_stock', providing_args=['sku'], catalog=CATALOG)
orders = Queue('orders', catalog=CATALOG)
push_ios = Queue('push_ios', exchange='push', topics=('push.ios', 'push.all.#'), catalog=CATALOG)
push_log = Queue('push_log', exchange='push', catalog=CATALOG)


class Line(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    order_id: int
    lines: list[Line]


class Shop(MicroAgent):
    """Takes orders and pushes notifications."""

    @consumer(orders, dto_class=Order, dto_name='order', max_attempts=3)
    async def take(self, order: Order, **kwargs: Any) -> None:
        """Store the order, tell everyone."""
        await self.bus.order_placed.send('shop', order_id=order.order_id, note=None)
        await self.broker.push.send({'order_id': order.order_id}, topic='push.ios')
        await self.bus.rpc_stock.call('shop', sku=order.lines[0].sku, timeout=1)

    @periodic(period=30, singleton=True)
    async def sweep(self) -> None: ...


class Stock(MicroAgent):
    """Knows the stock."""

    @receiver(rpc_stock, timeout=2)
    async def count(self, signal: Any, sender: str, sku: str) -> int:
        """How many items of a SKU are left."""
        return 3

    @receiver(order_placed)
    async def reserve(self, signal: Any, sender: str, **kwargs: Any) -> None: ...

    @consumer(push_ios)
    async def ios(self, **kwargs: Any) -> None: ...

    @consumer(push_log)
    async def log_push(self, **kwargs: Any) -> None: ...

    @cron('0 6 * * mon-fri', timezone='Europe/Paris')
    async def restock(self) -> None: ...
