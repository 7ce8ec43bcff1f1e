"""The AsyncAPI 3.0 document of a system: servers, channels, operations per agent, message schemas.

Channel and message keys: ``signal.<name>`` (``signal.<name>.reply`` for
RPC responses), ``queue.<name>``, ``exchange.<name>``; operations:
``<agent>.<handler>`` for receivers and consumers, ``<agent>.send.<target>``
and ``<agent>.call.<signal>`` for what the agent sends (read from its source).
Schedules, hooks and replicas go under the ``x-microagent-agents`` extension.

Not run: reads the example application (examples/; tests/test_docs.py runs it).
>>> doc = asyncapi(describe(load_settings('examples.settings')))   # doctest: +SKIP
>>> doc['channels']['queue.mailer']['address']                      # doctest: +SKIP
'mailer'
"""
from __future__ import annotations

from typing import Any

from .. import __version__
from ._model import Agent, Handler, Send, System
from ._schemas import dto_schema, reply_schema, signal_schema

__all__ = ['asyncapi']

JSON = 'application/json'
REPLY_LOCATION = '$message.payload#/r'


def _ref(*path: str) -> dict[str, str]:
    return {'$ref': '#/' + '/'.join(p.replace('~', '~0').replace('/', '~1') for p in path)}


class _Builder:
    def __init__(self, system: System, prefix: str) -> None:
        self.system = system
        self.prefix = prefix
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        self.rpc = {h.target for a in system.agents for h in a.handlers if h.replies}
        self.rpc |= {s.target for a in system.agents for s in a.sends if s.rpc}

    def servers(self, kind: str) -> list[dict[str, str]]:
        return [_ref('servers', s.key) for s in self.system.servers if s.kind == kind]

    def channel(self, key: str, address: str | None, schema: dict[str, Any], kind: str, summary: str = '',
                **extra: Any) -> None:
        self.schemas[key] = schema
        self.messages[key] = {'name': key, 'title': key, 'contentType': JSON,
                              'payload': _ref('components', 'schemas', key)}
        if summary:
            self.messages[key]['summary'] = summary
        channel: dict[str, Any] = {'address': address, 'messages': {key: _ref('components', 'messages', key)}}
        servers = self.servers(kind)
        if servers:
            channel['servers'] = servers
        if summary:
            channel['description'] = summary
        self.channels[key] = {**channel, **extra}

    def declarations(self) -> None:
        for name, signal in self.system.signals.items():
            self.channel(f'signal.{name}', f'{self.prefix}:{name}', signal_schema(signal), 'bus', signal.description)
            if name in self.rpc:
                keys = [f'{a.backend.rsplit(".", 1)[-1]}.{h.method}' for a in self.system.agents
                        for h in a.handlers if h.kind == 'receiver' and h.target == name and h.replies]
                self.channel(f'signal.{name}.reply', None, reply_schema(keys), 'bus',
                             f'RPC responses to {name}, on the caller\'s own channel {self.prefix}:response:<uid>')
        for name, queue in self.system.queues.items():
            consumers = self.system.consumers_of(name)
            dto = consumers[0][1].dto_class if consumers else None
            extra = {'x-microagent-exchange': queue.exchange, 'x-microagent-topics': list(queue.topics)} \
                if queue.exchange else {}
            self.channel(f'queue.{name}', name, dto_schema(dto, self.schemas), 'broker',
                         _queue_summary(name, queue.exchange, queue.topics), **extra)
        for name, bound in self.system.exchanges.items():
            routes = {q.name: list(q.topics) or ['#'] for q in bound}
            self.channel(f'exchange.{name}', name, {'type': 'object'}, 'broker',
                         f'exchange {name}: routes to {", ".join(routes)} by topic', **{'x-microagent-routes': routes})

    def agent_operations(self, agent: Agent) -> None:
        receivers = [h.method for h in agent.handlers if h.kind == 'receiver']
        for handler in agent.handlers:
            op_id = f'{agent.key}.{handler.method}'
            if handler.kind == 'receiver' and receivers.count(handler.method) > 1:
                op_id += f'.{handler.target}'
            self.operations[op_id] = self._receive(agent, handler)
        for send in agent.sends:
            self.operations[f'{agent.key}.{"call" if send.rpc else "send"}.{send.target}'] = self._send(agent, send)

    def _operation(self, agent: Agent, action: str, channel: str, summary: str) -> dict[str, Any]:
        key = channel
        op: dict[str, Any] = {'action': action, 'channel': _ref('channels', channel),
                              'messages': [_ref('channels', channel, 'messages', key)],
                              'tags': [{'name': f'agent:{agent.key}'}]}
        if summary:
            op['summary'] = summary
        return op

    def _reply(self, op: dict[str, Any], signal: str) -> None:
        key = f'signal.{signal}.reply'
        op['reply'] = {'address': {'location': REPLY_LOCATION}, 'channel': _ref('channels', key),
                       'messages': [_ref('channels', key, 'messages', key)]}

    def _receive(self, agent: Agent, handler: Handler) -> dict[str, Any]:
        kind = 'signal' if handler.kind == 'receiver' else 'queue'
        op = self._operation(agent, 'receive', f'{kind}.{handler.target}', handler.description)
        op['x-microagent-timeout'] = handler.timeout
        if handler.replies:
            self._reply(op, handler.target)
        return op

    def _send(self, agent: Agent, send: Send) -> dict[str, Any]:
        op = self._operation(agent, 'send', f'{send.kind}.{send.target}', '')
        if send.rpc:
            self._reply(op, send.target)
        return op


def _queue_summary(name: str, exchange: str, topics: tuple[str, ...]) -> str:
    if not exchange:
        return f'queue {name}'
    return f'queue {name}, bound to exchange {exchange}' + (f' with topics {", ".join(topics)}' if topics else '')


def asyncapi(system: System, *, version: str = '1.0.0', prefix: str = 'PUBSUB') -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a JSON-ready dict) of *system*; *prefix*: the signal bus channel prefix."""
    builder = _Builder(system, prefix)
    builder.declarations()
    for agent in system.agents:
        builder.agent_operations(agent)
    servers = {s.key: _server(s) for s in system.servers}
    doc: dict[str, Any] = {
        'asyncapi': '3.0.0',
        'info': {'title': system.title, 'version': version,
                 'description': f'Agents, signals and queues of the settings module {system.title} '
                                f'(generated by microagent {__version__}).'},
        'defaultContentType': JSON,
        'servers': servers,
        'channels': builder.channels,
        'operations': builder.operations,
        'components': {'messages': builder.messages, 'schemas': builder.schemas},
        'x-microagent-agents': {a.key: _agent_extension(a) for a in system.agents},
    }
    if not servers:
        del doc['servers']
    return doc


def _server(server: Any) -> dict[str, Any]:
    out = {'host': server.host, 'protocol': server.protocol, 'title': f'{server.kind} {server.key.split("-", 1)[1]}',
           'description': f'{server.backend}'}
    if server.pathname:
        out['pathname'] = server.pathname
    return out


def _agent_extension(agent: Agent) -> dict[str, Any]:
    return {'backend': agent.backend, 'replicas': agent.replicas, 'bus': agent.bus, 'broker': agent.broker,
            'description': agent.description, 'hooks': agent.hooks,
            'schedules': [{k: v for k, v in s.items() if k != 'next_run'} for s in agent.schedules]}
