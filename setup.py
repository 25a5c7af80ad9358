"""Build hook: ship the OpenMMLab configs and the mm tools inside the ``zoo`` package of a wheel.

Everything else about the distribution is in pyproject.toml. The repository keeps ``configs/`` and ``tools/`` at its
top level (where users of a clone expect them); a wheel carries copies under ``zoo/.mim/configs`` and
``zoo/.mim/tools``, as mmdet ships its own under ``mmdet/.mim``, so an installed ``zoo`` command finds them
(``zoo.shipped``). An editable install copies nothing: ``zoo.shipped`` then uses the repository's folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_TOOLS = ("train.py", "test.py", "_mm_entry.py", "make_pidray.py")  # = zoo.shipped.SHIPPED_TOOLS


class BuildPyWithConfigs(build_py):
    """build_py, then copy configs/ (every .py and .md) and the shipped tools into <build>/zoo/.mim/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "zoo" / ".mim"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "configs", target / "configs",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*~"))
        (target / "tools").mkdir(parents=True)
        for name in SHIPPED_TOOLS:
            shutil.copy2(ROOT / "tools" / name, target / "tools" / name)


setup(cmdclass={"build_py": BuildPyWithConfigs})
