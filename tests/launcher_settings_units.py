"""Settings for the in-process launcher unit tests (memory backends; the examples' agents)."""
BUS = {'default': {'backend': 'microagent.tools.memory.MemorySignalBus', 'dsn': 'memory://'}}
BROKER = {'default': {'backend': 'microagent.tools.memory.MemoryBroker', 'dsn': 'memory://', 'max_attempts': 2}}
AGENT = {
    'emails': {'backend': 'examples.emails.EmailAgent', 'broker': 'default', 'replicas': 3},
    'comments': {'backend': 'examples.comments.CommentAgent', 'bus': 'default'},
}
