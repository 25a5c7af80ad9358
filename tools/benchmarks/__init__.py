"""Benchmarks for tools/benchmark.py.

Op benchmarks: one module per op, ``tools/benchmarks/<op>.py``, exposing ``BENCHMARK`` (a
:class:`benchmarks.harness.OpBenchmark`: input maker, implementations, shape presets, baseline). To add one, write the
module and add a line to ``OP_BENCHMARKS``; ``benchmark.py --op <name>`` then measures it, writes JSON + Markdown + PNG,
and ``--list`` shows it. ``models.py`` measures whole models (``--models``) through attnzoo.tasks.bench.

Every benchmark here measures with attnzoo.tasks.measure, the harness ``zoo bench`` uses too (docs/ARCHITECTURE.md,
"Measuring"). Scripts that measure a whole process (plugin_bra_memory.py, biformer_cpu_train.py) load it with
:func:`load_measure`, which does not import the zoo.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

# op name -> module (relative to this package) that defines BENCHMARK
OP_BENCHMARKS = {
    "agent": ".agent",
    "bra": ".bra",
    "compile": ".compile_ops",
    "flow": ".flow",
    "moh": ".moh_ops",
    "slab": ".slab",
}


def load_op_benchmark(name: str):
    if name not in OP_BENCHMARKS:
        raise SystemExit(f"unknown op benchmark {name!r}; registered: {', '.join(sorted(OP_BENCHMARKS))}")
    return importlib.import_module(OP_BENCHMARKS[name], __name__).BENCHMARK


def load_measure():
    """attnzoo.tasks.measure, loaded from its file when the zoo is not imported yet: the module imports only torch and the
    standard library, whereas ``import attnzoo`` would add timm and every family to a process whose memory is measured."""
    if "attnzoo.tasks.measure" in sys.modules:
        return sys.modules["attnzoo.tasks.measure"]
    name = "_zoo_tasks_measure"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "zoo" / "tasks" / "measure.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]
