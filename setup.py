"""Build hook: one import package, ``attnzoo``, made of the repository's four folders; the OpenMMLab configs and the mm
tools shipped inside it.

Everything else about the distribution is in pyproject.toml. The repository keeps the folders of docs/ARCHITECTURE.md
at its top level (``zoo/``, ``backbones/``, ``heads/``, ``kernels/``); the wheel installs them as ONE top-level package
(``PACKAGE_DIRS``: ``attnzoo`` <- ``zoo/``, ``attnzoo.backbones`` <- ``backbones/``, ...), so attnzoo never claims a
top-level name another distribution owns (Hugging Face's ``kernels``, which transformers requires, among them).
Editable installs get the same mapping from setuptools' editable finder; a clone that is not installed gets it from
``tools/_clone_import.py`` (which repeats ``PACKAGE_DIRS``; a test checks the two agree).

A wheel also carries copies of ``configs/`` and the shipped tools under ``attnzoo/.mim/configs`` and
``attnzoo/.mim/tools``, as mmdet ships its own under ``mmdet/.mim``, so an installed ``zoo`` command finds them
(``attnzoo.shipped``). An editable install copies nothing: ``attnzoo.shipped`` then uses the repository's folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# import package -> the repository folder it is built from (= tools/_clone_import.PACKAGE_DIRS)
PACKAGE_DIRS = {"attnzoo": "zoo", "attnzoo.backbones": "backbones", "attnzoo.heads": "heads",
                "attnzoo.kernels": "kernels"}
SHIPPED_TOOLS = ("train.py", "test.py", "_mm_entry.py", "_clone_import.py", "make_pidray.py")  # = attnzoo.shipped.SHIPPED_TOOLS


def find_packages_mapped() -> list[str]:
    """Every package below the four folders, under its attnzoo name (a folder with an ``__init__.py``)."""
    packages = []
    for package, folder in PACKAGE_DIRS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" in relative or ".mim" in relative:
                continue
            packages.append(".".join((package, *relative)))
    return packages


class BuildPyWithConfigs(build_py):
    """build_py, then copy configs/ (every .py, .md and .yaml) and the shipped tools into <build>/attnzoo/.mim/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "attnzoo" / ".mim"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "configs", target / "configs",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*~"))
        (target / "tools").mkdir(parents=True)
        for name in SHIPPED_TOOLS:
            shutil.copy2(ROOT / "tools" / name, target / "tools" / name)


setup(packages=find_packages_mapped(), package_dir=PACKAGE_DIRS, cmdclass={"build_py": BuildPyWithConfigs})
