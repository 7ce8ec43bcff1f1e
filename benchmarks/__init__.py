"""The benchmark suite: each backend against its raw client library, side by side, in one run.

Run every scenario on every available backend, three repetitions, and print
JSON lines and a markdown table (see ``benchmarks/README.md``)::

    .venv/bin/python -m benchmarks --size full --repeat 3 --out docs/performance.md

Each scenario x repetition x side runs in a process of its own
(``python -m benchmarks.run_one``); the parent only orchestrates and reports.
"""
