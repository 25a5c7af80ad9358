"""Every shipped config works with OpenMMLab's own tools (mmdet's / mmseg's tools/train.py and tools/test.py, shipped
under ``<package>/.mim/tools``), not only with the zoo's tools/train.py (which imports ``attnzoo.openmmlab`` itself).

mmengine saves a checkpoint with its own objects in it (``HistoryBuffer`` in the message hub); torch's weights-only
``torch.load`` refuses them unless mmengine reads checkpoints through the zoo's reader, which ``import
attnzoo.openmmlab`` installs. So every shipped config must import it through ``custom_imports`` (the static check),
and mmdet's own test.py must read the checkpoint mmdet's own train.py wrote (one real cycle, in fresh processes: this
test process has long imported the glue, which would hide a config that forgets it).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mmdet
import pytest
from mm_cycle import CONFIGS, _dataset_overrides
from mmengine.config import Config

READER = "attnzoo.openmmlab"
SHIPPED = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)
MMDET_TOOLS = Path(mmdet.__file__).parent / ".mim" / "tools"


def _assigned(path: Path, name: str):
    """The value a config file assigns to ``name`` at its top level (a literal or ``dict(...)``), else None."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict":
                return {k.arg: ast.literal_eval(k.value) for k in value.keywords}
            return ast.literal_eval(value)
    return None


def custom_imports(path: Path) -> list[str]:
    """The ``custom_imports`` imports a config ends up with, as mmengine merges them: a file's own ``imports`` list
    replaces its bases'; without one it has its local bases' (``mmdet::`` / ``mmseg::`` bases import nothing)."""
    own = _assigned(path, "custom_imports")
    if own is not None:
        return list(own.get("imports") or [])
    bases = _assigned(path, "_base_") or []
    found: list[str] = []
    for base in [bases] if isinstance(bases, str) else bases:
        if "::" not in base:
            found += [m for m in custom_imports((path.parent / base).resolve()) if m not in found]
    return found


def test_the_static_reading_matches_mmengines():
    # the files this test was written for: their own list, an inherited one, a base without one
    for name in ("bvr/atss-bvr_x101-64x4d-dcn_fpn_ms-2x_coco.py", "xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py",
                 "det/mask-rcnn_moh-transnext-s-75_fpn_1x_coco.py"):
        cfg = Config.fromfile(str(CONFIGS / name), import_custom_modules=False)
        assert custom_imports(CONFIGS / name) == cfg.custom_imports.imports, name


def test_every_shipped_config_imports_the_checkpoint_reader():
    assert len(SHIPPED) > 60
    missing = [f"{name}: {custom_imports(CONFIGS / name)}" for name in SHIPPED
               if READER not in custom_imports(CONFIGS / name)]
    assert not missing, f"configs whose custom_imports leave out {READER}:\n" + "\n".join(missing)


def _tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(MMDET_TOOLS / f"{name}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not (MMDET_TOOLS / "train.py").is_file(), reason="this mmdet install ships no .mim/tools")
def test_mmdets_own_test_reads_what_its_own_train_wrote(coco_synth, tmp_path):
    # the BVR config (it named only attnzoo.heads.detection before), shrunk to 4 images and one epoch
    cfg = Config.fromfile(str(CONFIGS / "bvr/retinanet-bvr_r18-mini_fpn_coco-synth.py"), import_custom_modules=False)
    cfg.merge_from_dict(_dataset_overrides("det", coco_synth, 4, 2, (96, 64)))
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=2)  # no validation while training
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=2)]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1)
    cfg.model.test_cfg = dict(nms_pre=200, min_bbox_size=0, score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5),
                              max_per_img=20)  # score_thr 0: an untrained model still reaches the evaluator
    config = tmp_path / "config.py"
    cfg.dump(str(config))

    train = _tool("train", str(config), "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    checkpoint = tmp_path / "work" / "epoch_1.pth"
    assert checkpoint.is_file()
    test = _tool("test", str(config), str(checkpoint), "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "Epoch(test)" in test.stdout + test.stderr and "coco/bbox_mAP:" in test.stdout + test.stderr
