from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from microagent import Catalog, MicroAgent

from ..backends import BackendSpec


class Harness:
    """Builds brokers, buses and agents for one test and stops them all at the end."""

    def __init__(self, backend: BackendSpec, catalog: Catalog, uid: str) -> None:
        self.backend = backend
        self.catalog = catalog
        self.uid = uid
        self.agents: list[MicroAgent] = []
        self.closables: list[Any] = []

    def wait(self, seconds: float) -> float:
        return seconds * self.backend.slow_factor

    def broker(self, **options: Any) -> Any:
        if self.backend.make_broker is None:
            pytest.skip(f'{self.backend.name} has no broker')
        broker = self.backend.make_broker(self.catalog, **options)
        self.closables.append(broker)
        return broker

    def bus(self) -> Any:
        if self.backend.make_bus is None:
            pytest.skip(f'{self.backend.name} has no signal bus')
        bus = self.backend.make_bus(self.catalog, f'T{self.uid}')
        self.closables.append(bus)
        return bus

    async def start(self, agent: MicroAgent) -> MicroAgent:
        self.agents.append(agent)
        await agent.start()
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            if agent.started:
                await agent.stop(timeout=1)
        for item in self.closables:
            await item.close()


@pytest.fixture
async def harness(backend: BackendSpec, catalog: Catalog, uid: str) -> AsyncIterator[Harness]:
    h = Harness(backend, catalog, uid)
    try:
        yield h
    finally:
        await h.close()
