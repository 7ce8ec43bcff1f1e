"""A consumer agent in its own process, for the Redis reliability tests.

    python -m tests.redis_consumer DSN PREFIX QUEUE MODE REPORT_KEY

MODE ``hang``: report each message's ``n`` to REPORT_KEY (an RPUSH), then hang
in the handler (the test SIGKILLs the process mid-handler). MODE ``record``:
report each ``n`` and finish. MODE ``suicide``: report, then kill the process
on ``n == 0`` (max 3 attempts). Short heartbeats, so a dead consumer is noticed
in about a second.
"""
from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio as redis

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.tools.redis import RedisBroker


async def main(dsn: str, prefix: str, queue_name: str, mode: str, report_key: str) -> None:
    catalog = Catalog()
    queue = Queue(queue_name, catalog=catalog)
    reporter = redis.Redis.from_url(dsn)

    class Worker(MicroAgent):
        # One at a time: every message a dying process was handling counts an attempt.
        @consumer(queue, timeout=600, max_attempts=3, max_inflight=1 if mode == 'suicide' else 32)
        async def handle(self, n: int) -> None:
            await reporter.rpush(report_key, f'{mode}:{n}')
            if mode == 'hang':
                await asyncio.Event().wait()
            if mode == 'suicide' and n == 0:
                os._exit(17)

    broker = RedisBroker(dsn, catalog=catalog, prefix=prefix, heartbeat_interval=0.2, heartbeat_ttl=1.0)
    agent = Worker(broker=broker)
    await agent.start()
    await reporter.rpush(report_key, f'{mode}:ready')
    await asyncio.Event().wait()  # until killed or terminated


if __name__ == '__main__':
    asyncio.run(main(*sys.argv[1:6]))
