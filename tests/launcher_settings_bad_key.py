"""Bad settings: an agent names a bus that is not declared."""
BUS = {'default': {'backend': 'microagent.tools.memory.MemorySignalBus', 'dsn': 'memory://'}}
AGENT = {'ticker': {'backend': 'tests.launcher_agents.Ticker', 'bus': 'missing', 'settings': {}}}
