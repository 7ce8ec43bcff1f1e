"""Agents for the launcher tests: they leave marker files in ``settings['dir']`` for the test to see.

Marker names: ``<event>-<agent>-<pid>[-<detail>]``.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from microagent import MicroAgent, on, periodic


def mark(agent: MicroAgent, event: str, detail: str = '') -> None:
    name = agent.settings.get('name', type(agent).__name__)
    suffix = f'-{detail}' if detail else ''
    path = os.path.join(agent.settings['dir'], f'{event}-{name}-{os.getpid()}{suffix}')
    with open(path, 'a') as fh:
        fh.write('x')


class Ticker(MicroAgent):
    """Ticks often; records start, ticks and pre_stop."""

    @on('pre_start')
    async def setup(self) -> None:
        await asyncio.sleep(float(self.settings.get('start_delay', 0)))
        mark(self, 'start')

    @periodic(period=0.2, timeout=5)
    async def tick(self) -> None:
        mark(self, 'tick')

    @on('pre_stop')
    def goodbye(self) -> None:
        mark(self, 'stop')


class SlowJob(MicroAgent):
    """A periodic job that takes a while: it is in flight when the group is told to stop."""

    @on('pre_start')
    def setup(self) -> None:
        mark(self, 'start')

    @periodic(period=0.3, timeout=30)
    async def job(self) -> None:
        mark(self, 'begin')
        await asyncio.sleep(float(self.settings.get('job_seconds', 1.5)))
        mark(self, 'end')

    @on('pre_stop')
    def goodbye(self) -> None:
        mark(self, 'stop')


class Crasher(MicroAgent):
    """Fails in pre_start every time: a crash loop."""

    @on('pre_start')
    def setup(self) -> None:
        mark(self, 'start')
        raise RuntimeError('crash on purpose')

    @periodic(period=1)
    async def never(self) -> None:
        pass


def settings_for(name: str, **extra: Any) -> dict[str, Any]:
    return {'dir': os.environ['LAUNCHER_TEST_DIR'], 'name': name, **extra}
