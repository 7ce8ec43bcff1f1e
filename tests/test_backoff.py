"""The one backoff rule (capped exponential, full jitter) and the one DSN parser."""
from __future__ import annotations

import random

import pytest

from microagent._backoff import Backoff, ceiling
from microagent._dsn import mask_dsn, split_dsn
from microagent.exceptions import ConfigurationError
from microagent.loader import read_source


def test_ceiling_doubles_up_to_the_cap() -> None:
    assert [ceiling(0.1, 1.0, n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert ceiling(0.1, 1.0, 10_000) == 1.0  # no overflow for a loop that failed for days
    assert ceiling(1.0, 0.5, 0) == 0.5       # a cap below the base: always the cap


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.1, 2.0, rand=rng.random)
    for attempt in range(12):
        delays = [backoff.delay(attempt) for _ in range(400)]
        top = ceiling(0.1, 2.0, attempt)
        assert all(0.0 <= d <= top for d in delays)
        # Full jitter: the whole range is used, not a few per cent around the ceiling.
        assert min(delays) < top * 0.1 and max(delays) > top * 0.9


def test_next_grows_then_resets_and_floor_holds() -> None:
    backoff = Backoff(0.05, 0.3, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(5)] == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.3])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.05)
    assert Backoff(0.1, 10.0, floor=0.05, rand=lambda: 0.0).next() == 0.05
    with pytest.raises(ConfigurationError):
        Backoff(-1.0, 1.0)


def test_split_dsn_takes_host_lists_and_decodes_credentials() -> None:
    parts = split_dsn('nats://tok%40en@a,b:4223')
    assert (parts.user, parts.password, parts.hosts) == ('tok@en', None, ('a', 'b:4223'))
    parts = split_dsn('amqps://u:p%3Aw@mq:5671/vh?heartbeat=5')
    assert (parts.scheme, parts.user, parts.password, parts.path, parts.query) == (
        'amqps', 'u', 'p:w', '/vh', 'heartbeat=5')
    assert 'p:w' not in repr(parts) and 'p%3Aw' not in repr(parts)
    assert split_dsn('no-scheme').hosts == ()


def test_loader_masks_the_password_and_keeps_the_port() -> None:
    with pytest.raises(ConfigurationError) as err:
        read_source('ftp://bob:secret@files.example:2121/decl.json')
    assert 'secret' not in str(err.value)
    assert 'bob:***@files.example:2121' in str(err.value)
    assert mask_dsn('http://bob:secret@h:8080/x') == 'http://bob:***@h:8080/x'
