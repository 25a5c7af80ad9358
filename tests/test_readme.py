"""The README's Python snippets are run, in order, in one namespace: examples that users copy must work.

A block preceded by an ``<!-- not run: REASON -->`` line is skipped by design (e.g. it needs COCO on disk); the reason
is in the README itself.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- not run: [^>]*-->\s*)?```python\n(.*?)```", re.S)


def readme_snippets() -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(README.read_text()) if m.group(1) is None]


def test_readme_has_python_snippets():
    assert len(readme_snippets()) >= 2


def test_readme_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace: dict = {"__name__": "readme"}
    for i, code in enumerate(readme_snippets()):
        try:
            exec(compile(code, f"README.md snippet {i}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"README snippet {i} failed: {type(err).__name__}: {err}\n---\n{code}") from err
