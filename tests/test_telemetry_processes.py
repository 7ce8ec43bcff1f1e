"""One trace across OS processes on every real backend (Redis, RabbitMQ, Kafka, NATS): the launcher runs each
agent in its own process with ``--otel file:PATH``, the CLI sends the signal with ``--otel`` too, and every span
lands in one file."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip('opentelemetry.sdk')

from microagent.telemetry.sdk import read_spans

from .kafka_server import require_kafka
from .launcher_helpers import Marun, cli_env, delete_redis_keys, http_get, markers, run_cli, wait_until
from .nats_server import require_nats
from .services import require_port
from .telemetry_chain import check_chain, pids

SETTINGS = 'tests.telemetry_settings'


def _require(kind: str) -> dict[str, str]:
    require_port('redis', 6379)
    extra = {}
    if kind == 'amqp':
        require_port('rabbitmq', 5672)
    if kind == 'kafka':
        extra['TELEMETRY_TEST_KAFKA'] = require_kafka()
    if kind == 'nats':
        extra['TELEMETRY_TEST_NATS'] = require_nats()
    return extra


@pytest.fixture(params=['redis', 'amqp', 'kafka', 'nats'])
def env(request: pytest.FixtureRequest, tmp_path: Path, uid: str) -> Iterator[dict[str, str]]:
    kind = request.param
    extra = _require(kind)
    yield cli_env(None, TELEMETRY_TEST_UID=uid, TELEMETRY_TEST_DIR=str(tmp_path), TELEMETRY_TEST_BACKEND=kind,
                  OTEL_SERVICE_NAME='', **extra)
    delete_redis_keys(f'tt{uid}:*')
    if kind == 'nats':
        asyncio.run(_drop_nats_streams(extra['TELEMETRY_TEST_NATS'], uid))


async def _drop_nats_streams(dsn: str, uid: str) -> None:
    """Delete the JetStream streams this test's queues made on the shared server (their names hold *uid*)."""
    import nats

    client = await nats.connect(dsn, connect_timeout=5)
    try:
        jetstream = client.jetstream()
        for info in await jetstream.streams_info():
            if uid.lower() in info.config.name.lower():
                await jetstream.delete_stream(info.config.name)
    finally:
        await client.close()


def _metrics_complete(text: str, uid: str) -> bool:
    """The group's /metrics has the chain's numbers from every process."""
    wanted = [f'microagent_messages_handled_total{{agent="worker",queue="work_{uid}",replica="0"}} 1.0',
              f'microagent_handler_inflight{{agent="worker",queue="work_{uid}",replica="0"}} 0.0',
              f'microagent_signals_received_total{{agent="front",replica="0",signal="placed_{uid}"}} 1.0',
              f'microagent_signals_sent_total{{agent="worker",replica="0",signal="price_{uid}"}} 1.0',
              f'microagent_receiver_handled_total{{agent="pricer",handler="Pricer.on_price",replica="0",'
              f'signal="price_{uid}"}} 1.0',
              f'microagent_rpc_latency_seconds_count{{agent="worker",replica="0",signal="price_{uid}"}} 1.0']
    return all(line in text for line in wanted)


def test_one_trace_across_processes(env: dict[str, str], uid: str, tmp_path: Path) -> None:
    spans_file = tmp_path / 'spans.jsonl'
    otel = f'file:{spans_file}'
    marun = Marun(SETTINGS, '--grace', '5', '--http-port', '0', '--otel', otel, env=env)
    try:
        base = marun.http_base()
        wait_until(lambda: http_get(f'{base}/readyz')[0] == 200, timeout=60)
        result = run_cli('signal', SETTINGS, f'placed_{uid}', 'n=21', '--otel', otel, env=env)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: markers(tmp_path, 'done-21'), timeout=60)
        wait_until(lambda: _metrics_complete(http_get(f'{base}/metrics')[1], uid), timeout=30)
        marun.signal(signal.SIGTERM)
        assert marun.wait() == 0, marun.output
    finally:
        marun.close()
    spans = read_spans(str(spans_file))
    named = check_chain(spans, uid, root=None)
    # The CLI, the front, the worker and the pricer: four processes, one trace.
    assert len(pids(spans)) == 4, sorted((s['pid'], s['name']) for s in spans)
    services = {s['service'] for s in spans}
    assert {'front:0', 'worker:0', 'pricer:0'} <= services, services
    assert named[f'process work_{uid}'][0]['attributes']['messaging.system'] in ('redis', 'rabbitmq', 'kafka', 'nats')
