"""The launcher: supervise a group of agents, one process each (``marun SETTINGS``).

Not run: starts worker processes or needs their supervisor (tests/test_launcher*.py run it).
>>> from microagent.launcher import Options, launch     # doctest: +SKIP
>>> launch(['examples.settings'], Options(duration=15))  # doctest: +SKIP

microagent 1.9's names are here too: ``ServerInterrupt`` (end an
``@on('server')`` sub-service gracefully), ``load_configuration`` and
``init_agent`` (:mod:`microagent.launcher.legacy`).
"""
from ..exceptions import ServerInterrupt
from .codes import ExitCode
from .launch import launch, load_groups
from .legacy import init_agent, load_configuration
from .settings import AgentEntry, BackendEntry, GroupSettings, load_settings
from .supervisor import Options, Supervisor

__all__ = ['AgentEntry', 'BackendEntry', 'ExitCode', 'GroupSettings', 'Options', 'ServerInterrupt', 'Supervisor',
           'init_agent', 'launch', 'load_configuration', 'load_groups', 'load_settings']
