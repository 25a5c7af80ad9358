"""Make ``import attnzoo`` work from a clone that is not installed (a fresh clone, the GPU machine's copy of the tree).

The repository keeps four folders at its top (``zoo/``, ``backbones/``, ``heads/``, ``kernels/``); an install maps them
into one import package (setup.py's ``PACKAGE_DIRS``). :func:`make_attnzoo_importable` gives a process the same
mapping without an install: a finder placed last on ``sys.meta_path``, so an installed attnzoo (editable or a wheel)
always wins, and nothing is added to ``sys.path`` (the repository root on ``sys.path`` would make its ``kernels/``
shadow Hugging Face's ``kernels``, which transformers imports). It imports nothing of attnzoo itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# import package -> the repository folder it is built from (= setup.py's PACKAGE_DIRS; tests/test_packaging.py checks)
PACKAGE_DIRS = {"attnzoo": "zoo", "attnzoo.backbones": "backbones", "attnzoo.heads": "heads",
                "attnzoo.kernels": "kernels"}


class CloneFinder(importlib.abc.MetaPathFinder):
    """Finds the four mapped packages in a clone; their sub-modules are then found through each package's ``__path__``."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        folder = PACKAGE_DIRS.get(fullname)
        if folder is None:
            return None
        directory = self.root / folder
        return importlib.util.spec_from_file_location(fullname, directory / "__init__.py",
                                                      submodule_search_locations=[str(directory)])


def make_attnzoo_importable(root: Path = REPO_ROOT) -> bool:
    """Install the clone finder when no attnzoo is installed; True when it was installed by this call."""
    if importlib.util.find_spec("attnzoo") is not None:
        return False
    if not (root / "zoo" / "__init__.py").is_file():
        raise ImportError(f"attnzoo is not installed and {root} is not an attnzoo clone: pip install attnzoo "
                          "(or `pip install -e .` in a clone)")
    sys.meta_path.append(CloneFinder(root))
    return True


def main(argv: list[str]) -> None:
    """``python tools/_clone_import.py -m MODULE ARGS...`` runs a module of attnzoo from a clone that is not installed
    (``-m attnzoo.cli bench ...``); with no arguments it prints where attnzoo is imported from."""
    make_attnzoo_importable()
    if argv[:1] == ["-m"] and len(argv) > 1:
        import runpy

        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    import attnzoo

    print(Path(attnzoo.__file__).parent)


if __name__ == "__main__":
    main(sys.argv[1:])
