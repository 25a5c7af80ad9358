"""attnzoo.integrations.ultralytics (issue 27): the zoo layers by name in Ultralytics model YAMLs, through the whole life
cycle on the CPU: build from YAML, train a few iterations on a drawn-shapes set, val, save, reload in a fresh process
(with register(); without it one line naming the call), predict, Ultralytics' own ONNX export.

Ultralytics is kept off the network: its settings live in a temporary YOLO_CONFIG_DIR holding a font (matplotlib's
DejaVu Sans under the name Ultralytics looks for, so its dataset check does not download Arial.ttf), YOLO_OFFLINE=1,
YOLO_AUTOINSTALL=False, models come from YAML (never a hub .pt), plots are off and the export does not simplify
(which would want onnxslim).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
YOLO_CONFIGS = REPO / "configs" / "yolo"
BRA_NECK = YOLO_CONFIGS / "yolo11-bra-neck.yaml"
ELA_BACKBONE = YOLO_CONFIGS / "yolo11-ela-backbone.yaml"
sys.path.insert(0, str(REPO / "tools"))


def scaled(path: Path, scale: str) -> str:
    """Ultralytics' file-name convention: yolo11-bra-neck.yaml read at scale s is 'yolo11s-bra-neck.yaml'."""
    return str(path.with_name(path.name.replace("yolo11-", f"yolo11{scale}-")))


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    """Ultralytics imported with an offline, throw-away configuration, and the bridge registered."""
    if find_spec("ultralytics") is None:
        pytest.skip("the Ultralytics bridge needs the 'yolo' extra: pip install 'attnzoo[yolo]'")
    config_dir = tmp_path_factory.mktemp("ultralytics_config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_CONFIG_DIR", str(config_dir))
        patch.setenv("YOLO_OFFLINE", "1")
        patch.setenv("YOLO_AUTOINSTALL", "False")
        patch.setenv("YOLO_VERBOSE", "False")
        import matplotlib
        import ultralytics.utils

        font_dir = ultralytics.utils.USER_CONFIG_DIR
        font_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font_dir / "Arial.ttf")

        from attnzoo.integrations import ultralytics as bridge

        bridge.register()
        yield bridge


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A tiny YOLO-format set of drawn shapes: 8 train and 4 val images of 64x64, 3 classes."""
    import make_yolo_set

    return make_yolo_set.make(tmp_path_factory.mktemp("yolo_shapes"), num_train=8, num_val=4, height=64, width=64,
                              min_size=14, max_size=32, seed=0)


def test_the_yamls_are_shipped_and_the_set_maker_is_deterministic(tmp_path):
    import make_yolo_set

    from attnzoo import shipped

    assert shipped.list_configs("yolo/*") == ["yolo/yolo11-bra-neck.yaml", "yolo/yolo11-ela-backbone.yaml"]
    a, b, c = (make_yolo_set.make(tmp_path / name, num_train=2, num_val=1, height=48, width=64, min_size=10,
                                  max_size=24, seed=seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    labels = sorted((a.parent / "labels").rglob("*.txt"))
    assert [p.read_text() for p in labels] == [p.read_text() for p in sorted((b.parent / "labels").rglob("*.txt"))]
    assert [p.read_text() for p in labels] != [p.read_text() for p in sorted((c.parent / "labels").rglob("*.txt"))]
    rows = [line.split() for p in labels for line in p.read_text().splitlines()]
    assert rows and all(int(r[0]) in (0, 1, 2) and all(0 < float(v) <= 1 for v in r[1:]) for r in rows)
    assert "names:\n  0: rectangle\n  1: ellipse\n  2: triangle" in a.read_text()


def zoo_modules(model):
    return {index: module for index, module in enumerate(model.model.model) if hasattr(module, "layer")}


def n_params(model) -> int:
    return sum(p.numel() for p in model.model.parameters())


def test_register_is_idempotent_and_puts_the_layers_where_yamls_look(yolo):
    from ultralytics.nn import tasks

    wrapped = tasks.parse_model
    assert yolo.register() == yolo.LAYER_NAMES == ("BiLevelRoutingAttention2d", "AgentAttention2d", "FlowAttention2d",
                                                    "SimplifiedLinearAttention2d", "ELA")
    assert tasks.parse_model is wrapped and wrapped._zoo_bridge and yolo.is_registered()
    assert all(getattr(tasks, name) is yolo.YOLO_LAYERS[name] for name in yolo.LAYER_NAMES)
    assert yolo.BiLevelRoutingAttention2d.__module__ == "attnzoo.integrations.ultralytics"  # the class path .pt files hold


def test_shipped_yamls_take_channels_from_their_input_at_every_scale(yolo):
    from ultralytics import YOLO

    from attnzoo.layers import ELA, BiLevelRoutingAttention2d

    torch.manual_seed(0)
    plain = YOLO("yolo11n.yaml")  # Ultralytics' own YAML, shipped inside the package: no download
    bra_n, bra_s = YOLO(scaled(BRA_NECK, "n")), YOLO(scaled(BRA_NECK, "s"))
    ela_n = YOLO(scaled(ELA_BACKBONE, "n"))
    bra = zoo_modules(bra_n)
    assert {i: (type(m.layer), m.layer.dim, m.residual) for i, m in bra.items()} == {
        12: (BiLevelRoutingAttention2d, 256, True), 16: (BiLevelRoutingAttention2d, 128, True),
        20: (BiLevelRoutingAttention2d, 64, True), 24: (BiLevelRoutingAttention2d, 128, True)}
    assert [m.layer.dim for m in zoo_modules(bra_s).values()] == [512, 256, 128, 256]  # width 0.50 instead of 0.25
    ela = zoo_modules(ela_n)
    assert {i: (type(m.layer), m.layer.dim, m.residual) for i, m in ela.items()} == {
        5: (ELA, 128, False), 8: (ELA, 128, False), 11: (ELA, 256, False)}
    # every other row is Ultralytics' own: the YAMLs add exactly the zoo layers' parameters
    for model, added in ((bra_n, bra), (ela_n, ela)):
        assert n_params(model) - n_params(plain) == sum(p.numel() for m in added.values() for p in m.parameters())
    print(f"\nmodel.info() parameters: yolo11n.yaml {n_params(plain):,}; yolo11n-bra-neck.yaml {n_params(bra_n):,}; "
          f"yolo11n-ela-backbone.yaml {n_params(ela_n):,}")
    with torch.no_grad():  # gamma starts at 0: each BRA row passes its input through unchanged
        for module in bra.values():
            x = torch.randn(1, module.layer.dim, 12, 10)
            assert module.gamma.item() == 0 and torch.equal(module(x), x)


CUSTOM_YAML = """\
nc: 2
scales:
  n: [0.50, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]                     # 0  16 channels at scale n
  - [-1, 1, Conv, [128, 3, 2]]                    # 1  32
  - [-1, 1, Conv, [256, 3, 2]]                    # 2  64  P3
  - [-1, 1, Conv, [512, 3, 2]]                    # 3  128 P4
  - [2, 1, ELA, [{preset: S, residual: true}]]    # 4  reads row 2: 64
  - [3, 1, BiLevelRoutingAttention2d, [4, 2]]     # 5  reads row 3: 128; num_heads=4, topk=2
  - [-1, 4, AgentAttention2d, [{residual: false}]]  # 6  128, repeated 4 x depth 0.5 = twice
  - [-1, 1, Conv, [1024, 3, 2]]                   # 7  256 P5
  - [-1, 1, FlowAttention2d, []]                  # 8
  - [-1, 1, SimplifiedLinearAttention2d, [{kernel_size: 3}]]  # 9
