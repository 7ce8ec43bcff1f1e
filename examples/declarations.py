"""Signals and queues of the examples, loaded from the JSON files next to this module.

Loaded at import time, as agent modules usually do: the launcher must cope.

>>> from examples.declarations import queues, signals
>>> signals.user_created.name, queues.mailer.name
('user_created', 'mailer')
"""
from __future__ import annotations

import os

from microagent import load_queues, load_signals

HERE = os.path.dirname(os.path.abspath(__file__))

signals = load_signals(f'file://{HERE}/signals.json')
queues = load_queues(f'file://{HERE}/queues.json')
