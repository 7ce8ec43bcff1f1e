"""The ``json`` codec reads and writes what the stdlib does, orjson or not (orjson is only its speed)."""
from __future__ import annotations

import enum
import json
import random
import uuid

import pytest

from microagent._jsonlib import _stdlib_dumps, get_codec
from microagent.exceptions import SerializingError

pytest.importorskip('orjson')

CODEC = get_codec('json')

TEXTS = [
    b'{"a":1,"a":2}', b'123456789012345678901234567890', b'-9223372036854775809', b'18446744073709551615',
    b'{"a":[{"b":[123456789012345678901234567890]}]}', b'[-1e19, 9.3e18, 1e300]', b'1e400', b'NaN',
    b'[0.1, 1e-7, 5e-324, -0.0]', b'"\\ud800"', b'"\\u2028"', b'\xef\xbb\xbf{}', b'{"a":"\\u0000"}',
    '{"a":"\udc80"}', '{"x": 1.5, "y": [true, null]}', bytearray(b'{"k":"v"}'), b'\x00{\x00}',
]


@pytest.mark.parametrize('text', TEXTS, ids=range(len(TEXTS)))
def test_reads_as_the_stdlib(text):
    assert ascii(CODEC.loads(text)) == ascii(json.loads(text))


@pytest.mark.parametrize('text', [b'{"a":"\xff"}', '\ufeff{}', b'[1,]', b'{'])
def test_refuses_what_the_stdlib_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(SerializingError):
        CODEC.loads(text)


class Colour(enum.Enum):
    RED = 'red'


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize('value', [
    {'f': float('nan')}, {'f': float('inf')}, {1: 'int key'}, {'n': 2 ** 70}, {'s': '\udc80'},
    {'e': Level.HIGH}, {'t': (1, [2, {'x': None}])}, {'deep': [[[[[]]]]]},
], ids=range(8))
def test_writes_as_the_stdlib(value):
    assert CODEC.dumps(value) == _stdlib_dumps(value)


@pytest.mark.parametrize('value', [{'u': uuid.uuid4()}, {'c': Colour.RED}, {'b': b'bytes'}], ids=range(3))
def test_refuses_to_write_what_the_stdlib_refuses(value):
    with pytest.raises(TypeError):
        _stdlib_dumps(value)
    with pytest.raises(SerializingError):
        CODEC.dumps(value)


def test_random_plain_data_is_written_and_read_as_the_stdlib():
    rnd = random.Random(7)
    chars = [chr(i) for i in range(0x800)] + ['\u2028', '\ufeff', '\U0001f600', '\x7f']
    for _ in range(2000):
        text = ''.join(rnd.choice(chars) for _ in range(rnd.randint(0, 10)))
        value = {'s': text, 'a': {text: [text, rnd.randint(-2 ** 63, 2 ** 64 - 1), True, None, {}, []]}}
        assert CODEC.dumps(value) == _stdlib_dumps(value)
        assert CODEC.loads(CODEC.dumps(value).encode()) == value
        floats = [rnd.random() * 10.0 ** rnd.randint(-300, 300), -0.0, 5e-324]
        assert json.loads(CODEC.dumps(floats)) == floats  # the same numbers, maybe spelt otherwise
