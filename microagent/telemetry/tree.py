"""Spans as indented trees, one per trace: read a ``file:PATH`` export after the fact.

    python -m microagent.telemetry.tree spans.jsonl

>>> spans = [{'trace_id': 't', 'span_id': 'a', 'parent_id': None, 'name': 'send placed', 'service': 'api',
...           'kind': 'PRODUCER', 'start': 0, 'end': 2_000_000, 'status': 'UNSET', 'attributes': {}, 'links': []},
...          {'trace_id': 't', 'span_id': 'b', 'parent_id': 'a', 'name': 'process placed', 'service': 'front',
...           'kind': 'CONSUMER', 'start': 1_000_000, 'end': 3_000_000, 'status': 'ERROR',
...           'attributes': {'microagent.attempt': 2}, 'links': []}]
>>> print(render(spans))
trace t
  send placed  [api] producer 2.0 ms
    process placed  [front] consumer 2.0 ms attempt 2 ERROR
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .sdk import read_spans

__all__ = ['main', 'render']


def _line(span: dict[str, Any], depth: int) -> str:
    millis = ((span.get('end') or 0) - (span.get('start') or 0)) / 1e6
    extra = ''
    attempt = span.get('attributes', {}).get('microagent.attempt')
    if attempt and attempt > 1:
        extra += f' attempt {attempt}'
    if span.get('status') == 'ERROR':
        extra += ' ERROR'
    for link in span.get('links', ()):
        why = link.get('attributes', {}).get('microagent.link', 'link')
        extra += f' ({why} -> {link["span_id"][:8]})'
    return f'{"  " * depth}{span["name"]}  [{span.get("service", "")}] {span["kind"].lower()} {millis:.1f} ms{extra}'


def render(spans: Sequence[dict[str, Any]]) -> str:
    """Every trace in *spans* (``span_record`` dicts) as an indented tree, children in start order."""
    ordered = sorted(spans, key=lambda s: s.get('start') or 0)
    ids = {s['span_id'] for s in ordered}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in ordered:
        # A parent that is not in the file (another exporter's) makes its child a root here.
        parent = span['parent_id'] if span['parent_id'] in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []
    traces: dict[str, list[dict[str, Any]]] = {}
    for root in children.get(None, []):
        traces.setdefault(root['trace_id'], []).append(root)
    for trace_id, roots in traces.items():
        lines.append(f'trace {trace_id}')
        stack = [(root, 1) for root in reversed(roots)]
        while stack:
            span, depth = stack.pop()
            lines.append(_line(span, depth))
            stack.extend((child, depth + 1) for child in reversed(children.get(span['span_id'], [])))
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m microagent.telemetry.tree FILE``: print the trees of a ``file:`` export."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write('usage: python -m microagent.telemetry.tree SPANS.jsonl\n')
        return 2
    sys.stdout.write(render(read_spans(args[0])) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
