"""The security checks: canary passwords, TLS verification, declaration fetching, no pickle.

Each check returns rows ``{"check", "value", "limit", "ok"}`` like the fault
runs. The agent processes of the fault runs are checked for the canary too
(their DEBUG output, see :mod:`.verdict`); here the library is driven
in-process through failures and reconnects with every logger at DEBUG.

>>> rows = await run_security(('redis', 'amqp', 'kafka'))   # doctest: +SKIP
>>> all(r['ok'] for r in rows)                              # doctest: +SKIP
True
"""
from __future__ import annotations

import ast
import asyncio
import functools
import gc
import io
import logging
import os
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from microagent import Catalog, Queue
from microagent.loader import load_queues, read_source
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus
from microagent.tools.kafka import KafkaBroker
from microagent.tools.nats import NATSBroker, NATSSignalBus
from microagent.tools.redis import RedisBroker, RedisSignalBus

from .proxy import FaultProxy
from .servers import NATSServer, RedisServer, free_port
from .tls import LocalPKI, TLSServer

__all__ = ['run_security']

ROOT = Path(__file__).resolve().parent.parent
DECLARATIONS = b'{"queues": [{"name": "reliability_declared"}]}'


def _row(check: str, value: Any, limit: str, ok: bool) -> dict[str, Any]:
    return {'check': check, 'value': value, 'limit': limit, 'ok': bool(ok)}


async def _attempt(action: Callable[[], Awaitable[Any]], timeout: float = 3.0) -> str:
    """Run *action*; the full text of what it raised ('' when it succeeded)."""
    try:
        async with asyncio.timeout(timeout):
            await action()
    except Exception as exc:  # noqa: BLE001 - every failure's text is what is inspected
        return ''.join(traceback.format_exception(exc)) or type(exc).__name__
    return ''


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.buffer = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.write(self.format(record) + '\n')
        if record.exc_info:
            self.buffer.write(''.join(traceback.format_exception(*record.exc_info)))


async def canary_leaks(backends: tuple[str, ...]) -> list[dict[str, Any]]:
    """A canary password in every DSN, through refused, reset and unauthenticated connections, at DEBUG."""
    canary = f'canary{uuid.uuid4().hex}'
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    texts: list[str] = []
    try:
        for backend in backends:
            texts += await _exercise(backend, canary)
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    texts.append(capture.buffer.getvalue())
    texts.append(_metrics_text())
    leaks = sum(text.count(canary) for text in texts)
    failures = sum(1 for text in texts if text)
    return [_row('canary password in logs, reprs, errors, metrics (in-process, DEBUG)', leaks, '0', leaks == 0),
            _row('failures exercised with the canary DSNs', failures, '> 0', failures > 0)]


def _metrics_text() -> str:
    try:
        import prometheus_client
    except ImportError:
        return ''
    return bytes(prometheus_client.generate_latest()).decode()


async def _exercise(backend: str, canary: str) -> list[str]:
    catalog = Catalog()
    Queue(name=f'canary_{uuid.uuid4().hex[:8]}', catalog=catalog)
    dead_port = free_port()
    if backend == 'redis':
        return await _exercise_redis(canary, catalog, dead_port)
    if backend == 'nats':
        return await _exercise_nats(canary, catalog, dead_port)
    if backend == 'amqp':
        dsns = [f'amqp://canary_user:{canary}@127.0.0.1:{port}/' for port in (dead_port, 5672)]
        brokers: list[Any] = [AMQPBroker(d, catalog=catalog, publish_timeout=2, connect_timeout=2) for d in dsns]
        buses: list[Any] = [AMQPSignalBus(d, catalog=catalog) for d in dsns]
    else:
        dsns = [f'kafka://canary_user:{canary}@127.0.0.1:{dead_port}']
        brokers, buses = [KafkaBroker(d, catalog=catalog, request_timeout=2) for d in dsns], []
    return await _drive(brokers, buses, catalog)


async def _exercise_redis(canary: str, catalog: Catalog, dead_port: int) -> list[str]:
    server = RedisServer(free_port(), password=canary)

    def clients(dsns: list[str]) -> tuple[list[Any], list[Any]]:
        return ([RedisBroker(d, catalog=catalog, prefix='canary') for d in dsns],
                [RedisSignalBus(d, catalog=catalog) for d in dsns])
    return await _refused_and_cut(server, f'redis://:wrong{canary}@127.0.0.1:{server.port}/0', dead_port, clients,
                                  catalog)


