"""The receiver's dispatch machinery: lazily armed timeouts (``within``) and lanes (inline until a wait)."""
from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import warnings

import pytest

from microagent._lane import FAIR_SHARE, SignalLane
from microagent._tasks import TaskSet
from microagent._timeouts import within

VAR: contextvars.ContextVar[str] = contextvars.ContextVar('test_lane_var', default='unset')


async def test_within_returns_and_times_out():
    async def quick() -> int:
        return 1

    async def slow() -> None:
        await asyncio.sleep(10)
    assert await within(quick(), 0.01) == 1
    with pytest.raises(TimeoutError):
        await within(slow(), 0.05)
    assert not asyncio.current_task().cancelling()


async def test_within_passes_errors_and_outer_cancellation():
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError('boom')
    with pytest.raises(ValueError, match='boom'):
        await within(fails(), 5)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.sleep(10)

    async def outer() -> None:
        await within(waits(), 5)
    task = asyncio.get_running_loop().create_task(outer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # a cancellation from outside is not a timeout
        await task


async def test_within_swallowed_cancellation_is_taken_back():
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 'kept going'
        return 'woke'
    assert await within(stubborn(), 0.05) == 'kept going'
    assert asyncio.current_task().cancelling() == 0


async def test_lane_runs_in_order_isolated_and_each_in_its_context(caplog):
    tasks, seen = TaskSet('t'), []
    lane = SignalLane(tasks, 'receiver t')

    async def work(n: int) -> None:
        seen.append((n, VAR.get()))
        VAR.set(f'set by {n}')  # must not leak into the next one
        if n == 1:
            raise RuntimeError('one fails')
    for n in range(FAIR_SHARE * 2 + 3):  # more than one fair share: the lane yields and goes on
        lane.submit(work(n))
    assert await tasks.drain(5) == 0
    assert seen == [(n, 'unset') for n in range(FAIR_SHARE * 2 + 3)]
    assert any('one fails' in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert len(tasks) == 0 and len(lane) == 0


async def test_lane_hands_the_rest_on_when_one_waits():
    tasks, release, order = TaskSet('t'), asyncio.Event(), []
    lane = SignalLane(tasks, 'receiver t')
    owners: dict[int, asyncio.Task[object] | None] = {}

    async def work(n: int) -> None:
        owners[n] = asyncio.current_task()
        VAR.set(str(n))
        if n == 0:
            async with asyncio.timeout(5):  # a timeout taken before the first wait is this run's own
                await release.wait()
            assert asyncio.current_task() is owners[0] and VAR.get() == '0'
        order.append(n)
    for n in range(3):
        lane.submit(work(n))
    while len(order) < 2:
        await asyncio.sleep(0)
    assert order == [1, 2] and owners[1] is owners[2] is not owners[0]
    release.set()
    assert await tasks.drain(5) == 0  # waits for every lane task, the one started meanwhile too
    assert order == [1, 2, 0]


async def test_drain_waits_for_work_handed_on_during_the_drain():
    tasks, gate = TaskSet('t'), asyncio.Event()
    lane = SignalLane(tasks, 'receiver t')
    done = []

    async def work(n: int) -> None:
        if n < 2:
            await gate.wait()
        await asyncio.sleep(0)
        done.append(n)
    lane.submit(work(0))
    await asyncio.sleep(0)  # 0 waits in the first task; 1 and 2 queue behind nothing
    lane.submit(work(1))
    lane.submit(work(2))
    asyncio.get_running_loop().call_soon(gate.set)
    assert await tasks.drain(5) == 0
    assert sorted(done) == [0, 1, 2]


async def test_cancelled_lane_drops_what_had_not_started(caplog):
    tasks, gate = TaskSet('t'), asyncio.Event()
    lane = SignalLane(tasks, 'receiver t')
    started = []

    async def work(n: int) -> None:
        started.append(n)
        await gate.wait()
    lane.submit(work(0))
    await asyncio.sleep(0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a never awaited coroutine would warn
        for n in range(1, FAIR_SHARE + 5):
            lane.submit(work(n))
        await tasks.cancel()
        gc.collect()
    assert len(tasks) == 0 and len(lane) == 0
    caplog.set_level(logging.ERROR)
    lane.submit(work(-1))  # a cancelled lane starts again on the next signal
    await asyncio.sleep(0)
    assert started[-1] == -1
    gate.set()
    assert await tasks.drain(5) == 0


async def test_cancelled_call_leaves_nothing_behind():
    from microagent import Catalog, Signal
    from microagent.tools.memory import MemorySignalBus

    catalog = Catalog()
    signal = Signal('lane_unanswered', [], catalog=catalog)
    bus = MemorySignalBus('memory://lane-unanswered', catalog=catalog)
    call = asyncio.get_running_loop().create_task(getattr(bus, signal.name).call('t', timeout=10))
    while not bus.pending_calls:
        await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert bus.pending_calls == {}
    assert bus.correlation_id() != bus.correlation_id()
    await bus.close()


async def test_a_run_cancelling_its_own_task_does_not_cancel_the_next():
    tasks, seen = TaskSet('t'), []
    lane = SignalLane(tasks, 'receiver t')

    async def rude() -> None:
        asyncio.current_task().cancel()  # its own task, and it ends without waiting

    async def work(n: int) -> None:
        await asyncio.sleep(0)
        seen.append(n)
    lane.submit(rude())
    for n in range(3):
        lane.submit(work(n))
    assert await tasks.drain(5) == 0
    assert seen == [0, 1, 2]
