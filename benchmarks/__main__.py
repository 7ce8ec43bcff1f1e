"""``python -m benchmarks``: every scenario on every available backend, library vs raw client.

    .venv/bin/python -m benchmarks [--backends memory,redis,amqp,kafka] [--scenarios A,A2,B,C,D,F]
                                   [--repeat 3] [--size smoke|full] [--soak] [--out docs/performance.md]

Prints one JSON line per measurement as it finishes, then one summary line
per table row, then the markdown table. ``--out`` writes the report
(``.md``: the whole performance document; anything else: the JSON lines).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from microagent._dsn import mask_text, password_of

from .cost import cost_rows, cost_table
from .report import markdown_table, render_doc, render_section, summarize
from .run_one import DSN_ENV
from .services import availability, cleanup, kafka_server, machine, module_present, server_versions
from .settings import (
    BACKENDS,
    BATCH,
    DEFAULT_SCENARIOS,
    DSNS,
    MODULES,
    OWN_BASELINE,
    PORTS,
    RAW,
    RAW_SCENARIOS,
    SCENARIOS,
    SIZES,
    TIMEOUTS,
    TRACED_SCENARIOS,
    UNSUPPORTED,
)

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backends', default=','.join(BACKENDS), help='comma-separated (default: all)')
    parser.add_argument('--scenarios', default=','.join(DEFAULT_SCENARIOS),
                        help=f'comma-separated of {",".join(SCENARIOS)} (default: all but G)')
    parser.add_argument('--repeat', type=int, default=3, help='repetitions per scenario (median reported)')
    parser.add_argument('--size', choices=sorted(SIZES), default='full')
    parser.add_argument('--soak', action='store_true', help='also run G, the soak (1,000,000 messages at full size)')
    parser.add_argument('--batch', type=int, default=BATCH, help='batch / pipeline / confirm window size')
    parser.add_argument('--out', help='write the report here (.md: the performance document, else JSON lines)')
    parser.add_argument('--note', action='append', default=[], help='a line for the document (repeatable)')
    parser.add_argument('--kafka-port', type=int, default=9092,
                        help='Kafka on 127.0.0.1:PORT (a tansu is started there if nothing listens)')
    parser.add_argument('--append', action='store_true',
                        help='add this run to the --out document as a section instead of replacing it')
    parser.add_argument('--tracing', action='store_true',
                        help='also run the library with tracing on (SDK batch span processor): the tracing cost')
    parser.add_argument('--baseline', metavar='CHECKOUT',
                        help='also run the library of another checkout (e.g. a worktree of main) as "base"')
    parser.add_argument('--cost-only', action='store_true', help='leave out the raw clients (a cost run)')
    args = parser.parse_args(argv)
    args.backends = split(args.backends, BACKENDS, 'backend')
    args.scenarios = split(args.scenarios, SCENARIOS, 'scenario')
    if args.soak and 'G' not in args.scenarios:
        args.scenarios.append('G')
    if args.repeat < 1 or args.batch < 1:
        parser.error('--repeat and --batch must be >= 1')
    DSNS['kafka'] = f'kafka://127.0.0.1:{args.kafka_port}'
    PORTS['kafka'] = args.kafka_port
    return args


def split(value: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(',') if v.strip()]
    unknown = [v for v in items if v not in known]
    if unknown:
        raise SystemExit(f'unknown {what}(s) {unknown}, expected some of {list(known)}')
    return items


def plan(args: argparse.Namespace, backend: str) -> Iterator[tuple[str, int, str]]:
    """(scenario, repetition, side), library and raw alternating so both see the same noise."""
    for scenario in args.scenarios:
        if scenario in UNSUPPORTED.get(backend, ()):
            continue
        for rep in range(1, args.repeat + 1):
            if args.baseline and scenario in TRACED_SCENARIOS:
                yield scenario, rep, 'base'
            yield scenario, rep, 'lib'
            if args.tracing and scenario in TRACED_SCENARIOS:
                yield scenario, rep, 'traced'
            if scenario in RAW_SCENARIOS and (backend in RAW or scenario in OWN_BASELINE) and not args.cost_only:
                yield scenario, rep, 'raw'


def run_one(args: argparse.Namespace, backend: str, scenario: str, rep: int, side: str,
            run_id: str) -> dict[str, Any]:
    """One measurement in a fresh process; a crash or timeout becomes a status, never a number."""
    wait = TIMEOUTS['soak'] if scenario == 'G' and args.size == 'full' else TIMEOUTS[args.size]
    command = [sys.executable, '-m', 'benchmarks.run_one', '--backend', backend, '--scenario', scenario,
               '--side', 'lib' if side == 'base' else side, '--n', str(SIZES[args.size][scenario]),
               '--uid', f'{run_id}_{scenario.lower()}_{side}{rep}', '--timeout', str(wait),
               '--batch', str(args.batch), '--rep', str(rep)]
    base = {'kind': 'run', 'backend': backend, 'scenario': scenario, 'side': side, 'rep': rep,
            'n': SIZES[args.size][scenario]}
    try:
        # The DSN goes by environment, not argv: a password must not show in the process list.
        env = {**os.environ, DSN_ENV: DSNS[backend]}
        cwd = ROOT
        if side == 'base':
            # The baseline: another checkout's library and benchmarks, this interpreter and its packages.
            cwd = Path(args.baseline)
            env['PYTHONPATH'] = str(cwd)
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=wait * 1.5 + 30)
    except subprocess.TimeoutExpired:
        return {**base, 'status': 'timeout', 'error': f'killed after {wait * 1.5 + 30:.0f}s'}
    lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
    if done.returncode != 0 or not lines:
        dsn = DSNS[backend]
        tail = mask_text(done.stderr.strip()[-400:], password_of(dsn))
        return {**base, 'status': 'error', 'error': f'exit {done.returncode}: {tail}'}
    result: dict[str, Any] = json.loads(lines[-1])
    result['side'] = side
    return result


def emit(line: dict[str, Any], sink: list[dict[str, Any]]) -> None:
    sink.append(line)
    print(json.dumps(line), flush=True)


def measure_all(args: argparse.Namespace, run_id: str, out: list[dict[str, Any]]) -> dict[str, str]:
    """Run the plan on every backend; the backends that were not available, with why."""
    unavailable: dict[str, str] = {}
    for backend in args.backends:
        # Kafka is looked for (or started) only when its turn comes: a shared broker seen at the
        # start of a long run may be gone by then.
        wanted = backend == 'kafka' and module_present(MODULES['kafka'])
        with kafka_server(port=args.kafka_port, wanted=wanted) as problem:
            ok, why = availability(backend, DSNS[backend])
            if problem or not ok:
                unavailable[backend] = problem or why
                emit({'kind': 'unavailable', 'backend': backend, 'reason': unavailable[backend]}, out)
                continue
            why = measure_backend(args, backend, run_id, out)
        if why:
            unavailable[backend] = why
    return unavailable


def measure_backend(args: argparse.Namespace, backend: str, run_id: str, out: list[dict[str, Any]]) -> str:
    """Every planned run on *backend*, then its cleanup; why it turned out unavailable, or ''."""
    why = ''
    for scenario, rep, side in plan(args, backend):
        result = run_one(args, backend, scenario, rep, side, run_id)
        emit(result, out)
        if result.get('status') == 'unavailable':
            why = result.get('error', 'unavailable')
            break
    if backend != 'memory':
        emit({'kind': 'cleanup', 'backend': backend,
              'result': asyncio.run(cleanup(backend, DSNS[backend], run_id))}, out)
    return why


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit status 0 even when targets are missed (the table says so)."""
    args = parse(argv)
    run_id = uuid.uuid4().hex[:8]
    load_start = [round(x, 2) for x in os.getloadavg()]
    started = datetime.datetime.now(datetime.UTC)
    out: list[dict[str, Any]] = []
    unavailable = measure_all(args, run_id, out)
    runs = [r for r in out if r['kind'] == 'run']
    rows = summarize([r for r in runs if r['side'] in ('lib', 'raw')], args.backends, args.scenarios, unavailable)
    costs = cost_rows(runs)
    for row in (*rows, *costs):
        emit(row, out)
    print(markdown_table(rows))
    if costs:
        print(cost_table(costs))
    if args.out:
        write_report(args, argv, out, rows, started, load_start, unavailable, costs)
    return 0


def write_report(args: argparse.Namespace, argv: list[str] | None, out: list[dict[str, Any]],
                 rows: list[dict[str, Any]], started: datetime.datetime, load_start: list[float],
                 unavailable: dict[str, str], costs: list[dict[str, Any]]) -> None:
    path = Path(args.out)
    if path.suffix != '.md':
        path.write_text(''.join(json.dumps(line) + '\n' for line in out))
        return
    measured = [b for b in args.backends if b not in unavailable]
    meta = {
        'machine': machine(), 'servers': asyncio.run(server_versions(measured, DSNS)),
        'command': '.venv/bin/python -m benchmarks ' + shlex.join(sys.argv[1:] if argv is None else argv),
        'finished': datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC'),
        'started': started.isoformat(), 'load_start': load_start,
        'load_end': [round(x, 2) for x in os.getloadavg()], 'repeat': args.repeat, 'size': args.size,
        'batch': args.batch, 'notes': args.note, 'costs': costs,
    }
    if args.append and path.exists():
        path.write_text(path.read_text().rstrip('\n') + '\n\n' + render_section(rows, meta))
    else:
        path.write_text(render_doc(rows, meta))


if __name__ == '__main__':
    sys.exit(main())
