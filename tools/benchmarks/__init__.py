"""Benchmarks for tools/benchmark.py.

Op benchmarks: one module per op, ``tools/benchmarks/<op>.py``, exposing ``BENCHMARK`` (a
:class:`benchmarks.harness.OpBenchmark`: input maker, implementations, shape presets, baseline). To add one, write the
module and add a line to ``OP_BENCHMARKS``; ``benchmark.py --op <name>`` then measures it, writes JSON + Markdown + PNG,
and ``--list`` shows it. ``models.py`` measures whole models (``--models``).
"""

from __future__ import annotations

import importlib

# op name -> module (relative to this package) that defines BENCHMARK
OP_BENCHMARKS = {
    "agent": ".agent",
    "bra": ".bra",
    "flow": ".flow",
    "slab": ".slab",
}


def load_op_benchmark(name: str):
    if name not in OP_BENCHMARKS:
        raise SystemExit(f"unknown op benchmark {name!r}; registered: {', '.join(sorted(OP_BENCHMARKS))}")
    return importlib.import_module(OP_BENCHMARKS[name], __name__).BENCHMARK
