"""A loopback TCP proxy that cuts connections on command: reset them, or blackhole them for a while.

It sits between clients and a broker through the DSN port, so it works the
same for every backend and touches only the connections that go through it
(other users of the shared servers never see it)::

    proxy = FaultProxy(6379)
    await proxy.start()
    dsn = f'redis://127.0.0.1:{proxy.port}/9'
    await proxy.reset()                  # every open connection gets a TCP RST
    proxy.blackhole(True)                # bytes are swallowed, new connections hang
    proxy.blackhole(False)
    await proxy.close()

Kafka clients learn broker addresses from metadata, so for Kafka the proxied
port must be the one the broker advertises: :class:`reliability.servers.TansuServer`
starts tansu behind it with ``--advertised-listener-url`` pointing at the proxy.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct

from microagent._tasks import TaskSet

__all__ = ['FaultProxy']

HOST = '127.0.0.1'
_CHUNK = 65536


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``; ``reset()`` and ``blackhole()`` inject faults.

    >>> proxy = FaultProxy(5672)          # doctest: +SKIP
    >>> await proxy.start(); proxy.port   # doctest: +SKIP
    40123
    """

    def __init__(self, target: int, port: int = 0, connect_timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.port = port
        self.connect_timeout = connect_timeout
        # With a server context the proxy terminates TLS: clients speak TLS, the target plain TCP.
        self.ssl_context = ssl_context
        self.connections = 0
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks = TaskSet('fault proxy')
        self._open = asyncio.Event()
        self._open.set()

    def __repr__(self) -> str:
        return f'<FaultProxy {HOST}:{self.port} -> {self.target} blackholed={not self._open.is_set()}>'

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, HOST, self.port, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def reset(self) -> int:
        """Abort every open connection with a TCP RST (SO_LINGER 0); how many were cut."""
        writers, self._writers = list(self._writers), set()
        for writer in writers:
            _abort(writer)
        self.resets += len(writers)
        return len(writers)

    def blackhole(self, on: bool) -> None:
        """Swallow traffic (on) or let it flow again (off); open connections stay open either way."""
        if on:
            self._open.clear()
        else:
            self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.reset()
        await self._tasks.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            # A blackholed proxy accepts and then says nothing, like a dead route.
            await self._open.wait()
            async with asyncio.timeout(self.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(HOST, self.target)
        except (OSError, TimeoutError):
            _abort(writer)
            return
        self._writers.add(up_writer)
        pair = (self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        done = [self._tasks.spawn(coro, name='proxy pipe') for coro in pair]
        await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
        for writer_ in (writer, up_writer):
            _abort(writer_)
            self._writers.discard(writer_)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                await self._open.wait()
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info('socket')
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    writer.transport.abort()
