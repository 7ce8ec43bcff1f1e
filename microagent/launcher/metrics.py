"""Health, metrics and the status page over HTTP (``--http-port``).

* ``/``: the live status page (:mod:`microagent.launcher.statuspage`).
* ``/status.json``: the same data as JSON (:mod:`microagent.launcher.snapshot`).

* ``/healthz``: 200 while every worker process is alive, else 503.
* ``/readyz``: 200 while every agent reports it is connected and consuming (each consumer reading, each
  bus subscription live: ``MicroAgent.ready()``), else 503, so also while a connection is lost.
* ``/metrics``: handled, failed, retried and dead-lettered counts, handler
  latency histograms, in-flight counts and queue lengths per agent, replica
  and queue; signals sent, received and dropped, receiver runs, RPC latency;
  schedule runs, failures, misses and singleton holders; process liveness
  and restarts (needs ``prometheus-client``: ``pip install "microagent[metrics]"``).
  Names: ``docs/observability.md``.

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> server = await serve(supervisor, '127.0.0.1', 9100)   # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendNotInstalled
from ..telemetry.numbers import COUNTS, GAUGES
from .report import BUCKETS, COUNTERS
from .snapshot import snapshot
from .statuspage import PAGE

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ['GroupCollector', 'serve']

log = logging.getLogger('microagent.launcher')
READ_TIMEOUT = 5.0
LABELS = ['agent', 'replica', 'queue']


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise BackendNotInstalled('--http-port needs prometheus-client: pip install "microagent[metrics]"') from exc
    return prometheus_client


class GroupCollector:
    """A prometheus-client collector reading the supervisor's latest worker reports at scrape time.

    Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
    >>> registry.register(GroupCollector(supervisor))   # doctest: +SKIP
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        core = _prometheus().core
        up = core.GaugeMetricFamily('microagent_agent_up', 'Agent process is alive', labels=LABELS[:2])
        ready = core.GaugeMetricFamily('microagent_agent_ready', 'Agent is connected and consuming',
                                       labels=LABELS[:2])
        restarts = core.CounterMetricFamily('microagent_agent_restarts', 'Agent process restarts',
                                            labels=LABELS[:2])
        for slot in self.supervisor.slots:
            for agent, replica in slot.instances:
                labels = [agent, str(replica)]
                up.add_metric(labels, 1.0 if slot.alive else 0.0)
                ready.add_metric(labels, 1.0 if slot.alive and slot.ready.get((agent, replica)) else 0.0)
                restarts.add_metric(labels, slot.restarts)
        yield from (up, ready, restarts)
        yield from self._consumers(core)

    def _consumers(self, core: Any) -> Iterator[Any]:
        counters = {c: core.CounterMetricFamily(f'microagent_messages_{c}', f'Messages {c.replace("_", " ")}',
                                                labels=LABELS) for c in COUNTERS}
        latency = core.HistogramMetricFamily('microagent_handler_latency_seconds',
                                             'Consumer handler latency (successful runs)', labels=LABELS)
        length = core.GaugeMetricFamily('microagent_queue_length', 'Messages waiting in the queue', labels=LABELS)
        for slot in self.supervisor.slots:
            for (agent, replica, queue), entry in slot.totals().items():
                labels = [agent, str(replica), queue]
                for counter, family in counters.items():
                    family.add_metric(labels, entry[counter])
                latency.add_metric(labels, buckets=_cumulative(entry['buckets']), sum_value=entry['sum'])
                if entry.get('length') is not None:
                    length.add_metric(labels, entry['length'])
        inflight = core.GaugeMetricFamily('microagent_handler_inflight', 'Messages being handled now', labels=LABELS)
        for slot in self.supervisor.slots:
            for (agent, replica, queue), entry in slot.current.items():
                inflight.add_metric([agent, str(replica), queue], float(entry.get('inflight', 0)))
        yield from (*counters.values(), latency, length, inflight)
        yield from self._series(core)
        yield from self._rpc(core)

    def _series(self, core: Any) -> Iterator[Any]:
        families: dict[tuple[str, tuple[str, ...]], Any] = {}
        for slot in self.supervisor.slots:
            for (agent, replica, name, labels), value in sorted(slot.series_totals().items()):
                names = tuple(label for label, _ in labels)
                family = families.get((name, names))
                if family is None:
                    kind, text = ((core.CounterMetricFamily, COUNTS[name]) if name in COUNTS
                                  else (core.GaugeMetricFamily, GAUGES.get(name, name)))
                    family = families[(name, names)] = kind(f'microagent_{name}', text,
                                                            labels=[*LABELS[:2], *names])
                family.add_metric([agent, str(replica), *(v for _, v in labels)], value)
        yield from families.values()

    def _rpc(self, core: Any) -> Iterator[Any]:
        latency = core.HistogramMetricFamily('microagent_rpc_latency_seconds',
                                             'RPC call time until the first response', labels=[*LABELS[:2], 'signal'])
        for slot in self.supervisor.slots:
            for (agent, replica, signal), entry in slot.rpc_totals().items():
                latency.add_metric([agent, str(replica), signal], buckets=_cumulative(entry['buckets']),
                                   sum_value=entry['sum'])
        yield latency


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, count in zip(BUCKETS, counts, strict=False):
        total += count
        out.append(('+Inf' if bound == float('inf') else repr(bound), float(total)))
    return out


async def serve(supervisor: Supervisor, host: str, port: int) -> asyncio.Server:
    """Start the health and metrics server; ``server.sockets[0].getsockname()`` has the real port."""
    prometheus = _prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(GroupCollector(supervisor))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b'\r\n\r\n')
            status, ctype, body = _route(supervisor, registry, prometheus, head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, ctype, body = '400 Bad Request', 'text/plain', b'bad request\n'
        except Exception:
            log.exception('health/metrics request failed')
            status, ctype, body = '500 Internal Server Error', 'text/plain', b'error\n'
        try:
            writer.write(f'HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n'
                         f'Cache-Control: no-store\r\nConnection: close\r\n\r\n'.encode() + body)
            async with asyncio.timeout(READ_TIMEOUT):
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


def _route(supervisor: Supervisor, registry: Any, prometheus: Any, head: bytes) -> tuple[str, str, bytes]:
    method, path, _ = head.split(b'\r\n', 1)[0].decode('latin-1').split(' ', 2)
    path = path.split('?', 1)[0]
    if method not in ('GET', 'HEAD'):
        return '405 Method Not Allowed', 'text/plain', b'GET only\n'
    if path == '/metrics':
        return '200 OK', prometheus.CONTENT_TYPE_LATEST, prometheus.generate_latest(registry)
    if path == '/':
        return '200 OK', 'text/html; charset=utf-8', PAGE.encode()
    if path == '/status.json':
        return '200 OK', 'application/json', json.dumps(snapshot(supervisor)).encode()
    checks = {'/healthz': supervisor.healthy, '/readyz': supervisor.ready}
    if path not in checks:
        return '404 Not Found', 'text/plain', b'not found\n'
    ok = checks[path]()
    return ('200 OK', 'text/plain', b'ok\n') if ok else ('503 Service Unavailable', 'text/plain', b'not ready\n')
