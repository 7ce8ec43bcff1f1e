"""One error root for the whole library.

Every error microagent raises on purpose is a :class:`MicroAgentError`. Some
also inherit a builtin so that ordinary Python code keeps working, for example
``hasattr(broker, 'missing')`` is ``False`` because :class:`QueueNotFound` is
an :class:`AttributeError`::

    try:
        await broker.unknown.send({})
    except MicroAgentError as exc:
        log.error('cannot send: %s', exc)
"""
from __future__ import annotations

__all__ = [
    'BackendError',
    'BackendNotInstalled',
    'ConfigurationError',
    'ConnectError',
    'DeliveryError',
    'DoubleLoadError',
    'EffectsError',
    'MicroAgentError',
    'MissConfig',
    'QueueException',
    'QueueNotFound',
    'SerializingError',
    'ServerInterrupt',
    'SignalArgumentsError',
    'SignalException',
    'SignalNotFound',
    'UnsupportedOption',
]


class MicroAgentError(Exception):
    """Root of every error raised by microagent."""


class ConfigurationError(MicroAgentError, ValueError):
    """Bad declarations, bad decorator arguments, bad settings.

    >>> raise ConfigurationError('queue "Mailer": name must match [a-z_][a-z0-9_]*')
    Traceback (most recent call last):
    ...
    microagent.exceptions.ConfigurationError: queue "Mailer": name must match [a-z_][a-z0-9_]*
    """


class UnsupportedOption(ConfigurationError, TypeError):
    """An option the backend does not support (a send option, say); it names the backend and the option.

    >>> raise UnsupportedOption("RedisBroker.send: unsupported option 'key' (supported: headers, message_id)")
    Traceback (most recent call last):
    ...
    microagent.exceptions.UnsupportedOption: RedisBroker.send: unsupported option 'key' (supported: headers, message_id)
    """


class DoubleLoadError(ConfigurationError, RuntimeError):
    """A declaration loaded again with a different definition (microagent 1.9's name for it).

    Loading the same declarations twice, or adding new ones, is fine; only a
    conflicting redefinition raises:

    >>> from microagent import Catalog, Signal
    >>> catalog = Catalog()
    >>> _ = Signal('user_created', ['user_id'], catalog=catalog)
    >>> Signal('user_created', ['id'], catalog=catalog)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    microagent.exceptions.DoubleLoadError: signal 'user_created' redeclared with a different providing_args
    """


class MissConfig(ConfigurationError):
    """An agent needs a bus or a broker and got something else (microagent 1.9's name for it).

    >>> from microagent import MicroAgent, Signal, receiver
    >>> class Agent(MicroAgent):
    ...     @receiver(Signal('ping_missconfig', []))
    ...     async def pong(self, **kwargs): ...
    >>> Agent(bus='redis://localhost')
    Traceback (most recent call last):
    ...
    microagent.exceptions.MissConfig: Agent has receivers: bus must be a signal bus (AbstractSignalBus), got 'redis://localhost'
    """


class SerializingError(MicroAgentError, ValueError):
    """A payload cannot be serialized or deserialized; nothing was sent."""


class SignalException(MicroAgentError):
    """Base signal exception."""


class SignalNotFound(SignalException, AttributeError):
    """No signal with that name is declared."""


class SignalArgumentsError(SignalException, TypeError):
    """Signal arguments are missing, unknown or of the wrong JSON type."""


class QueueException(MicroAgentError):
    """Base queue exception."""


class QueueNotFound(QueueException, AttributeError):
    """No queue or exchange with that name is declared."""


class BackendError(MicroAgentError):
    """A bus or broker could not do what was asked (connection, routing, timeout)."""


class ConnectError(BackendError):
    """A bus or broker cannot connect for a cause that waiting will not cure, raised at once.

    ``cause`` is one of ``'authentication refused'``, ``'unknown host'`` and
    ``'connection refused'``; ``dsn`` is the DSN with its password masked;
    ``owner`` names the bus or broker class. The text never holds the password.

    >>> raise ConnectError('RedisSignalBus', 'redis://:***@localhost:6379/7', 'authentication refused',
    ...                    'WRONGPASS invalid username-password pair')
    Traceback (most recent call last):
    ...
    microagent.exceptions.ConnectError: RedisSignalBus cannot connect to redis://:***@localhost:6379/7: \
authentication refused (WRONGPASS invalid username-password pair)
    """

    def __init__(self, owner: str, dsn: str, cause: str, detail: str = '') -> None:
        self.owner, self.dsn, self.cause, self.detail = owner, dsn, cause, detail
        super().__init__(f'{owner} cannot connect to {dsn}: {cause}' + (f' ({detail})' if detail else ''))

    def __reduce__(self) -> tuple[type[ConnectError], tuple[str, str, str, str]]:
        return type(self), (self.owner, self.dsn, self.cause, self.detail)


class BackendNotInstalled(BackendError, ImportError):
    """The client library of a backend is missing; the message names the pip extra."""


class DeliveryError(BackendError):
    """A message was not accepted by the broker (unroutable, not confirmed)."""


class EffectsError(BackendError):
    """An effects transaction did not commit (the database rolled it back, or its tables are missing).

    >>> raise EffectsError('the database rolled the transaction back: an earlier statement failed')
    Traceback (most recent call last):
    ...
    microagent.exceptions.EffectsError: the database rolled the transaction back: an earlier statement failed
    """


class ServerInterrupt(MicroAgentError):
    """Raised inside an ``@on('server')`` sub-service to end it gracefully."""
