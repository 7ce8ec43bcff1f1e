"""The reliability and security suite: real agent processes, real brokers, faults, and a ledger that counts.

One command runs it and writes the report::

    .venv/bin/python -m reliability --backends redis,amqp,kafka --size smoke --out docs/reliability.md

Modules: :mod:`.ledger` (records and counting), :mod:`.proxy` (TCP faults),
:mod:`.servers` (brokers of our own), :mod:`.nats_cluster` (a 3-node
JetStream cluster), :mod:`.worker` and
:mod:`.group_settings` (the agent group run by ``marun``), :mod:`.singleton`
and :mod:`.singleton_settings` (the singleton job of fault 7), :mod:`.group`
(the launcher process), :mod:`.drivers` (load plus faults per backend),
:mod:`.security` (the security checks), :mod:`.report` (markdown and JSON),
:mod:`.rabbit_cluster` and :mod:`.cluster_fault` (a private RabbitMQ cluster, and
its fault: the quorum queue's leader killed and restarted under load).
"""
