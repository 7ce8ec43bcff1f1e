"""One replica of an agent with a singleton periodic job, for the takeover tests.

    python -m tests.schedule_replica DSN LEASE_PREFIX LIST_KEY [PERIOD]

Every run appends "pid time" to the Redis list LIST_KEY. SIGTERM stops the
agent gracefully (the lease is released); SIGKILL is the fault under test.
The lease lives on the backend of DSN (redis://, amqp://, kafka://); the agent
has no consumers, so a stand-in object carrying the DSN is its broker.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import redis.asyncio as aioredis

from microagent import MicroAgent, periodic

REDIS = os.environ.get('SCHEDULE_TEST_REDIS', 'redis://127.0.0.1:6379/0')


class DsnOnly:
    """A broker stand-in: the agent needs only its DSN to pick the lease backend."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def close(self) -> None:
        pass


async def main(dsn: str, prefix: str, key: str, period: float) -> None:
    results = aioredis.Redis.from_url(REDIS, socket_timeout=5)

    class Replica(MicroAgent):
        @periodic(period=period, timeout=period, singleton=True)
        async def tick(self) -> None:
            await results.rpush(key, f'{os.getpid()} {time.time():.6f}')

    agent = Replica(broker=DsnOnly(dsn), settings={'lease_prefix': prefix})
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await agent.start()
    await results.rpush(f'{key}:ready', str(os.getpid()))
    await stop.wait()
    await agent.stop(5)
    await results.aclose()


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format=f'{os.getpid()} %(asctime)s %(name)s %(message)s')
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 1.0))