head:
  - [[4, 6, 9], 1, Detect, [nc]]
"""


def test_rows_reading_any_row_with_arguments_and_either_placement(yolo, tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "custom-zoo.yaml"
    path.write_text(CUSTOM_YAML)
    model = YOLO(str(path))
    found = {i: (type(m).__name__, m.residual) for i, m in enumerate(model.model.model) if hasattr(m, "residual")}
    assert found == {4: ("ELA", True), 5: ("BiLevelRoutingAttention2d", True), 8: ("FlowAttention2d", True),
                     9: ("SimplifiedLinearAttention2d", True)}
    agents = model.model.model[6]
    assert len(agents) == 2 and all(not a.residual and a.layer.dim == 128 for a in agents)
    layers = {i: model.model.model[i].layer for i in (4, 5, 8, 9)}
    assert {i: layer.dim for i, layer in layers.items()} == {4: 64, 5: 128, 8: 256, 9: 256}
    assert layers[4].preset == "S" and (layers[5].num_heads, layers[5].topk) == (4, 2)
    assert layers[9].kernel_size == 3
    model.model.eval()
    with torch.no_grad():
        out = model.model(torch.rand(1, 3, 96, 64))
    assert out[0].shape[:2] == (1, 4 + 2)


@pytest.mark.parametrize("row, message", [
    ("[-1, 1, BiLevelRoutingAttention2d, [{topks: 8}]]",
     "model YAML row 1: BiLevelRoutingAttention2d takes no argument 'topks' (did you mean 'topk'?)"),
    ("[-1, 1, ELA, [64, 'B', 7, 1, 16]]", "model YAML row 1: ELA got 5 positional arguments"),
    ("[-1, 1, ELA, [64]]", "ELA: preset must be one of ['B', 'L', 'S', 'T'] (the paper's ELA-T/B/S/L), got 64 (a row's "
                           "positional arguments follow the channel count, which the bridge adds: ELA(16 channels"),
    ("[[-1, 0], 1, ELA, []]", "model YAML row 1: ELA reads one feature map: its 'from' must be one row index"),
    ("[-1, 1, FlowAttention2d, [5]]", "cannot be split into num_heads=5"),
    ("[-1, 1, ELA, [{residual: 'yes'}]]", "ELA: residual must be true or false"),
])
def test_bad_rows_fail_with_one_line_naming_the_fix(yolo, tmp_path, row, message):
    from ultralytics import YOLO

    from attnzoo.errors import ZooError

    path = tmp_path / "bad.yaml"
    path.write_text(f"nc: 1\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - {row}\nhead:\n  - [[1], 1, Detect, [nc]]\n")
    with pytest.raises(yolo.LayerArgumentError) as info:
        YOLO(str(path))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ZooError)


def test_unsupported_ultralytics_version_is_one_line(yolo, monkeypatch, capsys):
    import ultralytics

    from attnzoo.errors import ZooError
    from attnzoo.integrations.__main__ import main

    monkeypatch.setattr(ultralytics, "__version__", "8.2.103")
    with pytest.raises(yolo.UnsupportedUltralyticsError) as info:
        yolo.register()
    assert isinstance(info.value, ZooError) and "\n" not in str(info.value)
    assert "ultralytics 8.2.103 is not supported" in str(info.value) and ">=8.3.20,<8.5" in str(info.value)
    assert main() == 2
    assert capsys.readouterr().err.startswith("zoo: error: ultralytics 8.2.103 is not supported")
    monkeypatch.undo()
    assert main() == 0 and "BiLevelRoutingAttention2d" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "ultralytics.nn", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"needs Ultralytics .*pip install 'attnzoo\[yolo\]'") as missing:
        yolo.register()
    assert isinstance(missing.value, ZooError)


FRESH_PROCESS = """\
import json, sys
from ultralytics import YOLO
weights, yaml_path, image = sys.argv[1:4]
report = {}
try:  # no attnzoo import, no register(): unpickling the .pt imports the bridge, which names the call
    YOLO(weights)
