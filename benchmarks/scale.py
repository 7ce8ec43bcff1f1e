"""``python -m benchmarks.scale``: one queue's throughput with 1, 2 and 4 processes, against the broker's limit.

Per backend, each measured ``--repeat`` times (the median reported), every
process a fresh ``python -m benchmarks.scale_worker`` (:mod:`.scale_worker`):

* ``consumers K``: ``--n`` messages wait in the queue; K consumer processes
  (library defaults: 32 in flight each; Kafka: a topic of 4 partitions) are
  bound and held at a start line, then all start together; the rate is
  messages over the time from the start to the last one handled.
* ``producers K``: K processes send ``--n`` messages between them, each with
  16 tasks doing sequential confirmed ``send`` calls (a busy service); the
  rate is messages over the time from the start to the last confirm.
* ``limit``: the broker's own ceiling for confirmed writes, measured in the
  same run: ``redis-benchmark`` (RPUSH, 50 connections, 16 commands
  pipelined) for Redis; for the others the raw client (aiormq, aiokafka,
  nats-py) in 4 processes of 2 connections, each pipelining 256 confirmed
  writes (:mod:`.scale_raw`).

Prints one JSON line per measurement, one per summary row, then the
markdown table; ``--out FILE`` writes the JSON lines::

    .venv/bin/python -m benchmarks.scale --backends redis,nats --size smoke --repeat 1
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from microagent import Catalog, Queue
from microagent.backends import make_broker

from .run_one import DSN_ENV
from .scale_worker import broker_options
from .services import availability, cleanup, kafka_server
from .settings import DSNS, PORTS, payload

__all__ = ['main', 'measure']

BACKENDS = ('redis', 'amqp', 'kafka', 'nats')
PROCESSES = (1, 2, 4)
SIZES = {'smoke': {'consumers': 400, 'producers': 400, 'limit': 2_000},
         'full': {'consumers': 40_000, 'producers': 20_000, 'limit': 100_000}}
RAW_PROCESSES, RAW_CONNECTIONS = 4, 2  # as many processes as the most producers: the same CPU share
ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 300.0


class Worker:
    """A scale_worker process and what it last reported."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.count = 0
        self.last_ns = 0
        self.done = False
        self.ended = False
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()

    async def read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if not line.startswith(b'{'):
                continue
            data = json.loads(line)
            if data.get('ready'):
                self.ready.set()
            self.count = int(data.get('count', self.count))
            self.last_ns = int(data.get('last_ns', self.last_ns))
            self.done = self.done or bool(data.get('done'))
            self.changed.set()
        self.ended = True
        self.changed.set()

    def tell(self, word: str) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.write(word.encode() + b'\n')


