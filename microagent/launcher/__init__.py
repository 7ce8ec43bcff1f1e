"""The launcher: supervise a group of agents, one process each (``marun SETTINGS``).

>>> from microagent.launcher import Options, launch     # doctest: +SKIP
>>> launch(['examples.settings'], Options(duration=15))  # doctest: +SKIP
"""
from .codes import ExitCode
from .launch import launch, load_groups
from .settings import AgentEntry, BackendEntry, GroupSettings, load_settings
from .supervisor import Options, Supervisor

__all__ = ['AgentEntry', 'BackendEntry', 'ExitCode', 'GroupSettings', 'Options', 'Supervisor', 'launch',
           'load_groups', 'load_settings']
