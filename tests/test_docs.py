"""``microagent docs``: the AsyncAPI 3.0 document (checked against the official schema), the picture, the page."""
from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from microagent import _info_table, _progress
from microagent.docs import _asyncapi, _html, _model, _render, _schemas, _sends, _topology, asyncapi, describe
from microagent.launcher.settings import load_settings

from .launcher_helpers import cli_env, run_cli
from .services import IN_CI

SCHEMA = json.loads((Path(__file__).parent / 'data' / 'asyncapi-3.0.0.json').read_text())


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(doc)


def need_dot() -> None:
    if shutil.which('dot') is None:
        if IN_CI:
            pytest.fail('Graphviz (dot) is missing (CI=true: scripts/setup installs it)')
        pytest.skip('Graphviz (dot) is not installed')


@pytest.fixture(scope='module')
def shop() -> dict[str, Any]:
    result = run_cli('docs', 'tests.docs_settings')
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_the_schema_catches_a_broken_document(shop: dict[str, Any]) -> None:
    validate(shop)
    broken = json.loads(json.dumps(shop))
    del broken['operations']['shop.take']['action']
    with pytest.raises(jsonschema.ValidationError, match="is not valid under any of the given schemas"):
        validate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate({**shop, 'servers': {'x': {'host': 'h'}}})  # no protocol
    with pytest.raises(jsonschema.ValidationError):
        validate({**shop, 'asyncapi': '2.6.0'})


def test_servers_come_from_the_dsns_without_credentials(shop: dict[str, Any]) -> None:
    assert shop['servers'] == {
        'bus-default': {'host': 'redis.internal:6380', 'protocol': 'redis', 'title': 'bus default',
                        'description': 'microagent.tools.redis.RedisSignalBus', 'pathname': '/3'},
        'broker-default': {'host': 'mq.internal:5672', 'protocol': 'amqp', 'title': 'broker default',
                           'description': 'microagent.tools.amqp.AMQPBroker', 'pathname': '/shop'},
    }
    assert 'hunter2' not in json.dumps(shop) and 'shop:' not in json.dumps(shop['servers'])


def test_channels_signals_queues_exchanges_and_rpc(shop: dict[str, Any]) -> None:
    channels = shop['channels']
    assert set(channels) == {'signal.order_placed', 'signal.rpc_stock', 'signal.rpc_stock.reply', 'queue.orders',
                             'queue.push_ios', 'queue.push_log', 'exchange.push'}
    assert channels['signal.order_placed']['address'] == 'SHOP:order_placed'  # the bus prefix
    assert channels['signal.rpc_stock.reply']['address'] is None  # the caller's own response channel
    assert channels['queue.push_ios']['x-microagent-topics'] == ['push.ios', 'push.all.#']
    assert channels['exchange.push']['x-microagent-routes'] == {'push_ios': ['push.ios', 'push.all.#'],
                                                              'push_log': ['#']}
    assert channels['queue.orders']['servers'] == [{'$ref': '#/servers/broker-default'}]


def test_message_schemas_from_typed_args_and_pydantic_dtos(shop: dict[str, Any]) -> None:
    schemas = shop['components']['schemas']
    args = schemas['signal.order_placed']['properties']['a']
    assert args['properties'] == {'order_id': {'type': 'integer'}, 'note': {'type': ['null', 'string']}}
    assert args['required'] == ['order_id', 'note'] and args['additionalProperties'] is False
    order = schemas['queue.orders']
    assert order['title'] == 'Order' and order['required'] == ['order_id', 'lines']
    assert order['properties']['lines']['items'] == {'$ref': '#/components/schemas/Line'}
    assert schemas['Line']['properties']['quantity']['type'] == 'integer'  # nested models hoisted
    assert schemas['signal.rpc_stock.reply']['properties']['r']['properties'] == {'Stock.count': {}}


