"""docs/exactly-once.md: its worked example runs, and the code shown in the document is the example's."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .effects_support import DSN, drop
from .services import require_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_document_shows_the_example_as_it_is() -> None:
    doc = (ROOT / 'docs' / 'exactly-once.md').read_text()
    example = (ROOT / 'examples' / 'exactly_once.py').read_text()
    blocks = re.findall(r'```python\n(.*?)```', doc, re.DOTALL)
    shown = next(b for b in blocks if 'class BillingAgent' in b)
    assert shown in example


async def test_the_worked_example_stores_and_bills_each_order_once(monkeypatch) -> None:
    pytest.importorskip('asyncpg')
    require_port('PostgreSQL', 5432)
    monkeypatch.setenv('MICROAGENT_DB_DSN', DSN)
    from examples import exactly_once
    from microagent.effects import Tables

    try:
        assert await exactly_once.main() == {'orders': 5, 'invoices': 5, 'distinct orders': 5}
    finally:
        import asyncpg
        connection = await asyncpg.connect(DSN)
        await connection.execute('DROP TABLE IF EXISTS example_orders, example_invoices')
        await connection.close()
        await drop(Tables('example_'))
