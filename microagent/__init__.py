"""microagent: microservices as agents that talk only to a signal bus and a queue broker."""
from .agent import MicroAgent
from .broker import AbstractQueueBroker, BoundExchange, BoundQueue, Consumer
from .bus import AbstractSignalBus, BoundSignal, Receiver
from .catalog import DEFAULT_CATALOG, Catalog
from .decorators import consumer, cron, on, periodic, receiver
from .delivery import DeadLetter, Delivery
from .exceptions import (
    BackendError,
    BackendNotInstalled,
    ConfigurationError,
    ConnectError,
    DeliveryError,
    DoubleLoadError,
    MicroAgentError,
    MissConfig,
    QueueException,
    QueueNotFound,
    SerializingError,
    ServerInterrupt,
    SignalArgumentsError,
    SignalException,
    SignalNotFound,
)
from .loader import configure, load_queues, load_signals, load_stuff
from .queue import Queue
from .signal import Signal

__version__ = '2.0.0'

__all__ = [
    'DEFAULT_CATALOG',
    'AbstractQueueBroker',
    'AbstractSignalBus',
    'BackendError',
    'BackendNotInstalled',
    'BoundExchange',
    'BoundQueue',
    'BoundSignal',
    'Catalog',
    'ConfigurationError',
    'ConnectError',
    'Consumer',
    'DeadLetter',
    'Delivery',
    'DeliveryError',
    'DoubleLoadError',
    'MicroAgent',
    'MicroAgentError',
    'MissConfig',
    'Queue',
    'QueueException',
    'QueueNotFound',
    'Receiver',
    'SerializingError',
    'ServerInterrupt',
    'Signal',
    'SignalArgumentsError',
    'SignalException',
    'SignalNotFound',
    '__version__',
    'configure',
    'consumer',
    'cron',
    'load_queues',
    'load_signals',
    'load_stuff',
    'on',
    'periodic',
    'receiver',
]
