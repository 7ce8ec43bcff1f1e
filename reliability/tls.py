"""A local certificate authority and a small TLS server that counts completed handshakes.

The server answers every request with a tiny HTTP response (enough for an
``https://`` declaration fetch; a Redis or AMQP client gets garbage and
fails after the handshake). A client that refuses the certificate never
completes a handshake, so ``handshakes`` tells a verified refusal from a
silent fallback.

>>> pki = LocalPKI.create(Path('/tmp/pki'))                       # doctest: +SKIP
>>> server = await TLSServer(pki, body=b'{"queues": []}').start()  # doctest: +SKIP
>>> server.handshakes                                              # doctest: +SKIP
0
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ['LocalPKI', 'TLSServer']


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class LocalPKI:
    """Files of a throw-away CA and of a server certificate valid for ``localhost`` only (not 127.0.0.1)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, host: str = 'localhost') -> LocalPKI:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (x509.CertificateBuilder().subject_name(_name('reliability test CA'))
                   .issuer_name(_name('reliability test CA')).public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pki = cls(directory / 'ca.pem', directory / 'server.pem', directory / 'server.key')
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pki.key.write_bytes(_pem(key))
        return pki

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def is_ip(host: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    return False


class TLSServer:
    """TLS on a free loopback port; counts handshakes, answers with an HTTP 200 carrying *body*."""

    def __init__(self, pki: LocalPKI, body: bytes = b'{}') -> None:
        self.pki = pki
        self.body = body
        self.port = 0
        self.handshakes = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> TLSServer:
        self._server = await asyncio.start_server(self._serve, '127.0.0.1', 0, ssl=self.pki.server_context(),
                                                  ssl_handshake_timeout=5)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called only once the TLS handshake has completed.
        self.handshakes += 1
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await reader.read(4096)
            head = f'HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n'
            writer.write(head.encode() + self.body)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
