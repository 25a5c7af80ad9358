"""One import root: the wheel installs `attnzoo` and nothing else, and attnzoo lives beside transformers and Hugging
Face's `kernels` (docs/ARCHITECTURE.md "One import root").

The wheel is built once for the module (pip, no build isolation: the venv's setuptools, no network) and installed with
`pip install --target` into a folder that is put first on PYTHONPATH of the project venv's Python: that process has
the wheel's attnzoo (not the editable one), the venv's transformers and Hugging Face's `kernels`.
"""

from __future__ import annotations

import ast
import csv
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _clone_import_module():
    spec = importlib.util.spec_from_file_location("_clone_import", REPO / "tools" / "_clone_import.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(code: str, cwd: Path, env_extra: dict | None = None, flags: tuple = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env_extra or {})
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "attnzoo"
    # build from a copy of the tracked tree, so the build's own build/ and egg-info never touch the checkout
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            target.write_bytes((REPO / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    (found,) = out.glob("attnzoo-*.whl")
    return found


@pytest.fixture(scope="module")
def installed_wheel(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=900)
    return target


def top_level_names(record_rows: list[list[str]]) -> set[str]:
    """The top-level import names a wheel's RECORD installs (dist-info and .data folders are not import names)."""
    names = set()
    for row in record_rows:
        first = row[0].split("/")[0]
        if first.endswith((".dist-info", ".data")):
            continue
        names.add(first[:-3] if first.endswith(".py") else first)
    return names


def test_top_level_names_reads_a_record():
    rows = [["zoo/__init__.py"], ["kernels/bra.py"], ["six.py"], ["attnzoo-0.2.0.dist-info/RECORD"]]
    assert top_level_names(rows) == {"zoo", "kernels", "six"}


def test_the_wheel_installs_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (record,) = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        rows = list(csv.reader(archive.read(record).decode().splitlines()))
        names = archive.namelist()
    assert top_level_names(rows) == {"attnzoo"}
    # the four folders are inside it, with the configs and tools the commands use
    for inside in ("attnzoo/__init__.py", "attnzoo/backbones/biformer.py", "attnzoo/heads/xray/__init__.py",
                   "attnzoo/kernels/bra.py", "attnzoo/legacy.py", "attnzoo/cards/biformer_tiny.yaml",
                   "attnzoo/.mim/tools/train.py", "attnzoo/.mim/tools/_clone_import.py"):
        assert inside in names, inside
    assert any(n.startswith("attnzoo/.mim/configs/xray/") for n in names)
    entry_points = archive_text(wheel, "entry_points.txt")
    assert "zoo = attnzoo.cli:main" in entry_points


def archive_text(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/" + suffix)]
        return archive.read(name).decode()


def test_the_wheel_lives_beside_transformers_and_hugging_face_kernels(installed_wheel, tmp_path):
    """The venv holds transformers >= 5.25 and Hugging Face's `kernels`; the wheel's attnzoo is first on the path."""
    transformers_version = importlib.metadata.version("transformers")
    assert tuple(int(p) for p in transformers_version.split(".")[:2]) >= (5, 25)
    assert importlib.metadata.version("kernels")  # Hugging Face's distribution is installed
    code = (
        "import attnzoo, transformers, kernels, timm\n"
        f"assert attnzoo.__file__.startswith({str(installed_wheel)!r}), attnzoo.__file__\n"
        "assert 'site-packages' in kernels.__file__ and callable(kernels.get_kernel), kernels.__file__\n"
        "from kernels import get_kernel\n"
        "assert get_kernel.__module__.startswith('kernels'), get_kernel.__module__\n"
        "m = timm.create_model('biformer_tiny', pretrained=False)\n"
        "assert type(m).__module__ == 'attnzoo.backbones.biformer', type(m).__module__\n"
        "from transformers import TimmBackboneConfig\n"
        "print('ok', transformers.__version__)\n")
    done = _run(code, cwd=tmp_path, env_extra={"PYTHONPATH": str(installed_wheel)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_the_installed_zoo_command_finds_its_shipped_configs(installed_wheel, tmp_path):
    code = ("from attnzoo.shipped import configs_dir, tool_path\n"
            "print(configs_dir()); print(tool_path('train.py'))")
    done = _run(code, cwd=tmp_path, env_extra={"PYTHONPATH": str(installed_wheel)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(line.startswith(str(installed_wheel / "attnzoo" / ".mim")) for line in done.stdout.split())


def test_a_clone_root_on_sys_path_shadows_nothing():
    """`python -c` in the clone puts its root first on sys.path: the folder kernels/ hands the name to Hugging Face's
    package, and the old names of the other folders are refused with the name to import instead."""
    done = _run("import transformers, kernels; print(kernels.__file__); import attnzoo.kernels.bra", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "site-packages" in done.stdout and str(REPO / "kernels") not in done.stdout
    for old, new in (("zoo", "attnzoo"), ("backbones", "attnzoo.backbones"), ("heads", "attnzoo.heads")):
        done = _run(f"import {old}", cwd=REPO)
        assert done.returncode == 1 and f"import {new}" in done.stderr, done.stderr[-2000:]


def test_a_clone_that_is_not_installed_imports_attnzoo():
    """No site-packages .pth files (`-S`), so neither the editable finder nor a wheel: the clone finder maps the
    folders (the GPU machine's copy of the tree runs this way)."""
    site = sysconfig.get_paths()["purelib"]
    code = (f"import sys; sys.path.append({site!r}); sys.path.insert(0, {str(REPO / 'tools')!r})\n"
            "from _clone_import import make_attnzoo_importable\n"
            "assert make_attnzoo_importable()\n"
            "import attnzoo.kernels.backend, timm\n"
            f"assert attnzoo.__file__ == {str(REPO / 'zoo' / '__init__.py')!r}, attnzoo.__file__\n"
            "print(type(timm.create_model('biformer_tiny')).__module__)")
    done = _run(code, cwd=REPO.parent, flags=("-S",))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "attnzoo.backbones.biformer"


def test_the_clone_finder_maps_as_setup_py_does():
    tree = ast.parse((REPO / "setup.py").read_text())
    (mapping,) = [ast.literal_eval(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "PACKAGE_DIRS" for t in node.targets)]
    assert mapping == _clone_import_module().PACKAGE_DIRS


def test_configs_name_only_attnzoo_modules():
    """Every custom_imports entry of the shipped configs is an attnzoo module (or another library's)."""
    from attnzoo.legacy import OLD_ROOTS

    found = []
    for path in sorted((REPO / "configs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "custom_imports" for t in node.targets):
                imports = ast.literal_eval(node.value.keywords[0].value) if isinstance(node.value, ast.Call) else []
                found += [(path.name, name) for name in imports]
    assert len(found) > 30
    assert [item for item in found if item[1].split(".")[0] in OLD_ROOTS] == []
    assert {name.split(".")[0] for _, name in found} == {"attnzoo"}
