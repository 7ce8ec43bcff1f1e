"""``python -m reliability``: run the fault suite and the security checks, write JSON lines and markdown.

    .venv/bin/python -m reliability --backends redis,amqp,kafka --size smoke --out docs/reliability.md

Exit status 0 when every check passed, 1 otherwise. AMQP runs on a private
RabbitMQ node the suite starts, kills and restarts (``rabbitmq-server`` must
be installed locally); without one it falls back to the shared server on
5672, where ``--rabbit-restart`` allows ``rabbitmqctl stop_app/start_app``
(it affects every user of that server: only on a machine of your own).
``--kafka-durable`` runs tansu on S3 (moto) so Kafka can be restarted.

``--effects`` runs the exactly-once effects fault run instead (issue 20: a chain of agents with
``PostgresEffects`` on a private PostgreSQL, see reliability/effects_run.py) on each of ``--backends``
(memory runs in one process); ``--out`` then replaces only its section of the document.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

from .drivers import FAULTS, SIZES, run_backend
from .report import json_lines, markdown
from .rigs import BACKENDS
from .security import run_security
from .signals import BUS_BACKENDS, rpc_under_cuts


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise argparse.ArgumentTypeError(f'unknown {what} {unknown}, expected some of {list(allowed)}')
    return names


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m reliability', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backends', type=lambda t: _names(t, (*BACKENDS, 'memory'), 'backend'),
                        help=f'default: {",".join(BACKENDS)} (with --effects: memory too)')
    parser.add_argument('--faults', default=','.join(FAULTS), type=lambda t: _names(t, FAULTS, 'fault'))
    parser.add_argument('--size', choices=sorted(SIZES), default='smoke')
    parser.add_argument('--out', type=Path, help='write the markdown report here')
    parser.add_argument('--jsonl', type=Path, help='write JSON lines here (default: stdout)')
    parser.add_argument('--no-security', action='store_true', help='skip the security and bus checks')
    parser.add_argument('--no-faults', action='store_true', help='skip the fault runs (security and bus only)')
    parser.add_argument('--rabbit-restart', action='store_true',
                        help='without a local rabbitmq-server for a private node: allow restarting the shared RabbitMQ')
    parser.add_argument('--amqp-plain', action='store_true',
                        help='run AMQP on plain aiormq as well (fast_lane=False), after its fast-lane run')
    parser.add_argument('--kafka-durable', action='store_true',
                        help='tansu on S3 storage (a local moto server), so the Kafka restart fault can run')
    parser.add_argument('--effects', action='store_true',
                        help='run the exactly-once effects fault run (needs PostgreSQL server binaries)')
    args = parser.parse_args(argv)
    if args.backends is None:
        args.backends = ('memory', *BACKENDS) if args.effects else BACKENDS
    if 'memory' in args.backends and not args.effects:
        parser.error('memory has no fault run of its own (one process): only with --effects')
    return args


async def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results = []
    runs: list[tuple[str, dict[str, Any]]] = [(backend, {}) for backend in args.backends]
    if args.amqp_plain and 'amqp' in args.backends:
        runs.insert(runs.index(('amqp', {})) + 1, ('amqp', {'fast_lane': False}))
    for backend, options in () if args.no_faults else runs:
        logging.getLogger('reliability').warning('reliability: %s %s, faults %s', backend, options or '',
                                                 ','.join(args.faults))
        results.append(await run_backend(backend, args.faults, SIZES[args.size], rabbit_restart=args.rabbit_restart,
                                         kafka_durable=args.kafka_durable, options=options))
    if args.no_security:
        return results, []
    security = await run_security(args.backends)
    for backend, options in runs:
        if backend in BUS_BACKENDS:
            security += await rpc_under_cuts(backend, **options)
    return results, security


KEPT = '## How the suite works'  # from here on the report is written by hand: a new run keeps it


def _kept_tail(path: Path) -> str:
    text = path.read_text() if path.exists() else ''
    return '\n' + text[text.index(KEPT):] if KEPT in text else ''


async def run_effects_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .effects_run import EFFECT_SIZES, run_effects

    results = []
    for backend in args.backends:
        logging.getLogger('reliability').warning('reliability: effects on %s', backend)
        results.append(await run_effects(backend, EFFECT_SIZES[args.size]))
    return results


def _write_lines(args: argparse.Namespace, lines: str) -> None:
    if args.jsonl:
        args.jsonl.write_text(lines)
    else:
        sys.stdout.write(lines)


def main_effects(args: argparse.Namespace, argv: list[str] | None) -> int:
    from .effects_report import effects_markdown, replace_section

    began = time.monotonic()
    results = asyncio.run(run_effects_all(args))
    _write_lines(args, json_lines(results, []))
    if args.out:
        command = '.venv/bin/python -m reliability ' + ' '.join(sys.argv[1:] if argv is None else argv)
        section = effects_markdown(results, command=command, took=time.monotonic() - began)
        args.out.write_text(replace_section(args.out.read_text() if args.out.exists() else '', section))
    return 0 if all(r['ok'] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # The clients' own chatter about the injected faults is expected: only our progress lines show.
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger('reliability').setLevel(logging.INFO)
    if args.effects:
        return main_effects(args, argv)
    began = time.monotonic()
    results, security = asyncio.run(run(args))
    took = time.monotonic() - began
    _write_lines(args, json_lines(results, security))
    if args.out:
        command = '.venv/bin/python -m reliability ' + ' '.join(sys.argv[1:] if argv is None else argv)
        args.out.write_text(markdown(results, security, command=command, took=took) + _kept_tail(args.out))
    ok = all(r['ok'] for r in results) and all(r['ok'] for r in security)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
