"""The Redis backend with every command written through redis-py's public API (the fast write path off)."""
from __future__ import annotations

import dataclasses

import pytest

from microagent.tools.redis import _connection

from .redis import BACKEND as FAST


def _public_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_connection, 'FAST_WRITES', False)


BACKEND = dataclasses.replace(FAST, name='redis_public', patch=_public_writes)
