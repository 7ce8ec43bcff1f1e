"""An agent of the real microagent 1.9.0, driven through stdin/stdout (run by tests/test_interop_19.py).

Runs under the separate virtual environment that has ``microagent==1.9.0``:
it never imports this project. Usage::

    python microagent19_driver.py SPEC_JSON

SPEC: ``declarations`` (a file path), ``prefix``, ``redis`` (DSN for the bus:
receivers and signal commands), ``broker`` ({"backend": "redis"|"amqp"|"kafka",
"dsn": ...}), ``receive`` (signal names to subscribe to), ``rpc`` (a signal name
answered with ``value * 2``), ``consume`` (queue names). Each event is one JSON
line on stdout; each line on stdin is a command:
``{"cmd": "signal"|"call", "name", "sender", "kwargs"}``, ``{"cmd": "send", "queue",
"message", "topic"?}``, ``{"cmd": "exit"}``.
"""
import asyncio
import json
import logging
import sys

import microagent
from microagent import MicroAgent, Queue, Signal, configure, consumer, receiver

logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format='[1.9] %(levelname)s %(name)s %(message)s')


def emit(event, **data):
    sys.stdout.write(json.dumps({'event': event, **data}, default=str) + '\n')
    sys.stdout.flush()


def named(func, name):
    # 1.9 finds handlers by module and qualified name, fixed when decorating: name them first.
    func.__name__, func.__qualname__ = name, f'OldAgent.{name}'
    return func


def make_agent(spec):
    attrs = {}
    for name in spec.get('receive', []):
        async def on_signal(self, signal, sender, **kwargs):
            emit('signal', name=signal.name, sender=sender, kwargs=kwargs)
        attrs[f'on_{name}'] = receiver(Signal.get(name))(named(on_signal, f'on_{name}'))
    if spec.get('rpc'):
        async def on_rpc(self, signal, sender, value, **kwargs):
            emit('rpc', name=signal.name, sender=sender, value=value)
            return value * 2
        attrs['on_rpc'] = receiver(Signal.get(spec['rpc']))(named(on_rpc, 'on_rpc'))
    for name in spec.get('consume', []):
        async def on_message(self, __queue=name, **kwargs):
            kwargs.pop('amqp', None)
            kwargs.pop('kafka', None)
            emit('message', queue=__queue, message=kwargs)
        attrs[f'on_{name}'] = consumer(Queue.get(name))(named(on_message, f'on_{name}'))
    return type('OldAgent', (MicroAgent,), attrs)


def make_broker(spec):
    broker = spec.get('broker')
    if not broker:
        return None
    if broker['backend'] == 'redis':
        from microagent.tools.redis import RedisBroker
        return RedisBroker(broker['dsn'])
    if broker['backend'] == 'amqp':
        from microagent.tools.amqp import AMQPBroker
        return AMQPBroker(broker['dsn'])
    from microagent.tools.kafka import KafkaBroker
    return KafkaBroker(broker['dsn'])


async def command(bus, broker, line):
    cmd = json.loads(line)
    if cmd['cmd'] == 'exit':
        return False
    if cmd['cmd'] == 'signal':
        await getattr(bus, cmd['name']).send(cmd['sender'], **cmd['kwargs'])
        emit('sent', name=cmd['name'])
    elif cmd['cmd'] == 'call':
        response = await getattr(bus, cmd['name']).call(cmd['sender'], timeout=cmd.get('timeout', 10),
                                                        **cmd['kwargs'])
        emit('response', name=cmd['name'], response=response)
    elif cmd['cmd'] == 'send':
        options = {'topic': cmd['topic']} if cmd.get('topic') else {}
        await getattr(broker, cmd['queue']).send(cmd['message'], **options)
        emit('sent', queue=cmd['queue'])
    return True


async def main(spec):
    configure('file://' + spec['declarations'])
    bus = None
    if spec.get('redis'):
        from microagent.tools.redis import RedisSignalBus
        bus = RedisSignalBus(spec['redis'], prefix=spec['prefix'])
    broker = make_broker(spec)
    agent = make_agent(spec)(bus=bus, broker=broker)
    await agent.start()
    # 1.9 binds asynchronously (a task per subscription or consumer): let them start.
    await asyncio.sleep(spec.get('settle', 1.5))
    emit('ready', version=microagent.__version__)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        try:
            if not await command(bus, broker, line):
                break
        except Exception as exc:
            emit('error', error=f'{type(exc).__name__}: {exc}')
    await agent.stop()


if __name__ == '__main__':
    asyncio.run(main(json.loads(sys.argv[1])))
