"""The signal bus contract: one test body, every backend with a bus."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from microagent import MicroAgent, Signal, SignalArgumentsError, SignalNotFound, receiver
from microagent.bus import signal_headers

from ..helpers import Collector, eventually


def receiver_agent(signal: Signal, seen: Collector, answer: Any = None, name: str = 'Listener') -> type[MicroAgent]:
    async def handle(self: MicroAgent, signal: Signal, sender: str, **kwargs: Any) -> Any:
        seen.add((type(self).__name__, signal.name, sender, kwargs))
        return answer(kwargs) if callable(answer) else answer
    return type(name, (MicroAgent,), {'handle': receiver(signal)(handle)})


async def test_send_reaches_every_receiver(harness, catalog, uid):
    signal = Signal(f'user_created_{uid}', ['user_id'], catalog=catalog)
    seen = Collector()
    await harness.start(receiver_agent(signal, seen, name='One')(bus=harness.bus()))
    await harness.start(receiver_agent(signal, seen, name='Two')(bus=harness.bus()))
    sender = harness.bus()
    await getattr(sender, signal.name).send('tester', user_id=1)
    items = await seen.wait(2, harness.wait(10))
    assert sorted(items) == [('One', signal.name, 'tester', {'user_id': 1}),
                             ('Two', signal.name, 'tester', {'user_id': 1})]


async def test_receivers_are_isolated_and_timed(harness, catalog, uid, caplog):
    """A failing, a waiting and a timed-out receiver hold up neither the others nor the next signals."""
    signal = Signal(f'isolated_{uid}', ['n'], catalog=catalog)
    seen, never, tasks = Collector(), asyncio.Event(), {}
    cut = harness.wait(1.0)

    class Isolated(MicroAgent):
        @receiver(signal)
        async def fails(self, n: int) -> None:
            seen.add(('fails', n))
            raise RuntimeError(f'fails on {n}')

        @receiver(signal, timeout=cut)
        async def waits(self, n: int) -> None:
            tasks[n] = asyncio.current_task()
            seen.add(('waits', n, n == 0 or not tasks[0].done()))  # the second runs while the first waits
            if n == 0:
                await never.wait()  # cut by its timeout
            await asyncio.sleep(0)
            assert asyncio.current_task() is tasks[n]  # a handler keeps its task across its waits

        @receiver(signal)
        async def counts(self, n: int) -> None:
            seen.add(('counts', n))

    bus = harness.bus()
    await harness.start(Isolated(bus=bus))
    sender = getattr(harness.bus(), signal.name)
    await sender.send('t', n=0)
    await sender.send('t', n=1)
    assert sorted(await seen.wait(6, harness.wait(10))) == [
        ('counts', 0), ('counts', 1), ('fails', 0), ('fails', 1), ('waits', 0, True), ('waits', 1, True)]
    assert tasks[0] is not tasks[1]
    await eventually(lambda: bus.stats.failed['Isolated.waits'] == 1, harness.wait(10))
    assert bus.stats.failed['Isolated.fails'] == 2
    assert bus.stats.handled['Isolated.counts'] == 2 and bus.stats.handled['Isolated.waits'] == 1
    assert any(isinstance(r.exc_info[1], TimeoutError) for r in caplog.records if r.exc_info)


async def test_typed_arguments_checked_before_sending(harness, catalog, uid):
    signal = Signal(f'typed_{uid}', {'user_id': 'integer', 'email': ['string', 'null']}, catalog=catalog)
    bus = harness.bus()
    bound = getattr(bus, signal.name)
    with pytest.raises(SignalArgumentsError, match='missing'):
        await bound.send('t', user_id=1)
    with pytest.raises(SignalArgumentsError, match='unknown'):
        await bound.send('t', user_id=1, email=None, extra=2)
    with pytest.raises(SignalArgumentsError, match="'user_id' must be integer"):
        await bound.send('t', user_id='1', email=None)
    assert not hasattr(bus, 'no_such_signal')
    with pytest.raises(SignalNotFound):
        bus.no_such_signal


async def test_received_signals_are_read_tolerantly(harness, catalog, uid, caplog):
    """A sender with other declarations (a rolling deploy): delivered as far as each handler can take it."""
    signal = Signal(f'tolerant_{uid}', {'user_id': 'integer'}, catalog=catalog)
    seen = Collector()
    named: list[Any] = []

    class Named(MicroAgent):
        @receiver(signal)
        async def handle(self, user_id: Any) -> None:  # no **kwargs, no signal/sender
            named.append(user_id)
            seen.add(('Named', user_id))

    await harness.start(receiver_agent(signal, seen)(bus=harness.bus()))
    await harness.start(Named(bus=harness.bus()))
    sender = harness.bus()
    raw = sender.channel(signal.name)
    with caplog.at_level(logging.WARNING):
        await sender.send(raw, signal.serialize({'s': 'x', 'a': {'user_id': 'no'}}))          # wrong type
        await sender.send(raw, signal.serialize({'s': 'x', 'a': {'user_id': 3, 'email': 'e'}}))  # newer sender
        await sender.send(raw, signal.serialize({'s': 'x', 'a': {'user_id': 4, 'email': 'f'}}))
        await sender.send(raw, signal.serialize({'s': 'x', 'a': {}}))                         # older sender
        await getattr(sender, signal.name).send('x', user_id=2)
        await seen.wait(9, harness.wait(10))
    listener = sorted(str(item[3]) for item in seen.items if item[0] == 'Listener')
    assert listener == sorted(str(a) for a in ({'user_id': 'no'}, {'user_id': 3, 'email': 'e'},
                                               {'user_id': 4, 'email': 'f'}, {}, {'user_id': 2}))
    assert sorted(named, key=str) == sorted([2, 3, 4, 'no'], key=str)  # the one without user_id is skipped
    assert "argument 'user_id' of type str, declared integer" in caplog.text
    # Once per receiving bus, signal and key (two buses receive here), not once per message.
    assert caplog.text.count("received argument 'email' is not declared here") == 2
    assert "without declared argument 'user_id'" in caplog.text
    assert "Named.handle skipped signal" in caplog.text


async def test_rpc_call_returns_first_response(harness, catalog, uid):
    signal = Signal(f'rpc_{uid}', ['value'], catalog=catalog)
    seen = Collector()
    await harness.start(receiver_agent(signal, seen, answer=lambda kw: kw['value'] * 2, name='Doubler')(
        bus=harness.bus()))
    caller = harness.bus()
    response = await getattr(caller, signal.name).call('api', value=21, timeout=harness.wait(10))
    assert response == {'Doubler.handle': 42}


async def test_rpc_waiter_yields_each_response(harness, catalog, uid):
    signal = Signal(f'rpcw_{uid}', ['value'], catalog=catalog)
    seen = Collector()
    await harness.start(receiver_agent(signal, seen, answer={'ok': True}, name='One')(bus=harness.bus()))
    await harness.start(receiver_agent(signal, seen, answer=[1, 'two'], name='Two')(bus=harness.bus()))
    caller = harness.bus()
    responses = []
    async with getattr(caller, signal.name).waiter('api', value=1, timeout=harness.wait(10)) as stream:
        async for item in stream:
            responses.append(item)
            if len(responses) == 2:
                break
    assert sorted(responses, key=str) == sorted([{'One.handle': {'ok': True}}, {'Two.handle': [1, 'two']}], key=str)
    assert caller.pending_calls == {}


async def test_rpc_timeout_does_not_cancel_caller(harness, catalog, uid):
    signal = Signal(f'nobody_{uid}', [], catalog=catalog)
    caller = harness.bus()
    with pytest.raises(TimeoutError):
        await getattr(caller, signal.name).call('api', timeout=0.2)
    assert not asyncio.current_task().cancelling()
    await asyncio.sleep(0)
    assert caller.pending_calls == {}


async def test_many_rpc_calls_leave_nothing_behind(harness, catalog, uid):
    signal = Signal(f'echo_{uid}', ['n'], catalog=catalog)
    seen = Collector()
    await harness.start(receiver_agent(signal, seen, answer=lambda kw: kw['n'], name='Echo')(bus=harness.bus()))
    caller = harness.bus()
    # One call first: lazily opened connections (and their tasks) are not a per-call leak.
    assert await getattr(caller, signal.name).call('api', n=-1, timeout=harness.wait(10)) == {'Echo.handle': -1}
    tasks_before = len(asyncio.all_tasks())
    for n in range(300):
        assert await getattr(caller, signal.name).call('api', n=n, timeout=harness.wait(10)) == {'Echo.handle': n}
    assert caller.pending_calls == {}
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= tasks_before + 1


async def test_signal_headers_travel_in_the_envelope(harness, catalog, uid):
    plain = Signal(f'traced_{uid}', ['user_id'], catalog=catalog)
    own = Signal(f'own_headers_{uid}', ['headers'], catalog=catalog)
    seen = Collector()

    class Listener(MicroAgent):
        @receiver(plain, own)
        async def handle(self, signal: Signal, sender: str, **kwargs: Any) -> str:
            seen.add((signal.name, kwargs, dict(signal_headers())))
            return signal_headers().get('k', '-')
    await harness.start(Listener(bus=harness.bus()))
    sender = harness.bus()
    await getattr(sender, plain.name).send('t', user_id=1, headers={'k': 'v'})
    await getattr(sender, plain.name).send('t', user_id=2)
    # A signal declaring an argument named "headers" keeps it as an argument.
    await getattr(sender, own.name).send('t', headers={'arg': 1})
    # An envelope key a receiver does not know is ignored (what older receivers do with "h").
    await sender.send(sender.channel(plain.name), plain.serialize({'s': 't', 'a': {'user_id': 3}, 'z': 1}))
    items = await seen.wait(4, harness.wait(10))
    assert sorted(items, key=repr) == sorted([
        (plain.name, {'user_id': 1}, {'k': 'v'}), (plain.name, {'user_id': 2}, {}),
        (own.name, {'headers': {'arg': 1}}, {}), (plain.name, {'user_id': 3}, {})], key=repr)
    assert await getattr(sender, plain.name).call('t', user_id=4, headers={'k': 'rpc'}, timeout=harness.wait(10)) \
        == {'Listener.handle': 'rpc'}
