"""Files written by attnzoo 0.1 (the four top-level packages zoo/backbones/heads/kernels, commit 2ff29eb) load on the
one import root and give the numbers they gave then.

The fixtures in tests/fixtures/legacy_names were written by that code (make_legacy_fixtures.sh; MANIFEST.json says,
per file, the commands, what old module names it records and how the expected outputs were made). One test per saved
format: classification run folder, forgery run folder, mmengine checkpoint + its dumped config, Ultralytics .pt, ONNX.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_names"
REPO = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((LEGACY / "MANIFEST.json").read_text())


def _run_python(code: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_fixtures_were_written_by_the_old_layout():
    assert MANIFEST["old_commit"].startswith("2ff29eb")
    card = (LEGACY / "classification_run" / "README.md").read_text()
    assert "import zoo" in card  # the 0.1 run card, as written then
    assert "'zoo.openmmlab'" in (LEGACY / "mm_checkpoint" / "retinanet_biformer-mini_fpn_coco-synth.py").read_text()


def test_an_old_classification_run_folder_loads_validates_and_predicts(tmp_path, capsys):
    import attnzoo
    from attnzoo.cli import main

    expected = load_file(str(LEGACY / "classification_run.expected.safetensors"))
    model = attnzoo.create_model(str(LEGACY / "classification_run")).eval()
    with torch.no_grad():
        logits = model(expected["input"])
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-6)

    data = tmp_path / "shapes"
    subprocess.run([sys.executable, str(REPO / "tools" / "make_imagefolder.py"), str(data), "--num-train", "1",
                    "--num-val", "2", "--size", "32", "--num-classes", "3", "--seed", "1"], check=True,
                   capture_output=True)
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "classification_run", run)
    assert main(["validate", str(run), "--data", str(data / "val")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 6 and report["architecture"] == "biformer_tiny"
    image = next((data / "val").rglob("*.png"))
    assert main(["predict", str(run), str(image), "--top-k", "3", "--json"]) == 0
    prediction = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {p["label"] for p in prediction["top"]} == {"ellipse", "rectangle", "triangle"}


def test_an_old_forgery_run_folder_loads_and_checks_an_image():
    from attnzoo.tasks.forgery.runs import load_run

    expected = load_file(str(LEGACY / "forgery_run.expected.safetensors"))
    run = load_run(LEGACY / "forgery_run")
    image = expected["image"].numpy()
    torch.testing.assert_close(run.preprocess(image), expected["pixel_values"])
    verdict = run.check([image], max_new_tokens=16)[0]
    assert verdict.p_fake == pytest.approx(float(expected["p_fake"][0]), abs=1e-6)


def test_an_old_mm_config_and_checkpoint_build_load_and_give_the_old_outputs():
    """The dumped config names 'zoo.openmmlab' in custom_imports: read_config moves it; the checkpoint loads strictly
    through the zoo's reader and the detector gives the outputs it gave under 0.1."""
    from mmengine.runner import load_checkpoint

    import attnzoo.openmmlab  # noqa: F401  (the reader mmengine uses for local files)
    from attnzoo.openmmlab.configs import read_config

    cfg = read_config(LEGACY / "mm_checkpoint" / "retinanet_biformer-mini_fpn_coco-synth.py")
    assert cfg.custom_imports["imports"] == ["attnzoo.openmmlab"]
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    model = MODELS.build(cfg.model).eval()
    checkpoint = load_checkpoint(model, str(LEGACY / "mm_checkpoint" / "epoch_1.pth"), strict=True)
    assert "attnzoo.openmmlab" in checkpoint["meta"]["cfg"] and "'zoo.openmmlab'" not in checkpoint["meta"]["cfg"]
    expected = load_file(str(LEGACY / "mm_checkpoint" / "expected_outputs.safetensors"))
    with torch.no_grad():
        cls_scores, bbox_preds = model._forward(expected["input"])
    for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
        torch.testing.assert_close(cls_score, expected[f"cls_score.{level}"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bbox_pred, expected[f"bbox_pred.{level}"], rtol=1e-5, atol=1e-6)


def test_an_old_mm_checkpoint_alone_builds_its_detector_from_its_own_config_text(tmp_path):
    """mmdet's DetInferencer given only the weights builds the model from meta['cfg'] (naming 'zoo.openmmlab'): after
    `import attnzoo.openmmlab` the zoo's checkpoint reader hands it the text with the new names."""
    code = (
        "import attnzoo.openmmlab, numpy as np\n"
        "from mmdet.apis import DetInferencer\n"
        f"inferencer = DetInferencer(model=None, weights={str(LEGACY / 'mm_checkpoint' / 'epoch_1.pth')!r}, "
        "device='cpu', show_progress=False)\n"
        "result = inferencer(np.zeros((32, 48, 3), dtype=np.uint8), return_datasamples=True)\n"
        "print(type(inferencer.model.backbone).__module__, len(result['predictions']))\n")
    done = _run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["attnzoo.openmmlab.backbone", "1"]


def test_an_old_ultralytics_pt_loads_after_register_and_gives_the_old_outputs(tmp_path):
    """The .pt pickles zoo.integrations.ultralytics.* holding backbones.layers.*: register() makes those names resolve
    for the load only; no old top-level name is left bound afterwards."""
    config_dir = tmp_path / "ultralytics_config"
    code = (
        "import sys, torch\n"
        "from safetensors.torch import load_file\n"
        "from attnzoo.integrations.ultralytics import register\n"
        "register()\n"
        "from ultralytics import YOLO\n"
        f"yolo = YOLO({str(LEGACY / 'ultralytics' / 'yolo_zoo_tiny.pt')!r})\n"
        f"expected = load_file({str(LEGACY / 'ultralytics' / 'expected_outputs.safetensors')!r})\n"
        "model = yolo.model.float().eval()\n"
        "with torch.no_grad():\n"
        "    out = model(expected['input'])[0]\n"
        "torch.testing.assert_close(out, expected['output'], rtol=1e-4, atol=1e-4)\n"
        "names = {type(m).__module__ + '.' + type(m).__name__ for m in model.modules()}\n"
        "assert 'attnzoo.integrations.ultralytics.BiLevelRoutingAttention2d' in names, names\n"
        "left = [n for n in sys.modules if n.split('.')[0] in ('zoo', 'backbones', 'heads', 'kernels')]\n"
        "assert left == [], left\n"
        "print('ok')\n")
    done = _run_python(code, cwd=tmp_path, env_extra={"YOLO_CONFIG_DIR": str(config_dir), "YOLO_OFFLINE": "1",
                                                      "YOLO_AUTOINSTALL": "False", "YOLO_VERBOSE": "False"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_an_old_ultralytics_pt_without_register_names_the_call(tmp_path):
    """Before register() the old .pt fails as a new one does: Ultralytics cannot find the zoo's classes."""
    code = ("from ultralytics import YOLO\n"
            f"YOLO({str(LEGACY / 'ultralytics' / 'yolo_zoo_tiny.pt')!r})\n")
    done = _run_python(code, cwd=tmp_path, env_extra={"YOLO_CONFIG_DIR": str(tmp_path / "cfg"), "YOLO_OFFLINE": "1",
                                                      "YOLO_AUTOINSTALL": "False", "YOLO_VERBOSE": "False"})
    assert done.returncode != 0
    assert "zoo" in done.stderr  # the missing module is named: zoo.integrations.ultralytics


def test_an_old_onnx_file_runs_and_agrees_with_the_new_code_on_the_old_run():
    import onnxruntime

    import attnzoo

    inputs = np.load(LEGACY / "onnx" / "input.npy")
    session = onnxruntime.InferenceSession(str(LEGACY / "onnx" / "biformer_tiny_cls3_32.onnx"),
                                           providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": inputs})
    np.testing.assert_allclose(output, np.load(LEGACY / "onnx" / "expected_output.npy"), rtol=1e-5, atol=1e-6)
    model = attnzoo.create_model(str(LEGACY / "classification_run")).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(output, logits, rtol=1e-4, atol=1e-5)


def test_legacy_names_map_one_way_and_leave_other_names_alone():
    from attnzoo.legacy import current_module_name, upgrade_config_text, upgrade_custom_imports

    assert current_module_name("backbones.layers") == "attnzoo.backbones.layers"
    assert current_module_name("zoo") == "attnzoo"
    assert current_module_name("kernelsx.y") == "kernelsx.y"
    assert current_module_name("mmdet.models") == "mmdet.models"
    assert upgrade_custom_imports(["zoo.openmmlab", "heads.xray", "mmpretrain.models"]) == [
        "attnzoo.openmmlab", "attnzoo.heads.xray", "mmpretrain.models"]
    text = ("custom_imports = dict(imports=['zoo.openmmlab', \"heads.detection\"], allow_failed_imports=False)\n"
            "model = dict(backbone=dict(type='ZooBackbone', model_name='biformer_tiny'), note='zoo.openmmlab')\n")
    upgraded = upgrade_config_text(text)
    assert "imports=['attnzoo.openmmlab', \"attnzoo.heads.detection\"]" in upgraded
    assert upgraded.splitlines()[1] == text.splitlines()[1]  # outside custom_imports nothing changes
    assert upgrade_config_text(upgraded) == upgraded
