"""``python -m benchmarks.redis_cluster``: the Redis broker's send rate on one server and on a Redis Cluster.

    .venv/bin/python -m benchmarks.redis_cluster [--size 5000] [--repeat 3] [--cluster redis+cluster://h:p,...]

Each case sends *size* ~110-byte messages with ``await broker.send(...)``,
after 10 warm-up sends, and reports messages per second (median of the
repetitions; the cases alternate within each repetition, so all see the same
noise). ``--queues 3`` adds cases with one producer per queue on three queues
at once (on a cluster: as many masters, when the names hash so). Without
``--cluster`` a private 3-master/3-replica cluster is started for the run
(``tests/redis_cluster.py``, the machine's ``redis-server``) and removed after.
One server is ``redis://127.0.0.1:6379/14``. Every key a run makes carries its
id and is deleted at the end. Prints one JSON line per case, then a summary.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from microagent import Catalog, Queue
from microagent.tools.redis import RedisBroker

from .settings import payload

ONE_SERVER = 'redis://127.0.0.1:6379/14'
CASES = (('one server', 'one', 0), ('cluster', 'cluster', 0), ('cluster, min_replicas=1', 'cluster', 1))


async def _rate(dsn: str, min_replicas: int, queues: int, size: int, run: str) -> float:
    """Messages per second: *queues* producers at once, *size* sequential sends each."""
    catalog = Catalog()
    names = [f'bench_{run}_{i}' for i in range(queues)]
    for name in names:
        Queue(name, catalog=catalog)
    broker = RedisBroker(dsn, catalog=catalog, prefix=f'bench-{run}', min_replicas=min_replicas)
    body = json.dumps(payload(0))

    async def produce(name: str, count: int) -> None:
        for _ in range(count):
            await broker.send(name, body)

    try:
        await asyncio.gather(*(produce(name, 10) for name in names))  # warm-up: connections open
        started = time.perf_counter()
        await asyncio.gather(*(produce(name, size) for name in names))
        return queues * size / (time.perf_counter() - started)
    finally:
        await broker.redis.client().delete(*(broker.stream(name) for name in names))
        await broker.close()


async def measure(cluster_dsn: str, size: int, repeat: int, queues: int) -> list[dict[str, Any]]:
    cases = [(label, q) for label, _, _ in CASES for q in sorted({1, queues})]
    rates: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    for _ in range(repeat):
        for label, where, min_replicas in CASES:
            for q in sorted({1, queues}):
                dsn = ONE_SERVER if where == 'one' else cluster_dsn
                rate = await _rate(dsn, min_replicas, q, size, uuid.uuid4().hex[:8])
                rates[(label, q)].append(rate)
                print(json.dumps({'case': label, 'queues': q, 'size': size, 'rate': round(rate)}), flush=True)
    return [{'case': label, 'queues': q, 'median_rate': round(statistics.median(rates[(label, q)])),
             'runs': [round(r) for r in rates[(label, q)]]} for label, q in cases]


@contextmanager
def _cluster(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from tests.redis_cluster import LocalCluster  # the tests' fixture: the machine's redis-server, temp dirs
    cluster = LocalCluster().start()
    try:
        yield cluster.dsn()
    finally:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.redis_cluster', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=5000, help='sends per producer and case')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--queues', type=int, default=3, help='also this many queues at once (1: only one)')
    parser.add_argument('--cluster', help='a redis+cluster:// DSN (default: a private cluster started here)')
    args = parser.parse_args(argv)
    with _cluster(args.cluster) as dsn:
        summary = asyncio.run(measure(dsn, args.size, args.repeat, args.queues))
    base = {row['queues']: row['median_rate'] for row in summary if row['case'] == 'one server'}
    for row in summary:
        row['vs_one_server'] = round(row['median_rate'] / base[row['queues']], 2)
        print(json.dumps(row))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