except Exception as err:
    report["reload_without_register"] = f"{type(err).__name__}: {err}"
try:  # the bridge is imported now (by the attempt above), still not registered
    YOLO(yaml_path)
except Exception as err:
    report["yaml_without_register"] = f"{type(err).__name__}: {err}"
from attnzoo.integrations.ultralytics import register
register()
model = YOLO(weights)
result = model.predict(image, imgsz=64, conf=0.0, device="cpu", verbose=False)[0]
report["boxes"] = result.boxes.data[:5].tolist()
report["gammas"] = [m.gamma.item() for m in model.model.modules() if hasattr(m, "gamma")]
print(json.dumps(report))
"""


def test_life_cycle_train_val_save_reload_predict_export(yolo, shapes, tmp_path):
    import numpy as np
    import onnxruntime
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO(scaled(BRA_NECK, "n"))
    losses, live_gammas = [], []

    def epoch_end(trainer):
        items = trainer.label_loss_items(trainer.tloss)
        losses.append({key.split("/")[-1]: round(float(value), 3) for key, value in items.items()})
        live_gammas[:] = [m.gamma.item() for m in trainer.model.modules() if hasattr(m, "gamma")]

    model.add_callback("on_train_epoch_end", epoch_end)
    # nbs=4: one optimizer step per batch of 4 (the default nominal batch 64 would accumulate 16 batches first)
    model.train(data=str(shapes), epochs=2, imgsz=64, batch=4, nbs=4, workers=0, device="cpu", plots=False, amp=False,
                project=str(tmp_path / "runs"), name="bra", exist_ok=True, seed=0, deterministic=True, verbose=False)
    print(f"\ntrain loss per epoch: {losses}")
    assert len(losses) == 2 and all(len(loss) == 3 and np.isfinite(list(loss.values())).all() for loss in losses)
    weights = Path(model.trainer.best)
    assert weights.is_file()

    trained = YOLO(str(weights))
    metrics = trained.val(data=str(shapes), imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                          project=str(tmp_path / "runs"), name="val", exist_ok=True, verbose=False)
    box = metrics.box
    print(f"val: P {box.mp:.3f}  R {box.mr:.3f}  mAP50 {box.map50:.3f}  mAP50-95 {box.map:.3f}")
    assert all(0.0 <= value <= 1.0 for value in (box.mp, box.mr, box.map50, box.map))
    # the BRA branches are trained (gamma starts at 0; the saved fp16 copy may round a tiny gamma back to 0)
    assert len(live_gammas) == 4 and all(g != 0 for g in live_gammas), live_gammas
    gammas = [m.gamma.item() for m in trained.model.modules() if hasattr(m, "gamma")]

    image = next((shapes.parent / "images" / "val").glob("*.jpg"))
    expected = trained.predict(str(image), imgsz=64, conf=0.0, device="cpu", verbose=False)[0].boxes.data[:5]
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(weights), scaled(BRA_NECK, "n"), str(image)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print("reload without register():", report["reload_without_register"])
    print("YAML without register():", report["yaml_without_register"])
    for key in ("reload_without_register", "yaml_without_register"):
        assert report[key].startswith("NotRegisteredError: ") and "\n" not in report[key]
        assert "call attnzoo.integrations.ultralytics.register()" in report[key]
    assert report["gammas"] == pytest.approx(gammas)
    torch.testing.assert_close(torch.tensor(report["boxes"]), expected, rtol=1e-4, atol=1e-3)
    print(f"reloaded in a fresh process after register(): {len(report['gammas'])} BRA gammas as saved, "
          f"same top-5 predictions")

    # Ultralytics' own ONNX export, at a size whose P3-P5 maps (12, 6, 3) all need BRA's padding
    exported = Path(trained.export(format="onnx", imgsz=96, simplify=False, device="cpu"))
    session = onnxruntime.InferenceSession(str(exported))
    x = torch.rand(1, 3, 96, 96)
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    network = YOLO(str(weights)).model.float().eval()
    with torch.no_grad():
        torch_out = network(x)
    torch_out = torch_out[0] if isinstance(torch_out, (tuple, list)) else torch_out
    difference = np.abs(onnx_out - torch_out.numpy()).max()
    print(f"ONNX export: {exported.name}, output {tuple(onnx_out.shape)}, max |onnxruntime - torch| {difference:.2e}")
    assert onnx_out.shape == tuple(torch_out.shape) == (1, 4 + 3, 12 * 12 + 6 * 6 + 3 * 3)
    assert difference < 1e-3 * max(1.0, float(np.abs(onnx_out).max()))

