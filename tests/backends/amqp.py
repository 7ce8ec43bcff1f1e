"""The AMQP backend in the contract suite: the real RabbitMQ on 127.0.0.1:5672."""
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus

from ..services import require_port
from . import BackendSpec

DSN = 'amqp://guest:guest@127.0.0.1:5672/'


def _prepare() -> None:
    require_port('RabbitMQ', 5672)


BACKEND = BackendSpec(
    name='amqp',
    prepare=_prepare,
    # Test queues expire on the server two minutes after their last use.
    make_broker=lambda catalog, **options: AMQPBroker(DSN, catalog=catalog, **{'queue_expires': 120, **options}),
    make_bus=lambda catalog, prefix: AMQPSignalBus(DSN, catalog=catalog, prefix=prefix),
)
