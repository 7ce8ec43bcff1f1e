"""Launcher test group whose agent takes a while to connect: /readyz must wait for it."""
from tests.launcher_agents import settings_for

AGENT = {
    'late': {'backend': 'tests.launcher_agents.Ticker', 'settings': settings_for('late', start_delay=2.0)},
}
