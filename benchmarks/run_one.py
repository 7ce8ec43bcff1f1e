"""One scenario, one side, one repetition, in this process; prints one JSON line.

The parent (``python -m benchmarks``) runs this in a fresh process per
measurement, so no run inherits another's warm caches, tasks or garbage::

    .venv/bin/python -m benchmarks.run_one --backend redis --scenario A --side raw --n 1000 --uid t1

The line always has ``status``: ``ok`` with the figures, ``incomplete`` (some
message never arrived before the deadline: ``count`` says how many did),
``unavailable`` (backend module or client library missing) or ``error``;
never a guessed number.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import time
from typing import Any

from microagent._dsn import mask_text, password_of
from microagent.exceptions import BackendNotInstalled, ConfigurationError

from .library import Ctx
from .measure import Incomplete
from .settings import BATCH, DSNS, OWN_BASELINE, SCENARIOS

__all__ = ['main', 'measure']

DSN_ENV = 'MICROAGENT_BENCH_DSN'  # the parent passes the DSN here (never in argv: passwords)
RAW_MODULES = {'redis': 'benchmarks.raw_redis', 'amqp': 'benchmarks.raw_amqp', 'kafka': 'benchmarks.raw_kafka',
               'nats': 'benchmarks.raw_nats'}


async def measure(ctx: Ctx, scenario: str, side: str) -> dict[str, Any]:
    """The figures of *scenario* on *side* (``lib`` or ``raw``); raises on failure."""
    if scenario in OWN_BASELINE:  # both sides are library code: E's plain side is a hand-written handler
        effects = importlib.import_module('benchmarks.effects')
        figures: dict[str, Any] = await effects.run(ctx, side)
        return figures
    module = importlib.import_module('benchmarks.library' if side != 'raw' else RAW_MODULES[ctx.backend])
    result: dict[str, Any] = await module.run(ctx, scenario)
    return result


async def guarded(ctx: Ctx, scenario: str, side: str) -> dict[str, Any]:
    """:func:`measure` with an overall deadline, turning every failure into a status."""
    try:
        async with asyncio.timeout(ctx.timeout * 1.5):
            return {'status': 'ok', **await measure(ctx, scenario, side)}
    except Incomplete as exc:
        return {'status': 'incomplete', 'count': exc.seen, 'error': str(exc)}
    except TimeoutError:
        return {'status': 'incomplete', 'error': f'no result within {ctx.timeout * 1.5:.0f}s'}
    except (BackendNotInstalled, ModuleNotFoundError) as exc:
        return {'status': 'unavailable', 'error': f'{type(exc).__name__}: {exc}'}
    except ConfigurationError as exc:
        status = 'unavailable' if 'cannot import' in str(exc) else 'error'
        return {'status': status, 'error': f'{type(exc).__name__}: {exc}'}
    except Exception as exc:
        return {'status': 'error', 'error': f'{type(exc).__name__}: {exc}'}


def traced() -> tuple[Any, Any]:
    """A tracer provider with the SDK's batch span processor, and a Telemetry using it.

    Spans are exported to nowhere: the cost measured is the library's and the SDK's, not a collector's.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from microagent.telemetry import Telemetry

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return provider, Telemetry(tracer_provider=provider)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.run_one', description=__doc__)
    parser.add_argument('--backend', required=True, choices=sorted(DSNS))
    parser.add_argument('--scenario', required=True, choices=SCENARIOS)
    parser.add_argument('--side', default='lib', choices=('lib', 'raw', 'traced'),
                        help='traced: the library with tracing on (SDK, batch span processor)')
    parser.add_argument('--n', type=int, required=True, help='messages or calls')
    parser.add_argument('--uid', required=True, help='lower-case [a-z0-9_] suffix for fresh names')
    parser.add_argument('--dsn', help=f'override the backend DSN (or set ${DSN_ENV})')
    parser.add_argument('--timeout', type=float, default=60.0, help='seconds to wait for the messages')
    parser.add_argument('--batch', type=int, default=BATCH)
    parser.add_argument('--rep', type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print the JSON line, exit 0 (the status tells the outcome)."""
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    dsn = args.dsn or os.environ.get(DSN_ENV) or DSNS[args.backend]
    provider, telemetry = traced() if args.side == 'traced' else (None, None)
    ctx = Ctx(args.backend, dsn, args.n, args.uid, args.timeout, args.batch, telemetry)
    started = time.monotonic()
    result = asyncio.run(guarded(ctx, args.scenario, args.side))
    if provider is not None:
        provider.shutdown()
    result['elapsed_s'] = round(time.monotonic() - started, 3)
    if 'error' in result:
        result['error'] = mask_text(str(result['error']), password_of(dsn))[:500]
    line = {'kind': 'run', 'backend': args.backend, 'scenario': args.scenario, 'side': args.side,
            'rep': args.rep, 'n': args.n, **result}
    print(json.dumps(line), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
