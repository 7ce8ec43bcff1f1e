"""Who closes a shared bus or broker (microagent._shared): the agent leaves what is still in use open."""
from __future__ import annotations

from typing import Any

from microagent import MicroAgent, Queue, Signal, consumer, receiver
from microagent.catalog import Catalog
from microagent.tools.memory import MemoryBroker, MemorySignalBus


class CountingBroker(MemoryBroker):
    closes = 0

    async def close(self) -> None:
        self.closes += 1
        await super().close()


class CountingBus(MemorySignalBus):
    closes = 0

    async def close(self) -> None:
        self.closes += 1
        await super().close()


def agents(catalog: Catalog, uid: str) -> tuple[type[MicroAgent], type[MicroAgent]]:
    first, second = Queue(f'a_{uid}', catalog=catalog), Queue(f'b_{uid}', catalog=catalog)
    signal = Signal(f's_{uid}', ['n'], catalog=catalog)

    class One(MicroAgent):
        @consumer(first)
        async def handle(self, **kwargs: Any) -> None:
            """Never called here."""

        @receiver(signal)
        async def heard(self, **kwargs: Any) -> None:
            """Never called here."""

    class Two(MicroAgent):
        @consumer(second)
        async def handle(self, **kwargs: Any) -> None:
            """Never called here."""

        @receiver(signal)
        async def heard(self, **kwargs: Any) -> None:
            """Never called here."""

    return One, Two


async def test_the_last_agent_to_stop_closes_a_shared_bus_and_broker(catalog: Catalog, uid: str) -> None:
    one, two = agents(catalog, uid)
    broker = CountingBroker(f'memory://{uid}', catalog=catalog)
    bus = CountingBus(f'memory://{uid}', catalog=catalog)
    first, second = one(broker=broker, bus=bus), two(broker=broker, bus=bus)
    await first.start()
    await second.start()
    await first.stop()
    assert (broker.closes, bus.closes) == (0, 0) and broker.in_use and bus.in_use
    await second.stop()
    assert (broker.closes, bus.closes) == (1, 1) and not broker.in_use and not bus.in_use


async def test_async_with_holds_the_broker_past_the_agents_stop(catalog: Catalog, uid: str) -> None:
    one, _ = agents(catalog, uid)
    broker = CountingBroker(f'memory://{uid}', catalog=catalog)
    async with broker as held:
        assert held is broker
        async with broker:  # nested holders count
            agent = one(broker=broker, bus=MemorySignalBus(f'memory://{uid}', catalog=catalog))
            await agent.start()
            await agent.stop()
            assert broker.closes == 0
        assert broker.closes == 0 and broker.in_use
    assert broker.closes == 1 and not broker.in_use


async def test_leaving_async_with_leaves_a_running_agents_broker_open(catalog: Catalog, uid: str) -> None:
    one, _ = agents(catalog, uid)
    bus = CountingBus(f'memory://{uid}', catalog=catalog)
    agent = one(bus=bus, broker=MemoryBroker(f'memory://{uid}', catalog=catalog))
    async with bus:
        await agent.start()
    assert bus.closes == 0  # the agent's receivers are still bound
    await agent.stop()
    assert bus.closes == 1
