from __future__ import annotations

import asyncio

from microagent._watchdog import Watchdog


async def test_overdue_handlers_are_cancelled_in_order_others_untouched():
    dog = Watchdog(0.05)
    outcomes: list[str] = []

    async def run(name: str, seconds: float) -> None:
        watch = dog.watch()
        try:
            await asyncio.sleep(seconds)
            outcomes.append(f'{name} done')
        except asyncio.CancelledError:
            outcomes.append(f'{name} timed out' if watch.fired else f'{name} cancelled')
        finally:
            watch.done()
    await asyncio.gather(run('slow', 1), run('fast', 0.001), run('slow2', 1))
    assert sorted(outcomes) == ['fast done', 'slow timed out', 'slow2 timed out']


async def test_finished_watches_do_not_pile_up_behind_a_long_one():
    dog = Watchdog(60)
    head = dog.watch()
    for _ in range(5000):
        dog.watch().done()
    assert len(dog._watches) < 2000
    head.done()
    dog.close()
    assert dog._timer is None


async def test_outside_cancel_is_not_a_timeout():
    dog = Watchdog(10)
    started = asyncio.Event()
    fired = []

    async def run() -> None:
        watch = dog.watch()
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            fired.append(watch.fired)
            watch.done()
    task = asyncio.create_task(run())
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert fired == [False]
    dog.close()
