"""Sends confirmed only once replicated: the write and ``WAIT <replicas> <timeout>`` on one connection.

Redis replicates asynchronously: a write the master confirmed may be lost if
the master dies before a replica got it (a replica promoted in its place
never had it). ``WAIT n ms`` blocks until *n* replicas acknowledged every
earlier write of the same connection, so :class:`ConfirmedWriter` writes the
command and the WAIT together on a bare connection of its own to the master
of the key (in a cluster: of the key's slot), and reads both replies there.

No retries on that connection, on purpose: a client library that sends the
WAIT again after a lost connection may send it to another node (redis-py's
cluster pipeline does, measured: ``docs/scaling.md``), whose replicas then
"confirm" a write they never saw. Any error is an unconfirmed send.

A send that is not confirmed in time raises :class:`BackendError`; it may
still have been written (and be delivered): sending again can give a
duplicate, never a loss. WAIT narrows the window, it is not consensus: with
several replicas, the one promoted may not be one that acknowledged.

Not run: needs a Redis server with a replica.
>>> writer = ConfirmedWriter(connector)                                                 # doctest: +SKIP
>>> await writer.write('app:{q}', ('XADD', 'app:{q}', '*', 'b', '{}'), replicas=1, timeout=1.0)  # doctest: +SKIP
b'1700000000000-0'
"""
from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from ...exceptions import BackendError
from ._connection import RedisConnector, close_connection, pack

__all__ = ['ConfirmedWriter']

_IDLE = 8  # idle connections kept per key: as many as concurrent confirmed sends usually need
_IDLE_TOTAL = 32  # and over all keys (one per queue on a cluster): many queues must not mean many sockets


class ConfirmedWriter:
    """Writes commands followed by WAIT on bare connections of its own, one command at a time on each."""

    def __init__(self, connector: RedisConnector) -> None:
        self.connector = connector
        self._idle: dict[str, list[Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, key: str, command: tuple[Any, ...], replicas: int, timeout: float) -> Any:
        """Run *command* (on *key*), then wait for *replicas* replicas to have it; its reply."""
        conn = await self._take(key)
        in_step = False
        try:
            await conn.send_packed_command(pack(*command) + pack('WAIT', replicas, max(1, round(timeout * 1000))),
                                           check_health=False)
            reply = await conn.read_response(timeout=timeout + 10)
            acked = await conn.read_response(timeout=timeout + 10)
            in_step = True
        except (RedisError, OSError) as exc:
            raise self.connector.error(exc, f'cannot confirm a write to {key}') from None
        finally:
            await self._give_back(key, conn, in_step)
        if int(acked) < replicas:
            raise BackendError(f'{self.connector!r}: write to {key} not confirmed: {acked} of {replicas} replicas '
                               f'had it after {timeout}s (it may still be delivered)')
        return reply

    async def _take(self, key: str) -> Connection:
        if self._loop is not asyncio.get_running_loop():
            self._idle, self._loop = {}, asyncio.get_running_loop()  # those of another loop are unusable here
        idle = self._idle.get(key)
        if idle:
            return idle.pop()
        return await self.connector.connection(key=key)

    async def _give_back(self, key: str, conn: Connection, in_step: bool) -> None:
        idle = self._idle.setdefault(key, [])
        if in_step and len(idle) < _IDLE and sum(map(len, self._idle.values())) < _IDLE_TOTAL:
            idle.append(conn)
        else:  # out of step (an error mid-command) or enough kept
            await close_connection(conn)

    async def close(self) -> None:
        idle, loop, self._idle, self._loop = self._idle, self._loop, {}, None
        if loop is asyncio.get_running_loop():
            for conns in idle.values():
                for conn in conns:
                    await close_connection(conn)
