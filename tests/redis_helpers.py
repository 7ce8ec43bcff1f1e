"""Shared pieces of the Redis backend tests: the test DB, an admin client, cleanup, fault injection."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from .services import require_port

DSN = 'redis://127.0.0.1:6379/15'


@pytest.fixture
async def admin() -> AsyncIterator[redis.Redis]:
    """A plain redis-py client on the test DB, for inspecting and injecting faults."""
    require_port('redis', 6379)
    client = redis.Redis.from_url(DSN, protocol=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(admin: redis.Redis, uid: str) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted after the test."""
    name = f'matest-{uid}'
    try:
        yield name
    finally:
        keys = [key async for key in admin.scan_iter(match=f'{name}:*', count=500)]
        if keys:
            await admin.delete(*keys)


async def client_ids(admin: redis.Redis, name: str, pubsub: bool | None = None) -> list[int]:
    """Ids of the connections whose client name is *name* (ours only: names carry our uid)."""
    found = []
    for client in await admin.client_list():
        if client.get('name') != name:
            continue
        subscribed = int(client.get('sub', 0)) + int(client.get('psub', 0)) > 0
        if pubsub is None or pubsub == subscribed:
            found.append(int(client['id']))
    return found


async def kill_clients(admin: redis.Redis, name: str, pubsub: bool | None = None) -> int:
    """CLIENT KILL ID each connection named *name*; how many were killed."""
    killed = 0
    for client_id in await client_ids(admin, name, pubsub):
        killed += int(await admin.client_kill_filter(_id=client_id))
    return killed
