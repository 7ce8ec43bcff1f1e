"""Bad settings: an agent module that does not exist."""
AGENT = {'ghost': {'backend': 'tests.launcher_no_such_module.Ghost'}}
