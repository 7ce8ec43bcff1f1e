"""Every example of docs/testing.md runs: each python block is executed and its test_* coroutines awaited."""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parent.parent / 'docs' / 'testing.md'
BLOCKS = re.findall(r'```python\n(.*?)```', DOC.read_text(), re.S)


def _tests() -> list[tuple[str, int, str]]:
    found = []
    for index, block in enumerate(BLOCKS):
        found += [(name, index, block) for name in re.findall(r'^async def (test_\w+)\(', block, re.M)]
    return found


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 5 and len(_tests()) == len(BLOCKS)


@pytest.mark.parametrize(('name', 'index', 'block'), _tests(), ids=[t[0] for t in _tests()])
async def test_doc_example(name: str, index: int, block: str) -> None:
    namespace: dict[str, Any] = {'__name__': f'docs_testing_{index}'}
    exec(compile(block, f'{DOC}:block{index}', 'exec'), namespace)
    test: Callable[[], Awaitable[None]] = namespace[name]
    await test()
