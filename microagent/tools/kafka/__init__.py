"""Kafka queue broker on aiokafka: consumer groups, commits after processing, acks=all.

    broker = KafkaBroker('kafka://127.0.0.1:9092,127.0.0.2:9092', partitions=3)
    await broker.mailer.send({'to': 'a@b.c'})       # returns once the broker acknowledged it

Topology (topics are created the first time they are used):

* queue ``q`` -> topic ``q``; its consumers form the group ``q`` (or
  ``@consumer(q, group='name')``), so replicas share the partitions and each
  message is handled once per group. A new group starts at the earliest
  offset: nothing sent before the first consumer is lost.
* delayed retries -> ``q.retry`` (read by the same group, not-before header);
  dead letters -> ``q.dlq`` (``x-attempts`` and ``x-error`` headers).
* crashes -> ``<group>.attempts`` (compacted): before handlers start, a
  reader notes which offsets are running; a record that was running when its
  process died is handled alone next time, and after ``max_attempts`` such
  starts it goes to ``q.dlq`` unhandled: a message that kills its consumer
  cannot stop its partition for ever (``_attempts``).
* exchange ``ex`` -> topic ``ex``; every bound queue reads it with its own
  group (fan-out) and keeps the records whose ``topic`` header matches its
  patterns (topic routing). Direct sends to a bound queue still go to ``q``.

``partitions`` defaults to 1: one partition keeps the FIFO order every other
backend gives a queue; use ``partitions=N`` to spread a queue over N replicas
(order then holds per partition). Offsets are committed per partition, in
order, only up to the lowest message still in flight.

The producer is idempotent when the broker supports it (``idempotent=None``,
the default, falls back to plain ``acks='all'`` with a warning when the
broker refuses InitProducerId, as tansu does; ``True`` makes that an error).
SASL/SSL: ``kafka://user:password@host:9092`` (SASL PLAIN) or the explicit
``security_protocol``, ``sasl_mechanism``, ``sasl_plain_username``,
``sasl_plain_password``, ``ssl_context`` and any other aiokafka client option
in ``client_options``.
"""
from ._broker import KafkaBroker
from ._lease import KafkaLease

__all__ = ['KafkaBroker', 'KafkaLease']