async def _exercise_nats(canary: str, catalog: Catalog, dead_port: int) -> list[str]:
    server = NATSServer(password=canary)

    def clients(dsns: list[str]) -> tuple[list[Any], list[Any]]:
        return ([NATSBroker(d, catalog=catalog, connect_timeout=2, publish_timeout=3, prefix='canary') for d in dsns],
                [NATSSignalBus(d, catalog=catalog, connect_timeout=2) for d in dsns])
    return await _refused_and_cut(server, f'nats://reliability:wrong{canary}@127.0.0.1:{server.port}', dead_port,
                                  clients, catalog)


async def _refused_and_cut(server: Any, wrong: str, dead_port: int, clients: Callable[[list[str]], Any],
                           catalog: Catalog) -> list[str]:
    """A private server with the canary password: clients work, are cut and reconnect, then are refused
    (nothing listening, a wrong password)."""
    await asyncio.to_thread(server.start)
    proxy = await FaultProxy(server.port).start()
    try:
        brokers, buses = clients([server.dsn(dead_port), server.dsn(proxy.port), wrong])
        texts = await _drive(brokers[1:2], buses[1:2], catalog)  # works, then is cut and reconnects
        await proxy.reset()
        texts += await _drive(brokers, buses, catalog)
        return texts
    finally:
        await proxy.close()
        await asyncio.to_thread(server.close)


async def _drive(brokers: list[Any], buses: list[Any], catalog: Catalog) -> list[str]:
    texts = [repr(b) + str(b) for b in (*brokers, *buses)]
    name = next(iter(catalog.queues))
    for broker in brokers:
        texts.append(await _attempt(functools.partial(broker.send, name, '{"n": 1}')))
        texts.append(await _attempt(functools.partial(broker.queue_length, name)))
        texts.append(await _attempt(broker.close))
    for bus in buses:
        texts.append(await _attempt(functools.partial(bus.send, 'canary_signal', '{}')))
        texts.append(await _attempt(bus.close))
    return texts


async def tls_verification(backends: tuple[str, ...], directory: Path) -> list[dict[str, Any]]:
    """rediss://, amqps:// and https:// refuse an unknown CA and a wrong host name, and accept the right one."""
    pki = LocalPKI.create(directory)
    server = await TLSServer(pki, body=DECLARATIONS).start()
    rows = []
    try:
        cases = _tls_cases(backends, pki, server.port)
        for label, expect, action in cases:
            before = server.handshakes
            error = await _attempt(action)
            handshook = server.handshakes > before
            ok = handshook if expect == 'accepted' else (not handshook and bool(error))
            rows.append(_row(f'TLS {label}', 'handshake' if handshook else 'refused', expect, ok))
    finally:
        await server.close()
    return rows


def _tls_cases(backends: tuple[str, ...], pki: LocalPKI, port: int) -> list[tuple[str, str, Any]]:
    ca = pki.ca
    cases: list[tuple[str, str, Any]] = []
    if 'redis' in backends:
        def redis(host: str, query: str) -> Any:
            return lambda: RedisBroker(f'rediss://{host}:{port}/0{query}').queue_length('x')
        cases += [('rediss:// unknown CA', 'refused', redis('localhost', '')),
                  ('rediss:// wrong host name', 'refused', redis('127.0.0.1', f'?ssl_ca_certs={ca}')),
                  ('rediss:// right CA and host (control)', 'accepted', redis('localhost', f'?ssl_ca_certs={ca}'))]
    if 'amqp' in backends:
        def amqp(host: str, query: str) -> Any:
            broker = AMQPBroker(f'amqps://guest:guest@{host}:{port}/{query}', connect_timeout=3, publish_timeout=3)
            return lambda: _closing(broker, broker.queue_length('x'))
        cases += [('amqps:// unknown CA', 'refused', amqp('localhost', '')),
                  ('amqps:// wrong host name', 'refused', amqp('127.0.0.1', f'?cafile={ca}')),
                  ('amqps:// right CA and host (control)', 'accepted', amqp('localhost', f'?cafile={ca}'))]

    def https(host: str, trust: bool) -> Any:
        return lambda: asyncio.to_thread(_fetch_with_ca, f'https://{host}:{port}/q.json', ca if trust else None)
    cases += [('https:// declarations unknown CA', 'refused', https('localhost', trust=False)),
              ('https:// declarations wrong host name', 'refused', https('127.0.0.1', trust=True)),
              ('https:// declarations right CA and host (control)', 'accepted', https('localhost', trust=True))]
    return cases


async def _closing(broker: Any, action: Awaitable[Any]) -> None:
    try:
        await action
    finally:
        await broker.close()


