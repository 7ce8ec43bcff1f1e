"""Leave no transaction half-open: roll back on an exception, close the connection on a cancellation.

A cancelled block may be in the middle of a statement (a handler timed out on
a slow query). Closing the socket does not stop the server's backend until
that statement ends, and it keeps its locks (the inbox row among them) until
then, so *reap* is given the backend's pid to terminate it from another
connection (``pg_terminate_backend``).

Not run: needs PostgreSQL (and the backends of the broker and bus).
>>> async with pool.acquire() as connection, rolled_back_on_error(connection, 30.0, log, reap):  # doctest: +SKIP
...     await connection.execute('BEGIN'); ...; await connection.execute('COMMIT')
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .._dsn import mask_text

if TYPE_CHECKING:

    from ._types import Connection

__all__ = ['rolled_back_on_error']


@contextlib.asynccontextmanager
async def rolled_back_on_error(connection: Connection, timeout: float, log: logging.Logger,
                               reap: Callable[[int], None] | None = None) -> AsyncIterator[None]:
    """Roll the open transaction back if the block raises; if it is cancelled, close the connection instead."""
    try:
        yield
    except asyncio.CancelledError:
        # No round trip while cancelled (the network may be what hangs): the server rolls back when the
        # connection goes, and the pool replaces it.
        pid = None
        with contextlib.suppress(Exception):  # a connection closed already has nothing left to end
            pid = connection.get_server_pid()
            connection.terminate()
        if reap is not None and pid is not None:
            reap(pid)
        raise
    except BaseException:
        await _rollback(connection, timeout, log)
        raise


async def _rollback(connection: Connection, timeout: float, log: logging.Logger) -> None:
    try:
        await connection.execute('ROLLBACK', timeout=timeout)
    except BaseException as exc:
        log.debug('effects: rollback failed (%s); closing the connection', mask_text(f'{type(exc).__name__}: {exc}'))
        # Already closed (and given back to the pool) is fine: the server rolled back when it went.
        with contextlib.suppress(Exception):
            connection.terminate()
        if not isinstance(exc, Exception):
            raise
