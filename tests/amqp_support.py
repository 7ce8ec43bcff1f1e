"""Helpers of the AMQP tests: the real RabbitMQ on loopback and a dedicated user per test session."""
from __future__ import annotations

import subprocess
import uuid

import pytest

from .services import require_port

DSN = 'amqp://guest:guest@127.0.0.1:5672/'


def require_rabbit() -> None:
    require_port('RabbitMQ', 5672)


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run rabbitmqctl; its output (raises CalledProcessError on failure)."""
    done = subprocess.run(['rabbitmqctl', *args], capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


class RabbitUser:
    """A RabbitMQ user of our own: fault injection closes only its connections."""

    def __init__(self) -> None:
        self.name = f'ma_test_{uuid.uuid4().hex[:8]}'
        self.password = f'canary{uuid.uuid4().hex}'

    @property
    def dsn(self) -> str:
        return f'amqp://{self.name}:{self.password}@127.0.0.1:5672/'

    def create(self) -> None:
        rabbitmqctl('add_user', self.name, self.password)
        rabbitmqctl('set_permissions', '-p', '/', self.name, '.*', '.*', '.*')

    def close_connections(self) -> None:
        rabbitmqctl('close_all_user_connections', self.name, 'fault injection by microagent tests')

    def delete(self) -> None:
        rabbitmqctl('delete_user', self.name)


def require_lane() -> None:
    """RabbitMQ, and an aiormq the fast lane fits (under ``--deps lowest`` it may not: plain aiormq then)."""
    from microagent.tools.amqp._compat import lane_problem

    require_rabbit()
    problem = lane_problem()
    if problem is not None:
        pytest.skip(f'the AMQP fast lane is off with this aiormq: {problem}')
