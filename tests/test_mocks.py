from __future__ import annotations

from typing import Any

import pytest

from microagent import MicroAgent, Queue, QueueNotFound, Signal, SignalArgumentsError, consumer, receiver
from microagent.tools.mocks import BrokerMock, BusMock


async def test_reference_style_usage(catalog):
    mailer = Queue('mailing', catalog=catalog)
    user_created = Signal('user_created', ['user_id'], catalog=catalog)

    class Agent(MicroAgent):
        @receiver(user_created)
        async def on_user(self, user_id: int, **kwargs: Any) -> None:
            await self.broker.mailing.send({'user_id': user_id})
            await self.broker.mailing({'user_id': user_id, 'again': True})
            await self.bus.user_created.send('agent', user_id=user_id)
            self.answer = await self.bus.user_created.call('agent', user_id=user_id)

        @consumer(mailer)
        async def handle(self, **kwargs: Any) -> None:
            self.length = await self.broker.mailing.length()

    agent = Agent(bus=BusMock(), broker=BrokerMock())
    await agent.start()
    agent.bus.bind_receiver.assert_called_once()
    agent.broker.bind_consumer.assert_called_once()
    await agent.on_user(user_id=1)
    agent.broker.mailing.send.assert_any_call({'user_id': 1})
    assert agent.broker.mailing.send.call_count == 2
    agent.bus.user_created.send.assert_called_once_with('agent', user_id=1)
    agent.bus.user_created.call.assert_called()
    assert agent.answer == {}
    await agent.handle()
    assert agent.length == 0
    agent.broker.mailing.length.assert_called()
    await agent.stop()


async def test_waiter_yields_configured_responses():
    bus = BusMock()
    bus.rpc_x.responses = [{'A.b': 1}, {'C.d': 2}]
    async with bus.rpc_x.waiter('me', n=1) as responses:
        assert [r async for r in responses] == [{'A.b': 1}, {'C.d': 2}]
    bus.rpc_x.waiter.assert_called_once_with('me', n=1)


async def test_strict_mocks_check_names_and_arguments(catalog):
    Signal('typed', {'n': 'integer'}, catalog=catalog)
    Queue('known', catalog=catalog)
    bus, broker = BusMock(catalog=catalog, strict=True), BrokerMock(catalog=catalog, strict=True)
    with pytest.raises(SignalArgumentsError):
        await bus.typed.send('me', n='x')
    await bus.typed.send('me', n=1)
    assert not hasattr(bus, 'unknown')
    assert not hasattr(broker, 'unknown')
    with pytest.raises(QueueNotFound):
        broker.unknown
    await broker.known.send({})
