"""Bad settings: an unknown backend class."""
BROKER = {'default': {'backend': 'microagent.tools.memory.NoSuchBroker', 'dsn': 'memory://'}}
AGENT = {'ticker': {'backend': 'tests.launcher_agents.Ticker', 'settings': {}}}
