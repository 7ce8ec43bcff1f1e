"""One process of the scale benchmark: a library consumer, a library producer or a raw producer.

The coordinator (:mod:`benchmarks.scale`) starts several, then talks to them
over stdin/stdout, one JSON object a line::

    python -m benchmarks.scale_worker consume --backend nats --queue bench_scale_ab12 --n 0
    -> {"ready": true}              connected, bound (a consumer's handler waits for "go")
    <- go
    -> {"count": 1500, "last_ns": 123456789}    progress, at most ten a second
    <- stop                         (a consumer: when the coordinator counted every message)
    -> {"done": true, "count": 5000, "last_ns": ...}

Times are ``time.monotonic_ns()``: one clock for every process of the
machine, so the coordinator compares them with its own "go". The DSN comes in
``$MICROAGENT_BENCH_DSN`` (never argv: passwords).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from microagent import Catalog, MicroAgent, Queue, consumer
from microagent._tasks import TaskSet
from microagent.backends import make_broker
from microagent.broker import AbstractQueueBroker

from .run_one import DSN_ENV
from .scale_raw import PARTITIONS, writer
from .settings import DSNS, payload

__all__ = ['broker_options', 'main']

PROGRESS_EVERY = 0.1


def broker_options(backend: str) -> dict[str, Any]:
    """The library's defaults, but Kafka topics with a partition per consumer process (at most 4)."""
    return {'partitions': PARTITIONS, 'fetch_max_wait_ms': 100} if backend == 'kafka' else {}


def say(**line: Any) -> None:
    print(json.dumps(line), flush=True)


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.last_ns = 0

    def hit(self) -> None:
        self.count += 1
        self.last_ns = time.monotonic_ns()

    async def report(self) -> None:
        shown = -1
        while True:
            if self.count != shown:
                shown = self.count
                say(count=shown, last_ns=self.last_ns)
            await asyncio.sleep(PROGRESS_EVERY)  # the reporting period, not a synchronisation


async def stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def expect(reader: asyncio.StreamReader, word: bytes) -> None:
    """Until the coordinator writes *word* (or goes away)."""
    while line := await reader.readline():
        if line.strip() == word:
            return


async def consume(broker: AbstractQueueBroker, queue: Queue, commands: asyncio.StreamReader) -> Counter:
    counter, go = Counter(), asyncio.Event()

    class Consumer(MicroAgent):
        @consumer(queue)
        async def handle(self, **message: Any) -> None:
            if not go.is_set():
                await go.wait()  # the coordinator's start signal: every process begins together
            counter.hit()
    agent = Consumer(broker=broker)
    await agent.start()
    tasks = TaskSet('scale consumer')
    try:
        say(ready=True)
        await expect(commands, b'go')
        go.set()
        tasks.spawn(counter.report(), name='progress')
        await expect(commands, b'stop')
    finally:
        await tasks.cancel()
        await agent.stop(timeout=2)
    return counter


async def send_all(broker: AbstractQueueBroker, queue: Queue, first: int, n: int, concurrency: int) -> Counter:
    """*n* sequential sends on each of *concurrency* tasks' share (what a busy service's requests do)."""
    counter = Counter()

    async def sender(share: range) -> None:
        for i in share:
            await broker.send(queue.name, json.dumps(payload(i)))
            counter.hit()
    await asyncio.gather(*(sender(range(first + k, first + n, concurrency)) for k in range(concurrency)))
    return counter


async def run(args: argparse.Namespace) -> None:
    dsn = os.environ.get(DSN_ENV) or DSNS[args.backend]
    commands = await stdin_lines()
    if args.role == 'raw':
        async with writer(args.backend, dsn, args.queue, connections=args.concurrency) as write:
            say(ready=True)
            await expect(commands, b'go')
            await write(args.n)
            say(done=True, count=args.n, last_ns=time.monotonic_ns())
        return
    catalog = Catalog()
    queue = Queue(args.queue, catalog=catalog)
    broker = make_broker(dsn, catalog=catalog, **broker_options(args.backend))
    try:
        if args.role == 'consume':
            counter = await consume(broker, queue, commands)
        else:
            await broker.send(queue.name, json.dumps(payload(-1)))  # connected, queue made: not timed
            say(ready=True)
            await expect(commands, b'go')
            counter = await send_all(broker, queue, args.first, args.n, args.concurrency)
        say(done=True, count=counter.count, last_ns=counter.last_ns)
    finally:
        await broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.scale_worker', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('role', choices=('consume', 'produce', 'raw'))
    parser.add_argument('--backend', required=True, choices=sorted(DSNS))
    parser.add_argument('--queue', required=True)
    parser.add_argument('--n', type=int, default=0, help='messages to send (produce, raw)')
    parser.add_argument('--first', type=int, default=0, help='id of the first message (produce)')
    parser.add_argument('--concurrency', type=int, default=16, help='sending tasks (produce) or connections (raw)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run(args))
    return 0


if __name__ == '__main__':
    sys.exit(main())
