"""Launcher test group with an agent that crashes at start, next to a healthy one."""
from tests.launcher_agents import settings_for

AGENT = {
    'crasher': {'backend': 'tests.launcher_agents.Crasher', 'settings': settings_for('crasher')},
    'ticker': {'backend': 'tests.launcher_agents.Ticker', 'settings': settings_for('ticker')},
}
