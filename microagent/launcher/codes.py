"""Named exit codes of the launcher and its worker processes.

>>> ExitCode.CONFIG.value
2
"""
from __future__ import annotations

import enum

__all__ = ['ExitCode']


class ExitCode(enum.IntEnum):
    """What ``marun`` / ``microagent run`` and each worker process exit with."""

    OK = 0              # stopped on request (signal or --duration), every agent drained
    CRASHED = 1         # an agent failed to start or died (worker); unexpected error (CLI)
    CONFIG = 2          # bad settings or bad command line; nothing was started
    AGENT_FAILED = 3    # --fail-fast: an agent process died, the group was stopped
    FORCED = 4          # a second signal: processes were killed without draining
    ORPHANED = 5        # worker: the supervisor went away
