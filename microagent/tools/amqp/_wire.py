"""The few AMQP 0-9-1 frames of the hot path, read and written without building pamqp objects.

A method frame's payload starts with its class and method ids; the lane's
sinks look at :func:`method_id` and read the fixed layouts of ``basic.ack``,
``basic.nack`` and ``basic.deliver`` here (about a tenth of pamqp's cost per
frame, measured: a confirmed message crosses four frames in each direction).
Anything else, content headers included (their property tables), is pamqp's.

>>> import pamqp.frame
>>> from pamqp.commands import Basic
>>> raw = pamqp.frame.marshal(Basic.Deliver('ctag', 7, True, 'ex', 'key'), 1)
>>> payload = raw[7:-1]
>>> method_id(payload) == DELIVER
True
>>> deliver(payload)
('ctag', 7, True, 'ex', 'key')
>>> ack(payload_of(ack_frame(1, 9)))
(9, False)
"""
from __future__ import annotations

import struct
from typing import Any

import pamqp.frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

__all__ = ['ACK', 'DELIVER', 'NACK', 'RETURN', 'Deliver', 'ack', 'ack_frame', 'deliver', 'header', 'method',
           'method_id', 'nack_frame', 'payload_of']

METHOD, HEADER, BODY = 1, 2, 3
ACK = (60 << 16) | 80
NACK = (60 << 16) | 120
DELIVER = (60 << 16) | 60
RETURN = (60 << 16) | 50

# consumer tag, delivery tag, redelivered, exchange, routing key
Deliver = tuple[str, int, bool, str, str]

_IDS = struct.Struct('>I')
_TAG_BITS = struct.Struct('>QB')
_ACK = struct.Struct('>BHIHHQBB')


def method_id(payload: bytes) -> int:
    """``class_id << 16 | method_id`` of a method frame's payload."""
    return int(_IDS.unpack_from(payload)[0])


def ack(payload: bytes) -> tuple[int, bool]:
    """Delivery tag and ``multiple`` of a ``basic.ack`` or ``basic.nack`` payload."""
    tag, bits = _TAG_BITS.unpack_from(payload, 4)
    return int(tag), bool(bits & 1)


def deliver(payload: bytes) -> Deliver:
    """Consumer tag, delivery tag, redelivered, exchange and routing key of a ``basic.deliver``."""
    end = 5 + payload[4]
    consumer_tag = payload[5:end].decode()
    tag, bits = _TAG_BITS.unpack_from(payload, end)
    pos = end + 9
    end = pos + 1 + payload[pos]
    exchange = payload[pos + 1:end].decode()
    routing_key = payload[end + 1:end + 1 + payload[end]].decode()
    return consumer_tag, int(tag), bool(bits & 1), exchange, routing_key


def header(payload: bytes) -> ContentHeader:
    """A content header payload, properties decoded (pamqp)."""
    content = ContentHeader()
    content.unmarshal(payload)
    return content


def method(payload: bytes) -> Any:
    """Any method frame payload as a pamqp object (for the rare ones, e.g. ``basic.return``)."""
    return pamqp.frame.unmarshal(struct.pack('>BHI', METHOD, 0, len(payload)) + payload + b'\xce')[2]


def ack_frame(number: int, tag: int) -> bytes:
    """The whole ``basic.ack`` frame (one message) for channel *number*."""
    return _ACK.pack(METHOD, number, 13, 60, 80, tag, 0, 0xCE)


def nack_frame(number: int, tag: int, requeue: bool) -> bytes:
    """The whole ``basic.nack`` frame (one message) for channel *number*."""
    return pamqp.frame.marshal(Basic.Nack(delivery_tag=tag, requeue=requeue), number)


def payload_of(frame: bytes) -> bytes:
    """The payload of one whole frame."""
    return frame[7:-1]
