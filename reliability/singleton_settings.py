"""The launcher settings of the singleton group under test (fault 7), from the environment the driver sets.

``REL_BACKEND``, ``REL_DSN`` and ``REL_BROKER_OPTIONS`` as for
:mod:`reliability.group_settings`; ``REL_TICK_REPLICAS`` replicas (3) of
:class:`reliability.singleton.TickAgent`, their lease names prefixed with
``REL_QUEUE``::

    REL_BACKEND=redis REL_DSN=redis://127.0.0.1:6390/0 REL_QUEUE=q1 REL_LEDGER=/tmp/l \\
        marun reliability.singleton_settings --grace 3
"""
from __future__ import annotations

import json
import os

from . import group_settings

# The agent consumes nothing: the consumers' broker settings only name the backend and DSN its lease lives on.
BROKER = group_settings.BROKER
AGENT = {'ticker': {'backend': 'reliability.singleton.TickAgent', 'broker': 'default',
                    'replicas': int(os.environ.get('REL_TICK_REPLICAS', '3')),
                    'settings': {'lease_prefix': os.environ.get('REL_QUEUE', 'reliability'),
                                 'lease_options': json.loads(os.environ.get('REL_LEASE_OPTIONS', '{}'))}}}
