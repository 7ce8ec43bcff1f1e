"""The topology picture: agents, signals, queues, exchanges and schedules as a graph (Graphviz).

Edges follow the messages: agent -> signal/queue/exchange for sends (dashed
for RPC calls), signal/queue -> agent for receivers and consumers, exchange
-> queue with the topic patterns, schedule -> agent for periodic and cron
runs. ``dot`` lays it out; :func:`topology_svg` needs the Graphviz programs
(``apt-get install graphviz``) and the ``graphviz`` package
(``pip install "microagent[docs]"``).

Not run: reads the example application (examples/; tests/test_docs.py runs it).
>>> print(topology_dot(describe(load_settings('examples.settings'))))   # doctest: +SKIP
digraph microagent { ...
"""
from __future__ import annotations

from typing import Any

from ..exceptions import BackendNotInstalled
from ._model import Agent, System

__all__ = ['topology_dot', 'topology_svg']

COLORS = {'agent': '#dbe9f6', 'signal': '#fdf1d6', 'queue': '#e2f3e4', 'exchange': '#efe3f5', 'schedule': '#f2f2f2'}


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError as exc:
        raise BackendNotInstalled('the topology needs the graphviz package: pip install "microagent[docs]"') from exc
    return graphviz


def _schedule_label(schedule: dict[str, Any]) -> str:
    when = f'every {schedule["period"]:g}s' if 'period' in schedule else f'cron {schedule["cron"]}'
    if schedule.get('timezone') not in (None, 'UTC'):
        when += f' {schedule["timezone"]}'
    handler = str(schedule['handler']).rsplit('.', 1)[-1]
    return f'{when}\n{handler}' + ('\n(singleton)' if schedule.get('singleton') else '')


def _agent_label(agent: Agent) -> str:
    name = agent.key + (f' x{agent.replicas}' if agent.replicas > 1 else '')
    return f'{name}\n{agent.backend.rsplit(".", 1)[-1]}'


def _graph(system: System) -> Any:
    graphviz = _graphviz()
    graph = graphviz.Digraph('microagent', graph_attr={'rankdir': 'LR', 'fontname': 'Helvetica', 'label': system.title,
                                                       'labelloc': 't', 'nodesep': '0.35'},
                             node_attr={'fontname': 'Helvetica', 'fontsize': '11', 'style': 'filled'},
                             edge_attr={'fontname': 'Helvetica', 'fontsize': '9'})
    for name in system.signals:
        graph.node(f'signal.{name}', name, shape='ellipse', fillcolor=COLORS['signal'], tooltip=f'signal {name}')
    for name in system.queues:
        graph.node(f'queue.{name}', name, shape='cylinder', fillcolor=COLORS['queue'], tooltip=f'queue {name}')
    for name, queues in system.exchanges.items():
        graph.node(f'exchange.{name}', name, shape='hexagon', fillcolor=COLORS['exchange'], tooltip=f'exchange {name}')
        for queue in queues:
            graph.edge(f'exchange.{name}', f'queue.{queue.name}', label=', '.join(queue.topics) or '#')
    for agent in system.agents:
        _agent_nodes(graph, agent)
    return graph


def _agent_nodes(graph: Any, agent: Agent) -> None:
    node = f'agent.{agent.key}'
    graph.node(node, _agent_label(agent), shape='box', fillcolor=COLORS['agent'],
               tooltip=agent.description or agent.key)
    for handler in agent.handlers:
        source = f'{"signal" if handler.kind == "receiver" else "queue"}.{handler.target}'
        graph.edge(source, node, label=handler.method)
        if handler.replies:
            graph.edge(node, source, label='reply', style='dotted', arrowhead='vee')
    for send in agent.sends:
        graph.edge(node, f'{send.kind}.{send.target}', label='call' if send.rpc else '',
                   style='dashed' if send.rpc else 'solid')
    for index, schedule in enumerate(agent.schedules):
        clock = f'schedule.{agent.key}.{index}'
        graph.node(clock, _schedule_label(schedule), shape='note', fillcolor=COLORS['schedule'], fontsize='9')
        graph.edge(clock, node, style='dashed', arrowhead='vee')


def topology_dot(system: System) -> str:
    """The Graphviz DOT source of the topology."""
    return str(_graph(system).source)


def topology_svg(system: System) -> str:
    """The topology as an SVG document (laid out by Graphviz's ``dot``)."""
    graphviz = _graphviz()
    try:
        return str(_graph(system).pipe(format='svg', encoding='utf-8'))
    except graphviz.ExecutableNotFound as exc:
        raise BackendNotInstalled('the SVG needs the Graphviz programs (dot): apt-get install graphviz '
                                  '(or brew install graphviz)') from exc