async def spawn(backend: str, role: str, queue: str, **options: Any) -> Worker:
    extra = [item for key, value in options.items() for item in (f'--{key}', str(value))]
    process = await asyncio.create_subprocess_exec(
        sys.executable, '-m', 'benchmarks.scale_worker', role, '--backend', backend, '--queue', queue, *extra,
        cwd=ROOT, env={**os.environ, DSN_ENV: DSNS[backend]}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    return Worker(process)


async def timed(workers: list[Worker], finished: Any, prepare: Any = None) -> float:
    """Once every worker is ready (and ``prepare()`` ran), start them together; seconds until ``finished``.

    Every worker is stopped at the end, whatever happened (none outlives its measurement).
    """
    changed = asyncio.Event()
    for worker in workers:
        worker.changed = changed
    readers = [asyncio.ensure_future(worker.read()) for worker in workers]
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await until(workers, changed, lambda: all(w.ready.is_set() for w in workers))
            if prepare is not None:
                await prepare()
            go = time.monotonic_ns()
            for worker in workers:
                worker.tell('go')
            await until(workers, changed, lambda: finished(workers))
            return (max(w.last_ns for w in workers) - go) / 1e9
    finally:
        await stop_all(workers)
        for reader in readers:
            reader.cancel()


async def until(workers: list[Worker], changed: asyncio.Event, condition: Any) -> None:
    """Wait for *condition* (checked whenever a worker reports); a worker that ended before it is an error."""
    while not condition():
        if any(w.ended and not w.done for w in workers):
            raise RuntimeError('a worker process ended early (its stderr: run it by hand)')
        changed.clear()
        if not condition():
            await changed.wait()


async def stop_all(workers: list[Worker]) -> None:
    """Tell every worker to stop; kill the ones that do not end within 15 s."""
    for worker in workers:
        worker.tell('stop')
    for worker in workers:
        try:
            async with asyncio.timeout(15):
                await worker.process.wait()
        except TimeoutError:
            worker.process.kill()
            await worker.process.wait()


async def fill(backend: str, queue: str, n: int) -> None:
    catalog = Catalog()
    Queue(queue, catalog=catalog)
    broker = make_broker(DSNS[backend], catalog=catalog, **broker_options(backend))
    try:
        for first in range(0, n, 500):
            await broker.send_many(queue, [json.dumps(payload(i)) for i in range(first, min(n, first + 500))])
    finally:
        await broker.close()


async def consumers(backend: str, queue: str, k: int, n: int) -> float:
    # Bound before the messages come (Kafka: the group settled), held at the start line by their handlers.
    workers = [await spawn(backend, 'consume', queue) for _ in range(k)]
    return await timed(workers, lambda ws: sum(w.count for w in ws) >= n, lambda: fill(backend, queue, n))


async def producers(backend: str, queue: str, k: int, n: int) -> float:
    share = -(-n // k)
    workers = [await spawn(backend, 'produce', queue, n=min(share, n - i * share), first=i * share)
               for i in range(k)]
    return await timed(workers, lambda ws: all(w.done for w in ws))


async def limit(backend: str, queue: str, n: int) -> float:
    if backend == 'redis':
        return await asyncio.to_thread(redis_benchmark, n)
    share = n // RAW_PROCESSES
    workers = [await spawn(backend, 'raw', queue, n=share, concurrency=RAW_CONNECTIONS)
               for _ in range(RAW_PROCESSES)]
    return await timed(workers, lambda ws: all(w.done for w in ws)) * n / (share * RAW_PROCESSES)


def redis_benchmark(n: int) -> float:
    """Seconds for *n* RPUSHes by redis-benchmark (50 connections, 16 pipelined) on the benchmarks' database."""
    db = DSNS['redis'].rsplit('/', 1)[-1] or '0'
    done = subprocess.run(['redis-benchmark', '-p', str(PORTS['redis']), '--dbnum', db, '-n', str(n), '-c', '50',
                           '-P', '16', '-t', 'rpush', '--csv'], capture_output=True, text=True, timeout=STEP_TIMEOUT,
                          check=True)
    rates = re.findall(r'"RPUSH","([0-9.]+)"', done.stdout)
    if not rates:
        raise RuntimeError(f'redis-benchmark said: {done.stdout[-200:]!r}')
    subprocess.run(['redis-cli', '-p', str(PORTS['redis']), '-n', db, 'DEL', 'mylist'], capture_output=True,
                   timeout=30, check=False)
    return n / float(rates[0])


async def measure(backend: str, case: str, k: int, n: int, uid: str) -> dict[str, Any]:
    """One measurement in fresh processes; a failure becomes a status, never a number."""
    queue = f'bench_scale_{uid}_{case[0]}{k}'
    line: dict[str, Any] = {'kind': 'scale', 'backend': backend, 'case': case, 'processes': k, 'n': n}
    try:
        if case == 'consumers':
            seconds = await consumers(backend, queue, k, n)
        elif case == 'producers':
            seconds = await producers(backend, queue, k, n)
        else:
            seconds = await limit(backend, queue, n)
    except Exception as exc:  # reported in the line, the run goes on
        return {**line, 'status': 'error', 'error': f'{type(exc).__name__}: {exc}'[:300]}
    return {**line, 'status': 'ok', 'seconds': round(seconds, 3), 'rate': round(n / seconds, 1)}


def plan(repeat: int, processes: tuple[int, ...] = PROCESSES) -> list[tuple[str, int]]:
    """(case, processes) of every measurement, repetitions one after the other."""
    one = [('limit', RAW_PROCESSES)] + [(case, k) for case in ('consumers', 'producers') for k in processes]
    return one * repeat


def summarize(lines: list[dict[str, Any]], backends: list[str],
              processes: tuple[int, ...] = PROCESSES) -> list[dict[str, Any]]:
    """Per backend and case: the median rate over the repetitions, and its share of the broker limit."""
    rows = []
    for backend in backends:
        medians: dict[tuple[str, int], float | None] = {}
        for case, k in dict.fromkeys(plan(1, processes)):
            rates = [x['rate'] for x in lines if x['backend'] == backend and x['case'] == case
                     and x['processes'] == k and x['status'] == 'ok']
            failed = any(x['status'] != 'ok' for x in lines if x['backend'] == backend and x['case'] == case
                         and x['processes'] == k)
            medians[(case, k)] = None if failed or not rates else statistics.median(rates)
        top = medians[('limit', RAW_PROCESSES)]
        for (case, k), rate in medians.items():
            share = round(rate / top, 3) if rate and top else None
            rows.append({'kind': 'scale_row', 'backend': backend, 'case': case, 'processes': k,
                         'rate': None if rate is None else round(rate), 'of_limit': share})
    return rows


def markdown(rows: list[dict[str, Any]], processes: tuple[int, ...] = PROCESSES) -> str:
    """The summary rows as one markdown table, a row per backend."""
    ks = ' / '.join(map(str, processes))
    out = [f'| Backend | limit (msg/s) | consumers {ks} (msg/s) | of limit | producers {ks} (msg/s) | of limit |',
           '|---|---|---|---|---|---|']
    for backend in dict.fromkeys(r['backend'] for r in rows):
        mine = {(r['case'], r['processes']): r for r in rows if r['backend'] == backend}
        top = mine[('limit', RAW_PROCESSES)]['rate']
        cells = [' | '.join(_cells(mine, case, processes)) for case in ('consumers', 'producers')]
        out.append(f'| {backend} | {"FAIL" if top is None else f"{top:,}"} | {cells[0]} | {cells[1]} |')
    return '\n'.join(out)


def _cells(mine: dict[tuple[str, int], dict[str, Any]], case: str, processes: tuple[int, ...]) -> tuple[str, str]:
    found = [mine[(case, k)] for k in processes]
    rates = ' / '.join('FAIL' if r['rate'] is None else f'{r["rate"]:,}' for r in found)
    shares = ' / '.join('-' if r['of_limit'] is None else f'{r["of_limit"]:.2f}' for r in found)
    return rates, shares


async def run_backend(backend: str, args: argparse.Namespace, run_id: str, out: list[dict[str, Any]]) -> None:
    ok, why = availability(backend, DSNS[backend])
    if not ok:
        emit({'kind': 'unavailable', 'backend': backend, 'reason': why}, out)
        return
    steps = plan(args.repeat, args.processes)
    for rep, (case, k) in enumerate(steps):
        n = SIZES[args.size][case]
        emit({**await measure(backend, case, k, n, f'{run_id}{rep}'), 'rep': rep * args.repeat // len(steps) + 1},
             out)
    emit({'kind': 'cleanup', 'backend': backend, 'result': await cleanup(backend, DSNS[backend], run_id)}, out)


def emit(line: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(line)
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.scale', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backends', default=','.join(BACKENDS), help='comma-separated (default: all four)')
    parser.add_argument('--size', choices=sorted(SIZES), default='full')
    parser.add_argument('--repeat', type=int, default=3, help='repetitions (the median is reported)')
    parser.add_argument('--processes', default=','.join(map(str, PROCESSES)),
                        help='consumer and producer process counts (default: 1,2,4)')
    parser.add_argument('--out', help='write the JSON lines here')
    args = parser.parse_args(argv)
    try:
        args.processes = tuple(int(k) for k in args.processes.split(','))
    except ValueError:
        parser.error('--processes takes comma-separated numbers')
    if args.repeat < 1 or min(args.processes) < 1:
        parser.error('--repeat and --processes must be >= 1')
    backends = [b.strip() for b in args.backends.split(',') if b.strip()]
    if unknown := [b for b in backends if b not in BACKENDS]:
        parser.error(f'unknown backend(s) {unknown}, expected some of {list(BACKENDS)}')
    run_id = f'sc{uuid.uuid4().hex[:6]}'
    out: list[dict[str, Any]] = []
    load_start = [round(x, 2) for x in os.getloadavg()]
    for backend in backends:
        with kafka_server(port=PORTS['kafka'], wanted=backend == 'kafka') as problem:
            if problem:
                emit({'kind': 'unavailable', 'backend': backend, 'reason': problem}, out)
                continue
            asyncio.run(run_backend(backend, args, run_id, out))
    rows = summarize([x for x in out if x['kind'] == 'scale'], [b for b in backends if any(
        x['kind'] == 'scale' and x['backend'] == b for x in out)], args.processes)
    for row in rows:
        emit(row, out)
    # The figures mean little without the machine's load: other work shares its cores.
    emit({'kind': 'machine', 'cores': os.cpu_count(), 'load_start': load_start,
          'load_end': [round(x, 2) for x in os.getloadavg()]}, out)
    print(markdown(rows, args.processes))
    if args.out:
        Path(args.out).write_text(''.join(json.dumps(line) + '\n' for line in out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
