"""The AMQP backend on plain aiormq (``fast_lane=False``): the fast lane's fallback passes the same contract."""
from microagent.tools.amqp import AMQPBroker, AMQPSignalBus

from . import BackendSpec
from .amqp import DSN, _prepare

BACKEND = BackendSpec(
    name='amqp_plain',
    prepare=_prepare,
    make_broker=lambda catalog, **options: AMQPBroker(
        DSN, catalog=catalog, **{'queue_expires': 120, 'fast_lane': False, **options}),
    make_bus=lambda catalog, prefix: AMQPSignalBus(DSN, catalog=catalog, prefix=prefix, fast_lane=False),
)
