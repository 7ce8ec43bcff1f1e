from __future__ import annotations

import pytest

from microagent import (
    Catalog,
    ConfigurationError,
    MicroAgentError,
    Queue,
    QueueNotFound,
    SerializingError,
    Signal,
    SignalArgumentsError,
    SignalNotFound,
)
from microagent.routing import topic_matches


@pytest.mark.parametrize('name', ['Mailer', '1abc', 'a-b', '', 'a b', 'é', None, 3])
def test_bad_names_are_value_errors(name, catalog):
    with pytest.raises(ValueError, match='must match'):
        Queue(name, catalog=catalog)
    with pytest.raises(ConfigurationError):
        Signal(name, [], catalog=catalog)


def test_queue_registers_and_get(uid):
    queue = Queue(f'q_{uid}')
    assert Queue.get(f'q_{uid}') is queue
    assert f'q_{uid}' in Queue.get_all()
    with pytest.raises(QueueNotFound):
        Queue.get('nope_' + uid)


def test_identical_redeclaration_is_fine_conflict_names_field(catalog):
    first = Queue('mailer', catalog=catalog)
    assert Queue('mailer', catalog=catalog) == first
    with pytest.raises(ConfigurationError, match="queue 'mailer' redeclared with a different exchange"):
        Queue('mailer', exchange='ex', catalog=catalog)
    Signal('user_created', ['user_id'], catalog=catalog)
    with pytest.raises(ConfigurationError, match='providing_args'):
        Signal('user_created', ['id'], catalog=catalog)


def test_queue_and_exchange_cannot_share_a_name(catalog):
    Queue('mailer', catalog=catalog)
    with pytest.raises(ConfigurationError, match='both a queue and an exchange'):
        Queue('other', exchange='mailer', catalog=catalog)
    Queue('a', exchange='ex', catalog=catalog)
    with pytest.raises(ConfigurationError, match='both a queue and an exchange'):
        Queue('ex', catalog=catalog)


def test_topics_need_exchange_and_valid_patterns(catalog):
    with pytest.raises(ConfigurationError, match='topics need an exchange'):
        Queue('q', topics=['a.b'], catalog=catalog)
    with pytest.raises(ConfigurationError, match='bad topic pattern'):
        Queue('q', exchange='e', topics=['a..b'], catalog=catalog)
    with pytest.raises(ConfigurationError, match='list of patterns'):
        Queue('q', exchange='e', topics='a.b', catalog=catalog)


@pytest.mark.parametrize(('pattern', 'topic', 'expected'), [
    ('a.b', 'a.b', True), ('a.*', 'a.b', True), ('a.*', 'a', False), ('a.*', 'a.b.c', False),
    ('a.#', 'a', True), ('a.#', 'a.b.c', True), ('#', '', True), ('#.c', 'a.b.c', True),
    ('*.b.#', 'x.b', True), ('*.b.#', 'b', False), ('a.#.c', 'a.c', True), ('a.#.c', 'a.x.y.c', True),
])
def test_topic_matching(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


def test_route_uses_patterns(catalog):
    ios = Queue('ios', exchange='push', topics=['push.ios'], catalog=catalog)
    every = Queue('every', exchange='push', catalog=catalog)
    assert catalog.route('push', 'push.ios') == (ios, every)
    assert catalog.route('push', 'push.android') == (every,)
    assert catalog.route('push') == (every,)
    with pytest.raises(QueueNotFound):
        catalog.route('nope')


def test_serialize_errors(catalog):
    queue = Queue('q', catalog=catalog)
    assert queue.deserialize(queue.serialize({'a': [1, 'x', None]})) == {'a': [1, 'x', None]}
    for bad in ({'a': object()}, [1], 'x'):
        with pytest.raises(SerializingError):
            queue.serialize(bad)
    for raw in ('{nope', '[1]', b'\xff', '1'):
        with pytest.raises(SerializingError):
            queue.deserialize(raw)
    with pytest.raises(SerializingError):
        queue.deserialize('[' * 100_000 + ']' * 100_000)
    assert issubclass(SerializingError, MicroAgentError)


def test_orjson_codec(catalog):
    queue = Queue('q', jsonlib='orjson', catalog=catalog)
    assert queue.serialize({'a': 1}) == '{"a":1}'
    assert queue.deserialize(b'{"a":1}') == {'a': 1}
    with pytest.raises(ConfigurationError, match='not installed'):
        Queue('q2', jsonlib='no_such_json_lib', catalog=catalog)


def test_typed_providing_args(catalog):
    signal = Signal('s', {'n': 'number', 'i': 'integer', 'b': 'boolean', 'o': ['object', 'null'],
                          'l': 'array', 't': 'string', 'x': 'any'}, catalog=catalog)
    good = {'n': 1.5, 'i': 2, 'b': False, 'o': None, 'l': [1], 't': 's', 'x': {'y': 1}}
    signal.check(good)
    assert signal.providing_args == ('n', 'i', 'b', 'o', 'l', 't', 'x')
    for key, value in [('n', True), ('i', 1.5), ('b', 0), ('o', []), ('l', {}), ('t', 1)]:
        with pytest.raises(SignalArgumentsError, match=f"'{key}' must be"):
            signal.check({**good, key: value})
    with pytest.raises(SignalArgumentsError, match=r"missing \['x'\]"):
        signal.check({k: v for k, v in good.items() if k != 'x'})
    with pytest.raises(SignalArgumentsError, match=r"unknown \['z'\]"):
        signal.check({**good, 'z': 1})
    with pytest.raises(ConfigurationError, match="unknown type 'float'"):
        Signal('s2', {'a': 'float'}, catalog=catalog)
    assert issubclass(SignalArgumentsError, TypeError)


def test_not_found_are_attribute_errors():
    assert issubclass(QueueNotFound, AttributeError)
    assert issubclass(SignalNotFound, AttributeError)
    assert issubclass(QueueNotFound, MicroAgentError)


def test_catalogs_are_independent():
    one, two = Catalog(), Catalog()
    Queue('same', catalog=one)
    Queue('same', exchange='x', catalog=two)
    assert one.queue('same') != two.queue('same')
