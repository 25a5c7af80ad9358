"""Files saved before the one import root keep loading: the old top-level names mapped onto ``attnzoo``.

Up to attnzoo 0.1 the distribution installed four top-level packages, ``zoo``, ``backbones``, ``heads`` and
``kernels``; since 0.2 it installs only ``attnzoo`` (``kernels`` is Hugging Face's, which transformers requires). Two
kinds of saved files name modules by their old paths:

- **OpenMMLab config text**: a config's ``custom_imports`` (``'zoo.openmmlab'``, ``'heads.xray'``,
  ``'heads.detection'``), in config files and in the ``meta['cfg']`` text every mmengine checkpoint carries.
  :func:`upgrade_custom_imports` and :func:`upgrade_config_text` rewrite exactly those entries; the zoo's mm entry
  points (``tools/train.py``, ``tools/test.py``, ``zoo xray detect``) and its mmengine checkpoint reader apply them.
- **Whole-object pickles**: Ultralytics ``.pt`` files pickle the layers' classes by module path
  (``zoo.integrations.ultralytics.BiLevelRoutingAttention2d`` holding ``backbones.layers.BiLevelRoutingAttention2d``).
  :func:`old_module_names` makes those paths resolve for the duration of one load, by putting the old names of
  attnzoo's modules into ``sys.modules`` and taking them out again; a top-level name another package already holds
  (Hugging Face's ``kernels``) is left to it.

The other formats record no module path (classification and forgery run folders hold model names and arguments;
the weight files hold tensors; ONNX files run without Python): tests/zoo/test_legacy_files.py loads one file of each
kind written by attnzoo 0.1.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

__all__ = ["OLD_ROOTS", "current_module_name", "old_module_names", "upgrade_config_text", "upgrade_custom_imports"]

# old top-level package -> its package under the one import root
OLD_ROOTS = {"zoo": "attnzoo", "backbones": "attnzoo.backbones", "heads": "attnzoo.heads",
             "kernels": "attnzoo.kernels"}
# attnzoo's module names, longest first, so a name maps to the deepest root it sits under
_CURRENT_ROOTS = sorted(((new, old) for old, new in OLD_ROOTS.items()), key=lambda item: -len(item[0]))


def current_module_name(name: str) -> str:
    """The module name today for a name saved by attnzoo 0.1 (``zoo.openmmlab`` -> ``attnzoo.openmmlab``,
    ``backbones.layers`` -> ``attnzoo.backbones.layers``); any other name is returned unchanged."""
    root, dot, rest = name.partition(".")
    return OLD_ROOTS[root] + dot + rest if root in OLD_ROOTS else name


def _old_module_name(name: str) -> str | None:
    """The inverse of :func:`current_module_name` for a module of attnzoo (None for any other module)."""
    for new, old in _CURRENT_ROOTS:
        if name == new or name.startswith(new + "."):
            return old + name[len(new):]
    return None


def upgrade_custom_imports(imports):
    """A config's ``custom_imports['imports']`` (a name or a list of names) with old module names moved to attnzoo."""
    if isinstance(imports, str):
        return current_module_name(imports)
    return type(imports)(current_module_name(name) if isinstance(name, str) else name for name in imports)


# Where a `custom_imports` value starts (`custom_imports = dict(` or `custom_imports = {`), and its `imports` entry
# (keyword or key) with its value: a list of names or one quoted name.
_CUSTOM_IMPORTS = re.compile(r"custom_imports\s*=\s*(dict\(|\{)")
_IMPORTS_ENTRY = re.compile(r"((?:\bimports|['\"]imports['\"])\s*[=:]\s*)(\[[^\]]*\]|'[^']*'|\"[^\"]*\")")
_QUOTED_NAME = re.compile(r"(['\"])([A-Za-z_][\w.]*)\1")


def _closing(text: str, start: int) -> int:
    """The index just after the bracket that closes the one opened right before ``start``."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] in "([{":
            depth += 1
        elif text[index] in ")]}":
            depth -= 1
            if depth == 0:
                return index + 1
    return len(text)


def upgrade_config_text(text: str) -> str:
    """Config text (a config file, a checkpoint's ``meta['cfg']``, in any key order mmengine writes) with the module
    names of its ``custom_imports`` moved to attnzoo; nothing else in the text changes (registry type names such as
    ``ZooBackbone`` stay)."""
    def upgrade_entry(match: re.Match) -> str:
        names = _QUOTED_NAME.sub(lambda m: m.group(1) + current_module_name(m.group(2)) + m.group(1), match.group(2))
        return match.group(1) + names

    pieces, done = [], 0
    for found in _CUSTOM_IMPORTS.finditer(text):
        if found.start() < done:
            continue
        end = _closing(text, found.end())
        pieces += [text[done:found.end()], _IMPORTS_ENTRY.sub(upgrade_entry, text[found.end():end])]
        done = end
    return "".join(pieces) + text[done:]


@contextlib.contextmanager
def old_module_names() -> Iterator[list[str]]:
    """While open, a pickle written by attnzoo 0.1 finds its classes under their old module paths.

    Every loaded attnzoo module is entered in ``sys.modules`` under its old name (``backbones.layers``,
    ``zoo.integrations.ultralytics``, ...) unless that name is already taken. Pickle imports a class's top-level
    package before it looks the dotted name up, so an old root that no module holds yet (``zoo``, ``backbones``, ...)
    is bound too, for this load only; a root some other package already holds (Hugging Face's ``kernels`` once
    transformers imported it) stays theirs, and the dotted names still resolve beside it. The caller has imported the
    modules the file can name (``import attnzoo`` loads every family; a bridge loads its own module). On exit every
    entry made here is removed. Yields the names it entered.
    """
    entered = []
    for name, module in list(sys.modules.items()):
        old = _old_module_name(name)
        if old is None or old in sys.modules:
            continue
        sys.modules[old] = module
        entered.append(old)
    try:
        yield entered
    finally:
        for old in entered:
            module = sys.modules.get(old)
            if module is not None and _old_module_name(module.__name__) == old:
                del sys.modules[old]
