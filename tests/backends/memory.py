from microagent.tools.memory import MemoryBroker, MemorySignalBus

from . import BackendSpec


def _prepare() -> None:
    pass


BACKEND = BackendSpec(
    name='memory',
    prepare=_prepare,
    make_broker=lambda catalog, **options: MemoryBroker('memory://', catalog=catalog, **options),
    make_bus=lambda catalog, prefix: MemorySignalBus('memory://', catalog=catalog, prefix=prefix),
)
