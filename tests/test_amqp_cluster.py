"""RabbitMQ cluster faults: the node leading a quorum queue is killed and restarted while traffic flows.

One private three-node cluster (reliability/rabbit_cluster.py: its own node
names, ports, data directories and cookie; the machine's node on 5672 is not
touched) serves the whole test session: starting it costs about 20 s of the
two shared cores (up to 50 s when they are busy). The fault itself is
reliability/cluster_fault.py. The smoke size runs 300 messages through one
kill; ``--slow`` runs 5,000 through a kill of the leader of the moment, three times.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reliability.cluster_fault import SIZES, leader_kill
from reliability.rabbit_cluster import RabbitCluster

from .services import IN_CI


@pytest.fixture(scope='session')
def cluster() -> Iterator[RabbitCluster]:
    if not RabbitCluster.available():
        if IN_CI:
            pytest.fail('CI=true: rabbitmq-server is required for the cluster tests')
        pytest.skip('rabbitmq-server is not installed')
    made = RabbitCluster().start()
    try:
        yield made
    finally:
        made.close()



async def run(cluster: RabbitCluster, closing: list[Any], uid: str, size: str) -> dict[str, Any]:
    total, kills, pause = SIZES[size]
    figures = await leader_kill(cluster, uid=uid, total=total, kills=kills, pause=pause, closing=closing)
    assert figures['lost'] == 0 and figures['failed'] == 0, figures
    assert figures['confirmed'] == figures['sent'] >= total
    assert len(figures['kills']) == kills
    return figures


@pytest.mark.timeout(240)
async def test_kill_the_quorum_leader_while_traffic_flows_nothing_lost(cluster, closing, uid):
    figures = await run(cluster, closing, uid, 'smoke')
    # Both were connected to the killed node and went on through another one, by themselves.
    assert figures['consumer_connects'] >= 2 and figures['producer_connects'] >= 2


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_kill_each_leader_in_turn_at_full_size(cluster, closing, uid):
    await run(cluster, closing, uid, 'full')
