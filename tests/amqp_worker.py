"""A consumer process for the SIGKILL tests: ``python -m tests.amqp_worker hang|ok|die DSN QUEUE [TYPE]``.

``hang`` prints ``started <n>`` and blocks in its handler (to be killed);
``ok`` prints ``handled <n>`` and exits after its first message; ``die``
prints ``started <n>`` and kills its own process in the handler, every time
(``max_attempts`` 2, retries after 50 ms). TYPE is the broker's ``queue_type`` (classic).
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent.tools.amqp import AMQPBroker


async def main(mode: str, dsn: str, name: str, queue_type: str = 'classic') -> None:
    catalog = Catalog()
    queue = Queue(name, catalog=catalog)
    done = asyncio.Event()

    class Worker(MicroAgent):
        @consumer(queue, timeout=300, max_attempts=2)
        async def handle(self, n: int, **kwargs: Any) -> None:
            if mode in ('hang', 'die'):
                print(f'started {n}', flush=True)
            if mode == 'die':
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == 'hang':
                await asyncio.Event().wait()  # held until the process is killed
            print(f'handled {n}', flush=True)
            done.set()
    agent = Worker(broker=AMQPBroker(dsn, catalog=catalog, queue_expires=120, retry_delay=0.05,
                                               queue_type=queue_type))
    await agent.start()
    print('ready', flush=True)
    async with asyncio.timeout(120):
        await done.wait()
    await agent.stop(timeout=5)


if __name__ == '__main__':
    asyncio.run(main(*sys.argv[1:5]))
