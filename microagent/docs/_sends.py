r"""What an agent sends, read from its source: ``self.bus.<signal>...`` and ``self.broker.<queue>...``.

Agents never call each other, so their sends are the only edges of the
system that the declarations do not state. They are found by reading the
agent class's source (its own and its bases' methods): an attribute
``self.bus.X`` or ``self.broker.X`` is a send of signal, queue or exchange
``X``; ``self.bus.X.call(...)`` or ``.waiter(...)`` is an RPC call. A send
made any other way (a bus passed around, ``getattr``) is not seen.

>>> source = (
...     "async def go(self):\n"
...     "    await self.broker.mailer.send({})\n"
...     "    await self.bus.rpc_count.call('me', user_id=1)\n")
>>> sorted(sends_in(source))
[('broker', 'mailer', False), ('bus', 'rpc_count', True)]
"""
from __future__ import annotations

import ast
import inspect
import textwrap

__all__ = ['sends_in', 'sends_of']

Send = tuple[str, str, bool]  # 'bus' or 'broker', name, RPC call
RPC_METHODS = ('call', 'waiter')


def sends_of(cls: type) -> set[Send]:
    """Every ``(backend, name, rpc)`` found in the source of *cls* and its bases (none if unreadable)."""
    found: set[Send] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith('microagent.') or klass is object:
            continue
        try:
            found.update(sends_in(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
    return found


def sends_in(source: str) -> set[Send]:
    """Every ``(backend, name, rpc)`` in Python *source*."""
    tree = ast.parse(textwrap.dedent(source))
    found: set[Send] = set()
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        backend = _backend_attr(node)
        if backend is None:
            continue
        parent = parents.get(id(node))
        rpc = isinstance(parent, ast.Attribute) and parent.attr in RPC_METHODS
        found.add((backend, node.attr, rpc))  # type: ignore[attr-defined]
    return found


def _backend_attr(node: ast.AST) -> str | None:
    """'bus' or 'broker' when *node* is ``self.bus.X`` / ``self.broker.X``."""
    if not isinstance(node, ast.Attribute) or node.attr.startswith('_'):
        return None
    inner = node.value
    if (isinstance(inner, ast.Attribute) and inner.attr in ('bus', 'broker')
            and isinstance(inner.value, ast.Name) and inner.value.id == 'self'):
        return inner.attr
    return None
