"""The code samples of the seed documents, run as written (imports they omit added)."""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .services import require_port

# queues.json exactly as the documents show it, trailing commas included.
QUEUES_JSON = '''{
    "queues": [
        {"name": "mailer"},
        {"name": "pusher"},
    ]
}'''


def run_sample(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / 'queues.json').write_text(QUEUES_JSON)
    monkeypatch.chdir(tmp_path)
    body = 'async def __sample():\n' + textwrap.indent(textwrap.dedent(code), '    ')
    scope: dict[str, Any] = {}
    exec(compile(body, 'sample', 'exec'), scope)
    return scope


def need_redis() -> None:
    if importlib.util.find_spec('redis') is None or importlib.util.find_spec('microagent.tools.redis') is None:
        pytest.skip('microagent.tools.redis is not available')
    require_port('redis', 6379)


async def test_queue_broker_sending_only(tmp_path, monkeypatch):
    need_redis()
    scope = run_sample('''
        from microagent import load_queues, Queue
        from microagent.tools.redis import RedisBroker

        queues = load_queues('file://queues.json')
        Queue(name='user_created')

        broker = RedisBroker('redis://localhost/7')
        await broker.user_created.send({'user_id': 1})
        assert await broker.user_created.length() >= 1
        await broker.close()
        return queues
    ''', tmp_path, monkeypatch)
    queues = await scope['__sample']()
    assert queues.mailer.name == 'mailer'


async def test_using_with_microagent(tmp_path, monkeypatch):
    need_redis()
    scope = run_sample('''
        from microagent import MicroAgent, load_queues, consumer, Queue
        from microagent.tools.redis import RedisBroker, RedisSignalBus

        queues = load_queues('file://queues.json')
        Queue(name='email_sended')

        class EmailAgent(MicroAgent):
            @consumer(queues.mailer)
            async def example_read_queue(self, **kwargs):
                await self.broker.email_sended.send({'user_id': 1})

        broker = RedisBroker('redis://localhost/7')
        email_agent = EmailAgent(broker=broker)
        await email_agent.start()
        before = await broker.email_sended.length()
        await broker.mailer.send({'to': 'a@example.com'})
        for _ in range(200):
            if await broker.email_sended.length() > before:
                break
            await asyncio.sleep(0.02)
        after = await broker.email_sended.length()
        await email_agent.stop()
        return before, after
    ''', tmp_path, monkeypatch)
    scope['asyncio'] = asyncio
    before, after = await scope['__sample']()
    assert after == before + 1


async def test_overview_agent_on_memory(tmp_path, monkeypatch, caplog):
    """The overview's Agent, on the in-memory backend (same contract)."""
    (tmp_path / 'signals.json').write_text('''{"signals": [
        {"name": "started", "providing_args": []},
        {"name": "user_updated", "providing_args": ["user_id"]},
        {"name": "user_deleted", "providing_args": ["user_id"]},
        {"name": "check_something", "providing_args": ["user_id"]}]}''')
    scope = run_sample('''
        from microagent import MicroAgent, load_signals, load_queues, on, periodic, cron, receiver, consumer, Queue
        from microagent.tools.memory import MemoryBroker as RedisBroker, MemorySignalBus as RedisSignalBus

        signals = load_signals('file://signals.json')
        queues = load_queues('file://queues.json')
        Queue(name='statistic_collector')
        calls = []

        class Agent(MicroAgent):

            @on('pre_start')
            async def setup(self):
                calls.append('setup')

            @periodic(period=5)
            async def refresh_cache(self):
                pass  # do something periodicly

            @cron('0 */4 * * *')
            async def send_report(self):
                pass  # do something by schedule

            # subscribe to signals (events)
            @receiver(signals.user_updated, signals.user_deleted)
            async def send_notification(self, **kwargs):
                # send signal (event) to bus
                await self.bus.check_something.send(sender='agent', user_id=kwargs['user_id'])
                calls.append('notified')

            # message consumer from queue
            @consumer(queues.mailer)
            async def send_emails(self, **kwargs):
                # send message to queue
                await self.broker.statistic_collector.send(kwargs)
                calls.append('emailed')

        bus = RedisSignalBus('memory://')
        broker = RedisBroker('memory://')

        # usage bus and broker separate from agent
        await bus.started.send('user_agent')
        data = {'to': 'a@example.com'}
        await broker.mailer(data)

        agent = Agent(bus=bus, broker=broker)
        await agent.start()
        await bus.user_updated.send('users', user_id=1)
        for _ in range(200):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        length = await broker.statistic_collector.length()
        await agent.stop()
        return calls, length
    ''', tmp_path, monkeypatch)
    scope['asyncio'] = asyncio
    calls, length = await scope['__sample']()
    assert sorted(calls) == ['emailed', 'notified', 'setup']
    assert length == 1


def test_queue_manual_declaration_and_helpers():
    from microagent.queue import Queue, QueueException, QueueNotFound, SerializingError
    some_queue = Queue(name='some_queue')
    assert Queue.get('some_queue') is some_queue
    assert 'some_queue' in Queue.get_all()
    assert some_queue.deserialize(some_queue.serialize({'a': 1})) == {'a': 1}
    assert issubclass(QueueNotFound, QueueException)
    assert issubclass(SerializingError, Exception)
    logging.getLogger(__name__).debug('ok')
