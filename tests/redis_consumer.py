"""A consumer agent in its own process, for the Redis reliability tests.

    python -m tests.redis_consumer DSN PREFIX QUEUE MODE REPORT_KEY

MODE ``hang``: report each message's ``n`` to REPORT_KEY (an RPUSH), then hang
in the handler (the test SIGKILLs the process mid-handler). MODE ``record``:
report each ``n`` and finish. Short heartbeats, so a dead consumer is noticed
in about a second.
"""
from __future__ import annotations

import asyncio
import sys

import redis.asyncio as redis

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.tools.redis import RedisBroker


async def main(dsn: str, prefix: str, queue_name: str, mode: str, report_key: str) -> None:
    catalog = Catalog()
    queue = Queue(queue_name, catalog=catalog)
    reporter = redis.Redis.from_url(dsn)

    class Worker(MicroAgent):
        @consumer(queue, timeout=600)
        async def handle(self, n: int) -> None:
            await reporter.rpush(report_key, f'{mode}:{n}')
            if mode == 'hang':
                await asyncio.Event().wait()

    broker = RedisBroker(dsn, catalog=catalog, prefix=prefix, heartbeat_interval=0.2, heartbeat_ttl=1.0)
    agent = Worker(broker=broker)
    await agent.start()
    await reporter.rpush(report_key, f'{mode}:ready')
    await asyncio.Event().wait()  # until killed or terminated


if __name__ == '__main__':
    asyncio.run(main(*sys.argv[1:6]))
