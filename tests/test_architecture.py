"""The rules of docs/ARCHITECTURE.md, checked on the source: imports point down and form no cycle, and exactly one
module reads or writes weight files.

The project's modules are parsed (``ast``), not imported; every import counts, at module level or inside a function,
except those under ``if TYPE_CHECKING:`` (never executed: annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The one import root: each repository folder is built into attnzoo under this name (setup.py's PACKAGE_DIRS).
FOLDER_PACKAGES = {"zoo": "attnzoo", "backbones": "attnzoo.backbones", "heads": "attnzoo.heads",
                   "kernels": "attnzoo.kernels"}
# The layers of docs/ARCHITECTURE.md, by package; a module belongs to the longest package its name starts with.
LAYERS = ("attnzoo.kernels", "attnzoo.backbones", "attnzoo.heads", "attnzoo")
SCANNED = (*FOLDER_PACKAGES, "tools")  # tools/ imports the packages; its scripts are checked for the weights rule too
WEIGHTS_READER = "attnzoo.weights.files"  # the one module that opens weight files
# Calls that read or write weight files (unpickling, safetensors, torch hub's unpickling download).
WEIGHT_FILE_CALLS = {"torch.load", "torch.save", "safetensors.torch.load_file", "safetensors.torch.save_file",
                     "safetensors.torch.load", "safetensors.safe_open", "safetensors.torch.safe_open",
                     "torch.hub.load_state_dict_from_url", "torch.utils.model_zoo.load_url"}
# Scripts that hand weights to the official code in a child process, which must not import the zoo (its memory is
# what they measure): the only other places allowed to read or write a weight file (tests make fixtures freely).
OFFICIAL_CODE_DRIVERS = {"tools.benchmarks.biformer_cpu_train"}
# What each layer may import of the others (docs/ARCHITECTURE.md: attnzoo -> heads -> backbones -> kernels).
ALLOWED = {
    "attnzoo.kernels": set(),
    "attnzoo.backbones": {"attnzoo.kernels"},
    "attnzoo.heads": {"attnzoo.backbones", "attnzoo.kernels"},
    "attnzoo": {"attnzoo.heads", "attnzoo.backbones", "attnzoo.kernels"},
}


def _module_name(path: Path) -> str:
    """The import name of a source file: zoo/x.py is attnzoo.x, backbones/x.py attnzoo.backbones.x, tools/x.py tools.x."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    parts[:1] = FOLDER_PACKAGES.get(parts[0], parts[0]).split(".")
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer a module belongs to, or None for modules outside attnzoo (tools)."""
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if ".mim" in path.parts:
                continue
            found[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


SOURCES = _sources()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _imports(module: str) -> set[str]:
    """The project modules ``module`` imports (``from pkg import name`` counts as pkg.name when that is a module)."""
    path, tree = SOURCES[module]
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _dotted(block.test).endswith(
        "TYPE_CHECKING") for stmt in block.body for n in ast.walk(stmt)}
    targets = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in SOURCES:  # `import a.b.c` of a non-module attribute: its module
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


GRAPH = {module: _imports(module) for module in SOURCES if layer_of(module)}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_is_read():
    assert len(GRAPH) > 80
    assert "attnzoo.weights.files" in GRAPH["attnzoo.weights.loading"]
    assert "attnzoo.models.builder" in GRAPH["attnzoo.models"]
    assert "attnzoo.kernels.bra" in GRAPH["attnzoo.backbones.biformer"]


def test_no_import_cycle_anywhere():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_down(layer):
    wrong = sorted(f"{module} -> {target}" for module, targets in GRAPH.items() if layer_of(module) == layer
                   for target in targets
                   if layer_of(target) not in (layer, *ALLOWED[layer]))
    assert wrong == []


def test_the_layers_are_told_apart():
    assert [layer_of(m) for m in ("attnzoo.kernels.bra", "attnzoo.backbones", "attnzoo.heads.xray.metric",
                                  "attnzoo.weights.files", "attnzoo", "tools.train")] == [
        "attnzoo.kernels", "attnzoo.backbones", "attnzoo.heads", "attnzoo", "attnzoo", None]


OLD_ROOTS = set(FOLDER_PACKAGES)  # the four top-level names the wheel no longer installs


def _old_root_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name.split(".")[0] in OLD_ROOTS]
    return found


def test_nothing_imports_the_old_top_level_names():
    """`import zoo` / `from kernels.bra import ...` would need the clone's root on sys.path, where its kernels/ shadows
    Hugging Face's `kernels`: every import goes through attnzoo (the folder guards refuse the old names at run time)."""
    files = [p for top in (*SCANNED, "tests") for p in sorted((ROOT / top).rglob("*.py")) if ".mim" not in p.parts]
    assert len(files) > 200
    assert [hit for path in files for hit in _old_root_imports(path)] == []


def _weight_file_calls(module: str) -> list[str]:
    path, tree = SOURCES[module]
    aliases = {}  # local name -> dotted origin, from `from x import y [as z]` and `import x as y`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            head, _, rest = name.partition(".")
            name = ".".join(filter(None, [aliases.get(head, head), rest]))
            if name in WEIGHT_FILE_CALLS:
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return calls


def test_only_the_weights_room_reads_or_writes_weight_files():
    offenders = [call for module in SOURCES if module != WEIGHTS_READER and module not in OFFICIAL_CODE_DRIVERS
                 for call in _weight_file_calls(module)]
    assert offenders == []
    assert len(_weight_file_calls(WEIGHTS_READER)) >= 4  # the rule finds the calls where they are


def test_the_weight_call_finder_sees_aliases(tmp_path, monkeypatch):
    source = "import torch as t\nfrom safetensors.torch import load_file as lf\nt.load('x')\nlf('y')\n"
    path = ROOT / "zoo" / "_probe_for_test.py"
    monkeypatch.setitem(SOURCES, "attnzoo._probe_for_test", (path, ast.parse(source)))
    assert [c.split()[-1] for c in _weight_file_calls("attnzoo._probe_for_test")] == [
        "torch.load", "safetensors.torch.load_file"]
