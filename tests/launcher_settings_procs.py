"""Launcher test group without any broker: every replica in a process of its own."""
from tests.launcher_agents import settings_for

AGENT = {
    'ticker': {'backend': 'tests.launcher_agents.Ticker', 'replicas': 2, 'settings': settings_for('ticker')},
    'slow': {'backend': 'tests.launcher_agents.SlowJob', 'settings': settings_for('slow')},
}
