from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from microagent import Catalog, ConfigurationError, load_queues, load_signals, load_stuff

DECL = {
    'signals': [{'name': 'user_created', 'providing_args': ['user_id']},
                {'name': 'typed', 'providing_args': {'n': 'number'}}],
    'queues': [{'name': 'mailer'}, {'name': 'pusher'}, {'name': 'ios', 'exchange': 'push', 'topics': ['p.*']}],
}


def write(tmp_path: Path, data: object, name: str = 'decl.json') -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_load_from_file_url_and_path(tmp_path, catalog):
    path = write(tmp_path, DECL)
    signals = load_signals(f'file://{path}', catalog=catalog)
    queues = load_queues(path, catalog=catalog)
    assert signals.user_created.providing_args == ('user_id',)
    assert queues.mailer.name == 'mailer'
    assert queues.ios.topics == ('p.*',)
    assert set(catalog.queues) == {'mailer', 'pusher', 'ios'}
    both = load_stuff(f'file://{path}', catalog=catalog)
    assert both.signals.typed.name == 'typed'
    assert both.queues._fields == ('mailer', 'pusher', 'ios')


def test_loads_merge_and_conflict(tmp_path, catalog):
    load_queues(write(tmp_path, {'queues': [{'name': 'a'}]}, 'one.json'), catalog=catalog)
    load_queues(write(tmp_path, {'queues': [{'name': 'a'}, {'name': 'b'}]}, 'two.json'), catalog=catalog)
    assert set(catalog.queues) == {'a', 'b'}
    bad = write(tmp_path, {'queues': [{'name': 'a', 'exchange': 'x'}]}, 'three.json')
    with pytest.raises(ConfigurationError, match=r"three.json: queues\[0\]: queue 'a' redeclared .* exchange"):
        load_queues(bad, catalog=catalog)


@pytest.mark.parametrize(('data', 'message'), [
    ('{"queues": [', 'broken JSON'),
    ('[]', 'top level must be an object'),
    ({'queue': []}, r"unknown keys \['queue'\]"),
    ({'queues': {}}, '"queues" must be a list'),
    ({'queues': ['mailer']}, r'queues\[0\]: must be an object'),
    ({'queues': [{'name': 'a', 'durable': True}]}, r"queues\[0\]: unknown keys \['durable'\]"),
    ({'queues': [{'exchange': 'a'}]}, r'queues\[0\]: "name" is required'),
    ({'queues': [{'name': 'Bad'}]}, 'must match'),
    ({'signals': [{'name': 's', 'providing_args': 'x'}]}, 'providing_args must be'),
    ({'signals': [{'name': 's', 'providing_args': {'a': 'float'}}]}, "unknown type 'float'"),
    ({'jsonlib': 3}, '"jsonlib" must be a string'),
])
def test_bad_documents_name_source_and_problem(tmp_path, catalog, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigurationError, match=message) as info:
        load_stuff(f'file://{path}', catalog=catalog)
    assert 'decl.json' in str(info.value)


def test_missing_file_and_bad_scheme(tmp_path, catalog):
    with pytest.raises(ConfigurationError, match='cannot read'):
        load_queues(f'file://{tmp_path}/nope.json', catalog=catalog)
    with pytest.raises(ConfigurationError, match="unsupported scheme 'ftp'"):
        load_queues('ftp://example.com/q.json', catalog=catalog)


def test_jsonlib_key_selects_codec(tmp_path, catalog):
    queues = load_queues(write(tmp_path, {'jsonlib': 'orjson', 'queues': [{'name': 'q'}]}), catalog=catalog)
    assert queues.q.jsonlib == 'orjson'
    assert queues.q.serialize({'a': 1}) == '{"a":1}'


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def test_load_over_http_warns(http_base, catalog, caplog):
    _Handler.routes['/q.json'] = json.dumps(DECL).encode()
    with caplog.at_level(logging.WARNING):
        queues = load_queues(f'{http_base}/q.json', catalog=catalog)
    assert queues.pusher.name == 'pusher'
    assert 'plain http' in caplog.text


def test_http_can_be_forbidden(http_base, catalog, monkeypatch):
    monkeypatch.setenv('MICROAGENT_FORBID_HTTP', '1')
    with pytest.raises(ConfigurationError, match='forbidden'):
        load_queues(f'{http_base}/q.json', catalog=catalog)


def test_http_errors_and_size_cap(http_base, catalog, monkeypatch):
    with pytest.raises(ConfigurationError, match='cannot fetch'):
        load_queues(f'{http_base}/missing.json', catalog=catalog)
    _Handler.routes['/big.json'] = b' ' * 200
    import microagent.loader as loader
    monkeypatch.setattr(loader, 'MAX_SIZE', 100)
    with pytest.raises(ConfigurationError, match='larger than 100 bytes'):
        load_queues(f'{http_base}/big.json', catalog=catalog)


def test_https_is_verified(catalog):
    # A plain HTTP server answering a TLS handshake fails verification/handshake: no silent fallback.
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigurationError, match='cannot fetch'):
            load_queues(f'https://127.0.0.1:{server.server_address[1]}/q.json', catalog=catalog)
    finally:
        server.shutdown()
        server.server_close()


def test_password_in_url_is_masked(catalog):
    with pytest.raises(ConfigurationError) as info:
        load_queues('https://user:canary-pw-123@127.0.0.1:1/q.json', catalog=catalog)
    assert 'canary-pw-123' not in str(info.value)


def test_fresh_catalog_default_not_touched(tmp_path):
    catalog = Catalog()
    load_queues(write(tmp_path, {'queues': [{'name': 'only_here_q'}]}), catalog=catalog)
    from microagent import DEFAULT_CATALOG
    assert 'only_here_q' not in DEFAULT_CATALOG.queues
