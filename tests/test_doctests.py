"""Every ``>>>`` example in the package's docstrings runs here, on the memory backend, without services.

Examples may ``await`` at the top level: each docstring gets an event loop of its own, and an
example that awaits runs in it (as in ``python -m asyncio``). An example that needs a server or a process of
its own is marked ``# doctest: +SKIP`` and says why in a comment before the directive
(``>>> await broker.send(...)  # needs RabbitMQ  # doctest: +SKIP``) or in its docstring (``Not run:
...``); :func:`test_every_skip_says_why` holds that.
"""
from __future__ import annotations

import ast
import asyncio
import contextvars
import doctest
import importlib
import inspect
import pathlib
import re
import types
from collections.abc import Iterator
from typing import Any

import pytest

from microagent import DEFAULT_CATALOG

ROOT = pathlib.Path(__file__).resolve().parent.parent / 'microagent'
SKIP = re.compile(r'#\s*doctest:.*\+SKIP')
REASON = re.compile(r'#[^#]*\S[^#]*#\s*doctest:.*\+SKIP')  # a comment before the directive
DOC_REASON = 'Not run:'


def _module_names() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob('*.py')):
        parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        if '>>>' in path.read_text():
            names.append('.'.join(parts))
    return names


class _AwaitingRunner(doctest.DocTestRunner):
    """A runner whose examples may await: doctest compiles them, this runs the coroutine they become."""

    loop: asyncio.AbstractEventLoop
    context: contextvars.Context

    def run(self, test: doctest.DocTest, *args: Any, **kwargs: Any) -> doctest.TestResults:
        self.loop = asyncio.new_event_loop()
        self.context = contextvars.copy_context()
        kwargs['compileflags'] = kwargs.get('compileflags') or ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        # doctest runs each example with exec(code, globs); its module-level name shadows the builtin.
        doctest.exec = self._exec  # type: ignore[attr-defined]
        try:
            return super().run(test, *args, **kwargs)
        finally:
            del doctest.exec  # type: ignore[attr-defined]
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def _exec(self, code: types.CodeType, globs: dict[str, Any]) -> None:
        # Every example of a docstring in one context: a context variable one example sets, the next
        # one sees. An example that awaits runs in the loop; one that does not, outside it (so it may
        # call asyncio.run, as a reader would).
        if code.co_flags & inspect.CO_COROUTINE:
            coro = types.FunctionType(code, globs)()
            self.loop.run_until_complete(self.loop.create_task(coro, context=self.context))
        else:
            self.context.run(exec, code, globs)


def run_examples(module: types.ModuleType) -> doctest.TestResults:
    """Run every docstring example of *module* (top-level await allowed); the counts."""
    runner = _AwaitingRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _tests(module):
        runner.run(test)
    return runner.summarize(verbose=False)


def _tests(module: types.ModuleType) -> Iterator[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    yield from finder.find(module, module.__name__)


# What examples may declare in the default catalog: it outlives them, and a name another test (or
# examples/signals.json) declares differently would make that test fail with DoubleLoadError later on.
DEFAULT_CATALOG_NAMES = {'user_signed_up', 'ping_missconfig'}


@pytest.mark.parametrize('name', _module_names())
def test_docstring_examples_run(name: str) -> None:
    before = set(DEFAULT_CATALOG.signals) | set(DEFAULT_CATALOG.queues)
    result = run_examples(importlib.import_module(name))
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples failed in {name}'
    added = (set(DEFAULT_CATALOG.signals) | set(DEFAULT_CATALOG.queues)) - before - DEFAULT_CATALOG_NAMES
    assert not added, f'examples of {name} declared {sorted(added)} in DEFAULT_CATALOG: give them a Catalog()'


def test_every_skip_says_why() -> None:
    silent = []
    for name in _module_names():
        for test in _tests(importlib.import_module(name)):
            docstring = test.docstring or ''
            for example in test.examples:
                line = example.source.rstrip('\n').splitlines()[-1] if example.source.strip() else ''
                if SKIP.search(example.source) and not REASON.search(line) and DOC_REASON not in docstring:
                    silent.append(f'{test.name} (line {example.lineno}): {line.strip()}')
    assert silent == []
