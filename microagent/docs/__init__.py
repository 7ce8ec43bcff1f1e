"""See the system: the AsyncAPI 3.0 document, the topology picture and one HTML page, from a settings module.

What ``microagent docs SETTINGS --format asyncapi-json|asyncapi-yaml|html|svg|dot`` writes::

    from microagent.docs import render
    from microagent.launcher.settings import load_settings

    print(render(load_settings('examples.settings'), 'asyncapi-json'))

Needs ``pip install "microagent[docs]"`` for YAML and the picture, and the
Graphviz programs (``apt-get install graphviz``) for SVG and HTML.
"""
from ._asyncapi import asyncapi
from ._html import html_page
from ._model import Agent, Handler, Send, Server, System, describe
from ._render import FORMATS, render
from ._topology import topology_dot, topology_svg

__all__ = ['FORMATS', 'Agent', 'Handler', 'Send', 'Server', 'System', 'asyncapi', 'describe', 'html_page', 'render',
           'topology_dot', 'topology_svg']
