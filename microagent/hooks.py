"""Internal hooks: run agent methods around its life cycle, and sub-services beside it.

``@on('pre_start')`` runs before the agent takes signals and messages (open
connections to databases, mail, caches...); ``@on('post_start')`` once it does
(tell a monitor it is up); ``@on('pre_stop')`` when it stops, after in-flight
handlers were drained. Hook methods may be sync or async.

``@on('server')`` marks a "run forever" sub-service (an HTTP, websocket or
SMTP endpoint of the agent): ``agent.start()`` runs every server until they
end. ``raise ServerInterrupt`` ends one gracefully; any other error is logged.

>>> from microagent import MicroAgent, on
>>> from microagent.launcher import ServerInterrupt
>>> class Agent(MicroAgent):
...     @on('pre_start')
...     def setup(self):
...         self.ready = True
...
...     @on('server')
...     async def serve(self):
...         raise ServerInterrupt('done')   # graceful end of the sub-service
"""
from __future__ import annotations

from .decorators import HOOKS, on
from .exceptions import ServerInterrupt

__all__ = ['HOOKS', 'ServerInterrupt', 'on']
