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
