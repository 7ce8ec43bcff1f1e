"""The traced chain of the telemetry tests: signal -> receiver -> queue -> consumer -> RPC.

``Front`` receives ``placed`` and sends the order to the ``work`` queue;
``Worker`` consumes it and asks ``price`` over RPC; ``Pricer`` answers. The
same classes run in one process (contract suite) or one per OS process
(``tests/telemetry_settings.py`` under the launcher).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microagent import Catalog, MicroAgent, Queue, Signal, consumer, receiver
from microagent.delivery import current_delivery


@dataclass
class Chain:
    placed: Signal
    price: Signal
    work: Queue
    front: type[MicroAgent]
    worker: type[MicroAgent]
    pricer: type[MicroAgent]


def chain(catalog: Catalog, uid: str, fails: int = 0, marker_dir: str | None = None) -> Chain:
    """Declarations in *catalog* (names end in *uid*); the consumer fails its first *fails* attempts.

    With *marker_dir*, the worker writes ``done-<n>`` there once it has the RPC answer.
    """
    placed = Signal(name=f'placed_{uid}', providing_args=['n'], catalog=catalog)
    price = Signal(name=f'price_{uid}', providing_args=['n'], catalog=catalog)
    work = Queue(name=f'work_{uid}', catalog=catalog)

    class Front(MicroAgent):
        @receiver(placed)
        async def on_placed(self, signal: Any, sender: str, n: int) -> None:
            await getattr(self.broker, work.name).send({'n': n})

    class Worker(MicroAgent):
        answers: list[Any]

        @consumer(work, max_attempts=2 if fails < 2 else 1, retry_delay=0.05)
        async def handle(self, n: int) -> None:
            delivery = current_delivery()
            if delivery is not None and delivery.attempt <= fails:
                raise RuntimeError(f'attempt {delivery.attempt} fails on purpose')
            answer = await getattr(self.bus, price.name).call('worker', n=n, timeout=20)
            self.settings.setdefault('answers', []).append(answer)
            if marker_dir:
                Path(marker_dir, f'done-{n}').write_text(str(answer))

    class Pricer(MicroAgent):
        @receiver(price)
        async def on_price(self, signal: Any, sender: str, n: int) -> int:
            return n * 2

    return Chain(placed, price, work, Front, Worker, Pricer)


def by_name(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Spans (as ``microagent.telemetry.sdk.span_record`` dicts) grouped by name, in start order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s['start'] or 0):
        out.setdefault(span['name'], []).append(span)
    return out


def check_chain(spans: list[dict[str, Any]], uid: str,
                root: str | None = 'request') -> dict[str, list[dict[str, Any]]]:
    """Assert the chain's spans form ONE trace with the right parents; the spans by name."""
    named = by_name(spans)
    wanted = [*([root] if root else []), f'send placed_{uid}', f'process placed_{uid}', f'send work_{uid}',
              f'process work_{uid}', f'call price_{uid}', f'process price_{uid}']
    missing = [name for name in wanted if name not in named]
    if missing:
        raise AssertionError(f'missing spans {missing}; have {sorted(named)}')
    traces = {s['trace_id'] for name in wanted for s in named[name]}
    if len(traces) != 1:
        raise AssertionError(f'{len(traces)} traces, not one: {traces}')
    for parent, child in itertools.pairwise(wanted):
        ids = {s['span_id'] for s in named[parent]}
        for span in named[child]:
            if span['parent_id'] not in ids:
                raise AssertionError(f'{child} ({span["span_id"]}) is not a child of {parent}')
    return named


def pids(spans: list[dict[str, Any]]) -> set[int]:
    """The OS processes the spans came from."""
    return {s['pid'] for s in spans}


def test_dir() -> str | None:
    return os.environ.get('TELEMETRY_TEST_DIR')
