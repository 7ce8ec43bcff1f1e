"""Backends (memory, redis, amqp, kafka) and mocks; import the one you use."""
