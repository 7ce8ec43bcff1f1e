"""amqps:// verifies the server certificate: a self-signed server is refused unless trusted."""
from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from microagent import BackendError, Catalog, Queue
from microagent.tools.amqp import AMQPBroker


@pytest.fixture
async def tls_port(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A TLS server with a self-signed certificate for 127.0.0.1 (it speaks no AMQP)."""
    cert, key = tmp_path / 'cert.pem', tmp_path / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj',
                    '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', str(key),
                    '-out', str(cert)], check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
    server = await asyncio.start_server(serve, '127.0.0.1', 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], cert
    finally:
        server.close()
        await server.wait_closed()


async def test_untrusted_certificate_is_refused(tls_port, uid):
    port, _ = tls_port
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    broker = AMQPBroker(f'amqps://guest:canarytls@127.0.0.1:{port}/', catalog=catalog, connect_timeout=2)
    with pytest.raises(BackendError) as error:
        await getattr(broker, queue.name).send({'n': 1}, timeout=3)
    await broker.close()
    assert 'CERTIFICATE_VERIFY_FAILED' in str(error.value) or 'certificate verify failed' in str(error.value)
    assert 'canarytls' not in str(error.value)


async def test_trusted_certificate_passes_the_handshake(tls_port, uid):
    port, cert = tls_port
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    context = ssl.create_default_context(cafile=str(cert))
    broker = AMQPBroker(f'amqps://guest:canarytls@127.0.0.1:{port}/', catalog=catalog, connect_timeout=2,
                        ssl_context=context)
    with pytest.raises(BackendError) as error:
        await getattr(broker, queue.name).send({'n': 1}, timeout=3)
    await broker.close()
    # The TLS handshake succeeded; only the AMQP exchange afterwards failed.
    assert 'certificate verify failed' not in str(error.value).lower()


async def test_amqps_carries_real_traffic(tmp_path: Path, uid):
    """Publishes, confirms, deliveries and acks over TLS (a TLS-terminating proxy in front of RabbitMQ)."""
    from microagent import MicroAgent, consumer
    from reliability.proxy import FaultProxy
    from reliability.tls import LocalPKI

    from .amqp_support import require_rabbit
    from .helpers import Collector
    require_rabbit()
    pki = LocalPKI.create(tmp_path / 'pki')
    proxy = await FaultProxy(5672, ssl_context=pki.server_context()).start()
    catalog = Catalog()
    queue = Queue(f'q_{uid}', catalog=catalog)
    seen = Collector()

    class Agent(MicroAgent):
        @consumer(queue)
        async def handle(self, n: int, pad: str) -> None:
            seen.add(n)
    context = ssl.create_default_context(cafile=str(pki.ca))
    broker = AMQPBroker(f'amqps://guest:guest@localhost:{proxy.port}/', catalog=catalog, ssl_context=context,
                        queue_expires=120)
    agent = Agent(broker=broker)
    try:
        await agent.start()
        for n in range(50):
            await getattr(broker, queue.name).send({'n': n, 'pad': 'x' * (n * 5000)})
        await seen.wait(50, 20)
        assert sorted(seen.items) == list(range(50))
        assert proxy.connections == 2  # publishing and consuming, both over TLS
    finally:
        await agent.stop(timeout=1)
        await broker.close()
        await proxy.close()