def test_operations_per_agent(shop: dict[str, Any]) -> None:
    ops = shop['operations']
    assert {k: v['action'] for k, v in ops.items()} == {
        'shop.take': 'receive', 'shop.send.push': 'send', 'shop.send.order_placed': 'send',
        'shop.call.rpc_stock': 'send', 'stock.count': 'receive', 'stock.reserve': 'receive', 'stock.ios': 'receive',
        'stock.log_push': 'receive'}
    assert ops['stock.count']['reply']['channel'] == {'$ref': '#/channels/signal.rpc_stock.reply'}
    assert ops['shop.call.rpc_stock']['reply']['address'] == {'location': '$message.payload#/r'}
    assert 'reply' not in ops['stock.reserve']
    agents = shop['x-microagent-agents']
    assert agents['shop']['replicas'] == 2 and agents['shop']['schedules'][0]['singleton'] is True
    assert agents['stock']['schedules'][0]['cron'] == '0 6 * * mon-fri'


def test_examples_in_json_and_yaml_are_the_same_valid_document() -> None:
    as_json = run_cli('docs', 'examples/settings.py')
    as_yaml = run_cli('docs', 'examples.settings', '--format', 'asyncapi-yaml', '--api-version', '2.1.0')
    assert as_json.returncode == 0 and as_yaml.returncode == 0, (as_json.stderr, as_yaml.stderr)
    doc = json.loads(as_json.stdout)
    validate(doc)
    from_yaml = yaml.safe_load(as_yaml.stdout)
    assert from_yaml['info']['version'] == '2.1.0'
    assert {**from_yaml, 'info': doc['info']} == doc
    # Dataclass DTOs without pydantic: fields and their JSON types.
    assert doc['components']['schemas']['queue.mailer']['properties'] == {
        'user_id': {'type': 'integer'}, 'address': {'type': 'string'}, 'template': {'type': 'string'}}
    assert doc['operations']['users.call.rpc_comments_count']['reply']['channel']['$ref'].endswith('.reply')


def test_topology_svg_and_the_self_contained_page(tmp_path: Path) -> None:
    need_dot()
    svg = run_cli('docs', 'tests.docs_settings', '--format', 'svg')
    assert svg.returncode == 0, svg.stderr
    assert svg.stdout.lstrip().startswith('<?xml') and '<svg' in svg.stdout
    for label in ('shop x2', 'Stock', 'orders', 'push_ios', 'order_placed', 'rpc_stock', 'push.all.#',
                  'every 30s', 'cron 0 6 * * mon&#45;fri Europe/Paris', 'call', 'reply'):
        assert label in svg.stdout, label
    page = tmp_path / 'system.html'
    result = run_cli('docs', 'tests.docs_settings', '--format', 'html', '-o', str(page))
    assert result.returncode == 0 and result.stdout == '', result.stderr
    text = page.read_text()
    assert text.startswith('<!DOCTYPE html>') and text.count('<svg') == 1 and '<?xml' not in text
    for external in ('src=', '<link', '<script', 'url(', '@import'):
        assert external not in text, external
    assert 'hunter2' not in text and 'stock.count' in text and 'How many items of a SKU are left.' in text


def test_svg_without_graphviz_says_what_to_install(tmp_path: Path) -> None:
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    result = run_cli('docs', 'examples.settings', '--format', 'svg', env=cli_env(PATH=str(bindir)))
    assert result.returncode == 2
    assert 'apt-get install graphviz' in result.stderr and result.stderr.count('\n') == 1


def test_dot_source_needs_no_graphviz_programs() -> None:
    result = run_cli('docs', 'examples.settings', '--format', 'dot')
    assert result.returncode == 0 and result.stdout.startswith('digraph microagent {')
    assert '"agent.emails"' in result.stdout and 'cron 0 9 * * mon Europe/Berlin' in result.stdout


def test_describe_in_process() -> None:
    system = describe(load_settings('tests.docs_settings'))
    assert [a.key for a in system.agents] == ['shop', 'stock']
    assert [(s.kind, s.target, s.rpc) for s in system.agents[0].sends] == [
        ('exchange', 'push', False), ('signal', 'order_placed', False), ('signal', 'rpc_stock', True)]
    validate(asyncapi(system))


@pytest.mark.parametrize('module', [_asyncapi, _html, _model, _render, _schemas, _sends, _topology, _info_table,
                                    _progress])
def test_docstring_examples_run(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