def _fetch_with_ca(url: str, ca: Path | None) -> bytes:
    # The loader trusts the system store; SSL_CERT_FILE points that store at our CA for the control case.
    old = os.environ.get('SSL_CERT_FILE')
    if ca is not None:
        os.environ['SSL_CERT_FILE'] = str(ca)
    try:
        return read_source(url, timeout=3)
    finally:
        if ca is not None:
            if old is None:
                os.environ.pop('SSL_CERT_FILE', None)
            else:
                os.environ['SSL_CERT_FILE'] = old


async def http_declarations() -> list[dict[str, Any]]:
    """Plain http:// works with a warning, MICROAGENT_FORBID_HTTP=1 refuses it; timeout and size cap apply."""
    big = b'{"queues": [], "pad": "' + b'x' * 200_000 + b'"}'
    server = await asyncio.start_server(_plain_http(DECLARATIONS, big), '127.0.0.1', 0)
    silent = await asyncio.start_server(_silent, '127.0.0.1', 0)
    port, silent_port = server.sockets[0].getsockname()[1], silent.sockets[0].getsockname()[1]
    try:
        return await asyncio.to_thread(_http_rows, port, silent_port)
    finally:
        server.close()
        silent.close()


def _http_rows(port: int, silent_port: int) -> list[dict[str, Any]]:
    capture = _Capture()
    logger = logging.getLogger('microagent')
    level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.WARNING)  # whatever the caller's logging setup filters out, the warning must exist
    try:
        loaded = load_queues(f'http://127.0.0.1:{port}/q.json', catalog=Catalog())
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
    warned = 'plain http' in capture.buffer.getvalue()
    os.environ['MICROAGENT_FORBID_HTTP'] = '1'
    try:
        forbidden = _raises(lambda: load_queues(f'http://127.0.0.1:{port}/q.json', catalog=Catalog()))
    finally:
        os.environ.pop('MICROAGENT_FORBID_HTTP', None)
    capped = _raises(lambda: read_source(f'http://127.0.0.1:{port}/big.json', max_size=100_000))
    began = time.monotonic()
    timed_out = _raises(lambda: read_source(f'http://127.0.0.1:{silent_port}/q.json', timeout=1))
    took = round(time.monotonic() - began, 2)
    return [_row('http:// declarations load', hasattr(loaded, 'reliability_declared'), 'true',
                 hasattr(loaded, 'reliability_declared')),
            _row('http:// declarations log a warning', warned, 'true', warned),
            _row('MICROAGENT_FORBID_HTTP=1 refuses http://', forbidden, 'true', forbidden),
            _row('declaration size cap', capped, 'true', capped),
            _row('declaration fetch timeout 1 s (seconds taken)', took, '< 3', timed_out and took < 3)]


def _raises(action: Callable[[], Any]) -> bool:
    try:
        action()
    except Exception:  # noqa: BLE001 - any refusal counts; success is the failure here
        return True
    return False


def _plain_http(small: bytes, big: bytes) -> Any:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(5):
            request = await reader.readline()
        body = big if b'big' in request else small
        writer.write(f'HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n'.encode() + body)
        await writer.drain()
        writer.close()
    return serve


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Accepts and never answers: the client's timeout must end the wait.
    await reader.read()
    writer.close()


def _parse(path: Path) -> ast.Module:
    """*path*'s syntax tree, with no garbage collection while it is built.

    Python 3.11 formats tracebacks with ``ast.parse`` (for the carets): a finalizer that logs one (an
    unretrieved future's error, say) during a collection in the middle of an outer ``ast.parse`` corrupts
    the tree builder's depth count ("SystemError: AST constructor recursion depth mismatch", seen in the
    whole suite under ``--deps lowest``).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        if enabled:
            gc.enable()


def no_pickle(roots: tuple[str, ...] = ('microagent', 'reliability')) -> list[dict[str, Any]]:
    """No module imports pickle, cPickle, dill, shelve or marshal (they execute what they load)."""
    banned = {'pickle', 'cPickle', '_pickle', 'dill', 'shelve', 'marshal', 'cloudpickle'}
    found = []
    for root in roots:
        for path in sorted((ROOT / root).rglob('*.py')):
            for node in ast.walk(_parse(path)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ''] if isinstance(node, ast.ImportFrom) else []
                found += [f'{path.relative_to(ROOT)}: {n}' for n in names if n.split('.')[0] in banned]
    return [_row('pickle-like imports in microagent/ and reliability/', found, '[]', not found)]


async def run_security(backends: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every security check; rows for the report."""
    rows = await canary_leaks(backends)
    with tempfile.TemporaryDirectory(prefix='reliability-pki-') as directory:
        rows += await tls_verification(backends, Path(directory))
    rows += await http_declarations()
    rows += no_pickle()
    return rows
