"""The Redis hot path's two ways to write a command: the fast buffer append and redis-py's public API.

The whole contract suite runs on both (``tests/backends/redis_public.py``); here: which one a command takes.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from microagent.tools.redis import _connection
from microagent.tools.redis._connection import RedisConnector, command, fast_writer, pack

from .redis_helpers import DSN
from .services import require_port


@pytest.fixture
async def conn() -> Any:
    require_port('redis', 6379)
    connector = RedisConnector(DSN, 'microagent.test.writes')
    connection = await connector.connection()
    yield connection
    await _connection.close_connection(connection)
    await connector.close()


def count_public_writes(monkeypatch: pytest.MonkeyPatch, conn: Any) -> list[bytes]:
    sent: list[bytes] = []
    public = conn.send_packed_command

    async def spy(data: bytes, check_health: bool = True) -> None:
        sent.append(data)
        await public(data, check_health=check_health)

    monkeypatch.setattr(conn, 'send_packed_command', spy)
    return sent


async def test_the_fast_path_appends_to_redis_pys_stream(monkeypatch, conn) -> None:
    if not _connection.FAST_WRITES:
        pytest.skip('this redis-py release is not one the fast path knows')
    assert type(fast_writer(conn)) is asyncio.StreamWriter
    sent = count_public_writes(monkeypatch, conn)
    assert await command(conn, 'ECHO', 'fast') == b'fast'
    assert await command(conn, raw=pack('ECHO', 'a') + pack('ECHO', 'b')) == b'a'  # the first reply
    assert await conn.read_response(timeout=5) == b'b'
    assert sent == []


async def test_fast_writes_off_takes_the_public_api(monkeypatch, conn) -> None:
    monkeypatch.setattr(_connection, 'FAST_WRITES', False)
    assert fast_writer(conn) is None
    sent = count_public_writes(monkeypatch, conn)
    assert await command(conn, 'ECHO', 'public') == b'public'
    assert sent == [pack('ECHO', 'public')]


def test_a_connection_shaped_otherwise_takes_the_public_api() -> None:
    """Another redis-py keeping something else (or nothing) as ``_writer``: the public path, not a crash."""
    assert fast_writer(SimpleNamespace(_writer=object())) is None  # type: ignore[arg-type]
    assert fast_writer(SimpleNamespace()) is None  # type: ignore[arg-type]


async def test_a_closed_connection_is_an_error_on_both_paths(monkeypatch, conn) -> None:
    await conn.disconnect()
    for fast in (True, False):
        monkeypatch.setattr(_connection, 'FAST_WRITES', fast)
        with pytest.raises(_connection.ConnectionError):
            await command(conn, 'PING')
