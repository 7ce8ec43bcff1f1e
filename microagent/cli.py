"""Command line: ``microagent`` (run, send, signal, call, info, docs) and ``marun`` (run).

    marun examples.settings --duration 15
    microagent run examples/settings.py --grace 5 --http-port 9100
    microagent send settings mailer '{"user_id": 1}'
    microagent signal settings user_created user_id=1 email=a@b.c
    microagent call settings rpc_comments_count user_id=1
    microagent info settings                    # tables; --json for the same data as JSON
    microagent info examples.users:UserAgent
    microagent docs settings --format html -o system.html   # asyncapi-json|asyncapi-yaml|html|svg|dot
    microagent db init postgresql://app@localhost/app        # the effects tables (docs/exactly-once.md)
    MICROAGENT_DB_DSN=postgresql://... microagent db status
    microagent migrate-queue settings mailer      # a microagent 1.9 Redis list into its stream

``k=v`` values are JSON when they parse as JSON (``user_id=1`` is a number),
strings otherwise. Every error is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from ._dsn import mask_text
from ._info_table import render_agent, render_group
from ._progress import Progress
from .agent import MicroAgent
from .exceptions import ConfigurationError
from .launcher import codes, logs
from .launcher.launch import launch
from .launcher.settings import GroupSettings, cwd_on_path, load_settings
from .launcher.supervisor import Options

__all__ = ['main', 'marun']

NETWORK_TIMEOUT = 10.0
DOC_FORMATS = ('asyncapi-json', 'asyncapi-yaml', 'html', 'svg', 'dot')
DB_DSN_ENV = 'MICROAGENT_DB_DSN'
EXIT_CODES = ('exit codes: 0 stopped on request (signal, --duration), 2 bad settings or command line (nothing '
              'started), 3 an agent died under --fail-fast, 4 killed by a second signal')


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(codes.ExitCode.CONFIG, f'{self.prog}: error: {message} (see --help)\n')


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('settings', nargs='+', metavar='SETTINGS',
                        help='settings modules (dotted name or path to a .py file)')
    parser.add_argument('--grace', type=float, default=10.0, help='seconds to drain on stop (default 10)')
    parser.add_argument('--fail-fast', action='store_true', help='stop the whole group when an agent dies')
    parser.add_argument('--duration', type=float, help='stop by itself after this many seconds')
    parser.add_argument('--restart-delay', type=float, default=0.5, help='first restart backoff (s)')
    parser.add_argument('--max-restart-delay', type=float, default=30.0, help='restart backoff cap (s)')
    parser.add_argument('--log-level', default='INFO', help='DEBUG, INFO, WARNING, ERROR')
    parser.add_argument('--log-format', choices=logs.FORMATS, default='text')
    parser.add_argument('--status', choices=('auto', 'table', 'plain'), default='auto',
                        help='live table (auto: on a TTY) or plain log lines')
    parser.add_argument('--http-port', type=int, help='serve /healthz, /readyz, /metrics (0: any free port)')
    parser.add_argument('--http-host', default='127.0.0.1')
    _otel_option(parser, 'trace every agent: export spans (and, for otlp, metrics)')


def _otel_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument('--otel', metavar='EXPORTER', help=f'{text} to otlp (configured by the OTEL_* '
                        'environment variables), console (spans on stdout) or file:PATH (JSON lines); '
                        'needs opentelemetry-sdk (and opentelemetry-exporter-otlp-proto-http for otlp)')


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='microagent', description='Run and talk to microagent agents.')
    parser.add_argument('--version', action='version', version=f'microagent {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, parser_class=_Parser)
    _run_options(sub.add_parser('run', help='supervise a group of agents, one process each', epilog=EXIT_CODES))
    send = sub.add_parser('send', help='send a JSON message to a queue')
    send.add_argument('settings')
    send.add_argument('queue')
    send.add_argument('message', help='a JSON object')
    send.add_argument('--broker', help='BROKER key (default: "default" or the only one)')
    _otel_option(send, 'trace the send')
    for name, text in (('signal', 'send a signal'), ('call', 'send a signal as RPC and print each response')):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument('settings')
        cmd.add_argument('signal')
        cmd.add_argument('args', nargs='*', metavar='k=v')
        cmd.add_argument('--bus', help='BUS key (default: "default" or the only one)')
        cmd.add_argument('--sender', default='cli')
        _otel_option(cmd, f'trace the {name}')
        if name == 'call':
            cmd.add_argument('--timeout', type=float, default=5.0, help='seconds to wait for responses')
            cmd.add_argument('--first', action='store_true', help='stop at the first response')
    info = sub.add_parser('info', help='agents, handlers, schedules and queue lengths')
    info.add_argument('target', help='SETTINGS, or MODULE:Agent for one agent class')
    info.add_argument('--json', action='store_true', help='JSON instead of tables')
    docs = sub.add_parser('docs', help='the AsyncAPI 3.0 document, the topology picture or one HTML page')
    docs.add_argument('settings')
    docs.add_argument('--format', default='asyncapi-json', choices=DOC_FORMATS)
    docs.add_argument('-o', '--output', help='write to this file (default: stdout)')
    docs.add_argument('--api-version', default='1.0.0', help="the document's info.version (default 1.0.0)")
    _db_parser(sub)
    migrate = sub.add_parser('migrate-queue', help="move a microagent 1.9 queue's messages to this project's format")
    migrate.add_argument('settings')
    migrate.add_argument('queue')
    migrate.add_argument('--broker', help='BROKER key (default: "default" or the only one)')
    return parser


def _db_parser(sub: Any) -> None:
    db = sub.add_parser('db', help='the effects tables on PostgreSQL: init, status, prune',
                        description='The inbox and outbox tables of microagent.effects (docs/exactly-once.md). '
                                    f'The DSN comes from --dsn or ${DB_DSN_ENV} (keeps a password out of the '
                                    'process list).')
    actions = db.add_subparsers(dest='action', required=True, parser_class=_Parser)
    for name, text in (('init', 'create the tables (idempotent; --sql prints the DDL instead)'),
                       ('status', 'schema version, inbox rows, pending outbox rows per destination'),
                       ('prune', 'delete inbox rows older than --older-than')):
        action = actions.add_parser(name, help=text)
        action.add_argument('dsn', nargs='?', help=f'postgresql://... (default: ${DB_DSN_ENV})')
        action.add_argument('--prefix', default='microagent_', help='table name prefix (default microagent_)')
        action.add_argument('--schema', help='schema of the tables (default: the search path)')
        if name == 'init':
            action.add_argument('--sql', action='store_true', help='print the DDL, touch nothing')
        if name == 'prune':
            action.add_argument('--older-than', type=parse_duration, default=7 * 86400.0, metavar='DURATION',
                                help='e.g. 7d, 12h, 30m, 90s (default 7d)')


def parse_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``['user_id=1', 'name=bob']`` -> ``{'user_id': 1, 'name': 'bob'}``.

    >>> parse_pairs(['user_id=1', 'tags=["a"]', 'name=bob'])
    {'user_id': 1, 'tags': ['a'], 'name': 'bob'}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition('=')
        if not sep or not key.isidentifier():
            raise ConfigurationError(f'expected k=v, got {pair!r}')
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def parse_duration(text: str) -> float:
    """``'7d'`` -> 604800.0; units s, m, h, d (seconds without one).

    >>> parse_duration('12h'), parse_duration('90')
    (43200.0, 90.0)
    """
    units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, 's')
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a duration like 7d, 12h, 30m or 90s, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'the duration must be > 0, got {text!r}')
    return value


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + '\n')


def _no_memory(entry: Any, what: str) -> None:
    if entry.in_memory:
        raise ConfigurationError(f'{what} {entry.key!r} is memory://: nothing outside this process would see it')


async def _send(args: argparse.Namespace) -> int:
    group = load_settings(args.settings)
    entry = group.default_broker(args.broker)
    _no_memory(entry, 'BROKER')
    try:
        message = json.loads(args.message)
    except ValueError as exc:
        raise ConfigurationError(f'message is not JSON: {exc}') from None
    if not isinstance(message, dict):
        raise ConfigurationError('message must be a JSON object')
    broker = entry.build()
    broker.telemetry = getattr(args, 'telemetry', None)
    try:
        async with asyncio.timeout(NETWORK_TIMEOUT):
            await getattr(broker, args.queue).send(message)
    finally:
        await broker.close()
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    group = load_settings(args.settings)
    entry = group.default_broker(args.broker)
    _no_memory(entry, 'BROKER')
    if not callable(getattr(entry.cls, 'migrate_queue', None)):
        raise ConfigurationError(f'{entry.cls.__name__} has no microagent 1.9 format to migrate from: its queues '
                                 'are shared as they are (see docs/migrating.md)')
    broker = entry.build()
    try:
        moved = await broker.migrate_queue(args.queue)
    finally:
        await broker.close()
    _emit({'queue': args.queue, 'moved': moved})
    return 0


async def _signal(args: argparse.Namespace) -> int:
    group = load_settings(args.settings)
    entry = group.default_bus(args.bus)
    _no_memory(entry, 'BUS')
    kwargs = parse_pairs(args.args)
    bus = entry.build()
    bus.telemetry = getattr(args, 'telemetry', None)
    try:
        bound = getattr(bus, args.signal)
        if args.command == 'signal':
            async with asyncio.timeout(NETWORK_TIMEOUT):
                await bound.send(args.sender, **kwargs)
            return 0
        return await _call(bound, args, kwargs)
    finally:
        await bus.close()


async def _call(bound: Any, args: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    count, progress = 0, Progress()
    progress.step(f'waiting up to {args.timeout:g}s for responses to {args.signal}')
    try:
        async with asyncio.timeout(args.timeout + NETWORK_TIMEOUT), \
                bound.waiter(args.sender, timeout=args.timeout, **kwargs) as responses:
            async for response in responses:
                progress.done()
                sys.stdout.write(json.dumps(response, default=str) + '\n')
                sys.stdout.flush()
                count += 1
                if args.first:
                    break
                progress.step(f'{count} response(s); waiting for more until {args.timeout:g}s passed')
    finally:
        progress.done()
    if not count:
        raise TimeoutError(f'no response to {args.signal!r} within {args.timeout}s')
    return 0


async def _info(args: argparse.Namespace) -> int:
    if ':' in args.target:
        info = _class_info(args.target)
        _emit(info) if args.json else sys.stdout.write(render_agent(info))
        return 0
    group = load_settings(args.target)
    progress = Progress()
    agents = {}
    for index, name in enumerate(group.agents, 1):
        progress.step(f'{name}: reading queue lengths', index, len(group.agents))
        agents[name] = await _agent_info(group, name)
    progress.done()
    info = {'settings': group.module, 'in_one_process': group.in_memory, 'agents': agents}
    _emit(info) if args.json else sys.stdout.write(render_group(info))
    return 0


async def _docs(args: argparse.Namespace) -> int:
    from .docs import render

    progress = Progress()
    progress.step('loading the settings')
    group = load_settings(args.settings)
    progress.step('describing the agents' + (' and laying out the picture' if args.format in ('svg', 'html') else ''))
    try:
        text = render(group, args.format, version=args.api_version)
    finally:
        progress.done()
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _class_info(target: str) -> dict[str, Any]:
    from .tools.memory import MemoryBroker, MemorySignalBus

    cwd_on_path()
    module_name, _, attr = target.partition(':')
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - any import failure is one error line
        raise ConfigurationError(f'{target}: cannot import: {type(exc).__name__}: {exc}') from None
    if not (isinstance(cls, type) and issubclass(cls, MicroAgent)):
        raise ConfigurationError(f'{target} is not a MicroAgent subclass')
    # Memory backends: no service needed to describe the class.
    info: dict[str, Any] = cls(bus=MemorySignalBus(), broker=MemoryBroker()).info()
    return info


async def _agent_info(group: GroupSettings, name: str) -> dict[str, Any]:
    entry = group.agents[name]
    agent = group.build_agent(name)
    info = {'backend': f'{entry.cls.__module__}.{entry.cls.__qualname__}', 'replicas': entry.replicas,
            'bus': entry.bus, 'broker': entry.broker, **agent.info()}
    lengths: dict[str, int | None] = {}
    try:
        for consumer in agent.consumers:
            try:
                async with asyncio.timeout(NETWORK_TIMEOUT):
                    lengths[consumer.queue.name] = await agent.broker.queue_length(consumer.queue.name)
            except Exception:  # noqa: BLE001 - an unreachable broker shows as unknown, not as a crash
                lengths[consumer.queue.name] = None
    finally:
        for backend in (agent.bus, agent.broker):
            if backend is not None:
                await backend.close()
    info['queue_lengths'] = lengths
    return info


async def _db(args: argparse.Namespace) -> int:
    from .effects import Tables, migrate, prune_inbox, statements, status

    tables = Tables(args.prefix, args.schema)
    if args.action == 'init' and args.sql:
        sys.stdout.write(''.join(f'{statement};\n' for statement in statements(tables)))
        return 0
    dsn = args.dsn or os.environ.get(DB_DSN_ENV)
    if not dsn:
        raise ConfigurationError(f'db {args.action}: give a DSN (postgresql://...) or set ${DB_DSN_ENV}')
    try:
        import asyncpg
    except ModuleNotFoundError:
        raise ConfigurationError('microagent db needs asyncpg: pip install "microagent[postgres]"') from None
    async with asyncio.timeout(NETWORK_TIMEOUT):
        connection = await asyncpg.connect(dsn)
    try:
        if args.action == 'init':
            version = await migrate(connection, tables)
            _emit({'tables': [tables.inbox, tables.outbox, tables.meta], 'schema_version': version})
        elif args.action == 'status':
            _emit(await status(connection, tables))
        else:
            _emit({'pruned': await prune_inbox(connection, tables, args.older_than),
                   'older_than_seconds': args.older_than})
    finally:
        await connection.close(timeout=NETWORK_TIMEOUT)
    return 0


def _run(args: argparse.Namespace) -> int:
    options = Options(grace=args.grace, fail_fast=args.fail_fast, duration=args.duration,
                      restart_delay=args.restart_delay, max_restart_delay=args.max_restart_delay,
                      log_level=args.log_level, log_format=args.log_format, http_host=args.http_host,
                      http_port=args.http_port, otel=args.otel)
    logs.configure(args.log_level, args.log_format, 'launcher')
    if args.grace < 0 or (args.duration is not None and args.duration <= 0):
        raise ConfigurationError('--grace must be >= 0 and --duration > 0')
    if args.otel:
        from .telemetry import sdk

        sdk.check(args.otel)
    table = {'auto': None, 'table': True, 'plain': False}[args.status]
    return launch(args.settings, options, table=table)


COMMANDS = {'send': _send, 'signal': _signal, 'call': _signal, 'info': _info, 'docs': _docs, 'db': _db,
            'migrate-queue': _migrate}


async def _traced(args: argparse.Namespace) -> int:
    """Run a command; with ``--otel`` its backends trace it and the spans are flushed at the end."""
    otel = getattr(args, 'otel', None)
    if not otel:
        return await COMMANDS[args.command](args)
    from .telemetry import sdk

    args.telemetry = sdk.configure(otel, service_name=f'microagent {args.command}')
    try:
        return await COMMANDS[args.command](args)
    finally:
        sdk.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``microagent`` command.

    Not run: runs the command line on the example application (tests/test_cli.py).
    >>> main(['info', 'examples.users:UserAgent'])   # doctest: +SKIP
    0
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == 'run':
            return _run(args)
        return asyncio.run(_traced(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is one clear line
        text = f'{type(exc).__name__}: {exc}' if not isinstance(exc, ConfigurationError) else str(exc)
        sys.stderr.write(f'microagent: error: {mask_text(" ".join(text.split()))}\n')
        return codes.ExitCode.CONFIG


def marun(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``marun SETTINGS [SETTINGS ...]`` (the same as ``microagent run``).

    Not run: runs the command line on the example application (tests/test_cli.py).
    >>> marun(['examples.settings', '--duration', '15'])   # doctest: +SKIP
    0
    """
    return main(['run', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
