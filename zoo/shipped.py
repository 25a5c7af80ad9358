"""What the zoo ships besides its Python packages: the OpenMMLab configs and the mm tools, in a clone and installed.

In a clone they are the repository's ``configs/`` and ``tools/``. A wheel carries copies under ``zoo/.mim/configs`` and
``zoo/.mim/tools`` (setup.py's build step puts them there, as mmdet ships its own under ``mmdet/.mim``), so an
installed ``zoo`` command finds them without a clone. The copy wins when it exists; an editable install or a clone
has none and uses the repository's folders.

mmengine 0.10.7 cannot load these through its ``package::path`` syntax: it accepts only the OpenMMLab packages in
its own ``MODULE2PACKAGE`` table (``mmengine.config.utils``), so a user names a shipped config by its path below the
configs folder (``xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py``) and ``config_path`` turns it into a file.
"""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

__all__ = ["SHIPPED_TOOLS", "config_path", "configs_dir", "list_configs", "tool_path", "tools_dir"]

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_DIR = PACKAGE_DIR / ".mim"  # what setup.py's build step writes into the wheel
REPO_ROOT = PACKAGE_DIR.parent

# The tools the zoo's commands run or tell users to run; setup.py copies exactly these into the wheel.
SHIPPED_TOOLS = ("train.py", "test.py", "_mm_entry.py", "_clone_import.py", "make_pidray.py")


def configs_dir() -> Path:
    """The folder of the shipped OpenMMLab configs (``zoo/.mim/configs`` installed, ``configs/`` in a clone)."""
    for candidate in (INSTALLED_DIR / "configs", REPO_ROOT / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no configs folder: neither {INSTALLED_DIR / 'configs'} (an installed wheel) nor "
                            f"{REPO_ROOT / 'configs'} (a clone) exists; reinstall attnzoo")


def tools_dir() -> Path:
    """The folder of the shipped tools (``zoo/.mim/tools`` installed, ``tools/`` in a clone)."""
    for candidate in (INSTALLED_DIR / "tools", REPO_ROOT / "tools"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no tools folder: neither {INSTALLED_DIR / 'tools'} (an installed wheel) nor "
                            f"{REPO_ROOT / 'tools'} (a clone) exists; reinstall attnzoo")


def tool_path(name: str) -> Path:
    """The file of one shipped tool, e.g. ``tool_path("make_pidray.py")``."""
    path = tools_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such tool (shipped tools: {', '.join(SHIPPED_TOOLS)})")
    return path


def list_configs(pattern: str = "*") -> list[str]:
    """Shipped configs as paths relative to the configs folder (``_base_`` files left out), matching ``pattern``: the
    OpenMMLab configs (``*.py``) and the Ultralytics model YAMLs (``yolo/*.yaml``, :mod:`attnzoo.integrations.ultralytics`)."""
    root = configs_dir()
    names = (p.relative_to(root).as_posix() for suffix in ("*.py", "*.yaml") for p in root.rglob(suffix)
             if "_base_" not in p.parts)
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def config_path(name: str | Path) -> Path:
    """A config given as a file path, or as a shipped config's path below the configs folder, as an existing file.

    An existing file wins (``./my_config.py``); otherwise ``name`` is looked up under ``configs_dir()``, also with a
    leading ``configs/`` dropped, so the repository-relative paths in the README work from anywhere.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    relative = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    shipped = configs_dir() / relative
    if not path.is_absolute() and shipped.is_file():
        return shipped
    close = difflib.get_close_matches(relative.as_posix(), list_configs(), n=3, cutoff=0.6)
    hint = f" Shipped configs like it: {', '.join(close)}." if close else " `zoo configs` lists the shipped ones."
    raise FileNotFoundError(f"{name}: no such config file, and no shipped config of that name under "
                            f"{configs_dir()}.{hint}")
