"""From a loaded settings module to the text of one output format.

Not run: reads the example application (examples/; tests/test_docs.py runs it).
>>> render(load_settings('examples.settings'), 'asyncapi-json')[:25]   # doctest: +SKIP
'{\\n  "asyncapi": "3.0.0",\\n'
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendNotInstalled, ConfigurationError
from ._asyncapi import asyncapi
from ._html import html_page
from ._model import describe
from ._topology import topology_dot, topology_svg

if TYPE_CHECKING:
    from ..launcher.settings import GroupSettings

__all__ = ['FORMATS', 'render']

FORMATS = ('asyncapi-json', 'asyncapi-yaml', 'html', 'svg', 'dot')


def _yaml(doc: dict[str, Any]) -> str:
    try:
        import yaml
    except ImportError as exc:
        raise BackendNotInstalled('YAML output needs PyYAML: pip install "microagent[docs]"') from exc
    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120))


def render(group: GroupSettings, fmt: str, *, version: str = '1.0.0') -> str:
    """The document of *group* in *fmt* (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ConfigurationError(f'unknown format {fmt!r}, expected one of {", ".join(FORMATS)}')
    system = describe(group)
    bus = next(iter(group.buses.values()), None)
    prefix = str(bus.kwargs.get('prefix', 'PUBSUB')) if bus is not None else 'PUBSUB'
    if fmt == 'svg':
        return topology_svg(system)
    if fmt == 'dot':
        return topology_dot(system)
    doc = asyncapi(system, version=version, prefix=prefix)
    if fmt == 'asyncapi-json':
        return json.dumps(doc, indent=2) + '\n'
    if fmt == 'asyncapi-yaml':
        return _yaml(doc)
    return html_page(system, doc, topology_svg(system))
