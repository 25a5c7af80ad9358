"""The user paths of issue 22: `zoo train --img-size N --pretrained RUN_AT_M`, `zoo validate RUN --img-size N`, and
`ZooBackbone(model_kwargs=dict(img_size=N))`: the model is built at N and the weights saved at M are resampled.

The model is a Flowformer shrunk through --model-kwargs (one block per stage, widths 24-96): its stage-1 position
embedding depends on the input size, so nothing here works unless the size-dependent tensor is resampled. The data
are the project's shapes (tools/make_imagefolder.py) at 64 px; chance is 1/6 = 16.7 % top-1.
"""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.models.builder import img_size_kwargs

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import make_imagefolder  # noqa: E402

TINY = ["--model-kwargs", "embed_dim=(24,48,72,96)", "depth=(1,1,1,1)"]
TINY_KWARGS = dict(embed_dim=(24, 48, 72, 96), depth=(1, 1, 1, 1))
FAST = ["--batch-size", "8", "--workers", "0", "--no-aug", "--warmup-epochs", "0", "--smoothing", "0"]
CHANCE = 100 / 6


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _run(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_imagefolder.make(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, size=64, seed=0)


@pytest.fixture(scope="module")
def run_at_64(shapes, tmp_path_factory):
    """A run trained at 64 px (4 epochs from random weights); returns (run folder, its JSON summary)."""
    out = tmp_path_factory.mktemp("runs") / "at64"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code, stdout = _run(["train", "flowformer", "--data", str(shapes), "--out", str(out), "--epochs", "4",
                         "--img-size", "64", "--lr", "3e-3", *FAST, *TINY])
    torch.set_num_threads(threads)
    assert code == 0
    return out, _last_json(stdout)


def test_a_run_at_64_continues_at_96_without_falling_back_to_chance(run_at_64, shapes, tmp_path, capsys):
    run, at64 = run_at_64
    assert at64["top1"] > 2 * CHANCE  # it learned something at 64 px
    assert json.loads((run / "config.json").read_text())["model_args"]["img_size"] == [64, 64]

    # The 64 px run evaluated at 96 px: built at 96, its position embedding resampled (a misfit without it).
    assert main(["validate", str(run), "--data", str(shapes), "--img-size", "96", "--workers", "0"]) == 0
    at96 = _last_json(capsys.readouterr().out)
    assert at96["input_size"] == [3, 96, 96] and at96["images"] == 24
    assert at96["top1"] > 2 * CHANCE
    # The same weights as a checkpoint file for the model name: built at 96, the family filter resamples alike.
    assert main(["validate", "flowformer", "--checkpoint", str(run / "model.safetensors"), "--data", str(shapes),
                 "--img-size", "96", "--workers", "0", "--model-kwargs", *TINY[1:], "num_classes=6"]) == 0
    by_name = _last_json(capsys.readouterr().out)
    assert by_name["input_size"] == [3, 96, 96] and (by_name["top1"], by_name["loss"]) == (at96["top1"], at96["loss"])

    # Fine-tuning at 96 px from the 64 px run: lr 0 first, so the saved weights are exactly what was loaded: the
    # 64 px body with its 16x16 position grid resampled to 24x24 (timm's bicubic resample_abs_pos_embed), and a fresh
    # head (--pretrained re-initialises it for the folder's classes).
    frozen = tmp_path / "frozen96"
    code, stdout = _run(["train", "flowformer", "--data", str(shapes), "--out", str(frozen), "--epochs", "1",
                         "--img-size", "96", "--pretrained", str(run), "--lr", "0", "--warmup-lr", "0", "--min-lr",
                         "0", *FAST, *TINY])
    assert code == 0
    source, moved = load_file(str(run / "model.safetensors")), load_file(str(frozen / "model.safetensors"))
    expected = resample_abs_pos_embed(source["pos_embed"], new_size=(24, 24), old_size=(16, 16), num_prefix_tokens=0)
    assert moved["pos_embed"].shape == (1, 576, 24) and torch.equal(moved["pos_embed"], expected)
    assert all(torch.equal(source[k], moved[k]) for k in source if k not in ("pos_embed", "head.weight", "head.bias"))

    # ... and training on at 96 px keeps it far above chance.
    tuned = tmp_path / "tuned96"
    code, stdout = _run(["train", "flowformer", "--data", str(shapes), "--out", str(tuned), "--epochs", "1",
                         "--img-size", "96", "--pretrained", str(run), "--lr", "5e-4", *FAST, *TINY])
    assert code == 0
    assert _last_json(stdout)["top1"] > 2 * CHANCE
    config = json.loads((tuned / "config.json").read_text())
    assert config["model_args"]["img_size"] == [96, 96] and config["pretrained_cfg"]["input_size"] == [3, 96, 96]
    # The folder is at 96 px now: validate builds it there without being told.
    assert main(["validate", str(tuned), "--data", str(shapes), "--workers", "0"]) == 0
    assert _last_json(capsys.readouterr().out)["input_size"] == [3, 96, 96]


def test_img_size_builds_only_models_whose_constructor_takes_it():
    assert img_size_kwargs("flowformer", 96, **TINY_KWARGS) == {"img_size": 96}
    assert img_size_kwargs("biformer_tiny", 288) == {"img_size": 288}
    assert img_size_kwargs("poolformer_s12_official", 288) == {"img_size": 288}
    assert img_size_kwargs("test_convnext", 96) == {}  # timm's ConvNeXt takes no img_size: only the data changes
    assert img_size_kwargs("flowformer", None) == {}


def test_img_size_disagreeing_with_model_kwargs_is_one_error(shapes, tmp_path, capsys):
    assert main(["train", "flowformer", "--data", str(shapes), "--out", str(tmp_path / "r"), "--epochs", "1",
                 "--img-size", "96", *FAST, *TINY, "img_size=64"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: --img-size 96 and --model-kwargs img_size=64 disagree") and len(
        err.splitlines()) == 1


def test_zoo_backbone_builds_at_img_size_and_resamples_a_checkpoint_of_another_size(tmp_path):
    from attnzoo.openmmlab.backbone import ZooBackbone

    torch.manual_seed(0)
    at64 = timm.create_model("flowformer", img_size=64, **TINY_KWARGS)
    path = tmp_path / "flowformer_64.pth"
    torch.save({"model": at64.state_dict()}, path)
    backbone = ZooBackbone(model_name="flowformer", out_indices=(0, 1, 2, 3), pretrained=str(path),
                           model_kwargs=dict(img_size=96, **TINY_KWARGS)).eval()
    expected = resample_abs_pos_embed(at64.pos_embed.detach(), new_size=(24, 24), old_size=(16, 16),
                                      num_prefix_tokens=0)
    assert torch.equal(backbone.model.pos_embed.detach(), expected)
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in features] == [(24, 24, 24), (48, 12, 12), (72, 6, 6), (96, 3, 3)]


def test_predict_export_and_bench_build_the_model_at_img_size(run_at_64, shapes, tmp_path, capsys):
    """`zoo predict / export / bench --img-size 96` build the 64 px Flowformer at 96 (it refuses a 96 px input when
    built at 64), and the weights they load are resampled by the family filter."""
    import onnxruntime as ort

    from attnzoo.tasks.bench import bench_model

    run, _ = run_at_64
    weights = str(run / "model.safetensors")
    images = [str(p) for p in sorted((shapes / "val").rglob("*.png"))[:3]]
    assert len(images) == 3
    def top(stdout: str) -> list:  # (index, prob) per image; a bare name has no class names, the run folder has
        return [[(c["index"], c["prob"]) for c in json.loads(line)["top"]] for line in stdout.strip().splitlines()]

    assert main(["predict", str(run), *images, "--img-size", "96", "--json", "--top-k", "2"]) == 0
    by_folder = top(capsys.readouterr().out)
    assert main(["predict", "flowformer", *images, "--checkpoint", weights, "--img-size", "96", "--json", "--top-k",
                 "2", "--model-kwargs", *TINY[1:], "num_classes=6"]) == 0
    assert top(capsys.readouterr().out) == by_folder and len(by_folder) == 3

    path = tmp_path / "flow96.onnx"
    assert main(["export", "flowformer", "-o", str(path), "--img-size", "96", "--checkpoint", weights, "--exporter",
                 "torchscript", "--model-kwargs", *TINY[1:], "num_classes=6"]) == 0
    assert float(capsys.readouterr().out.strip().rsplit("=", 1)[1]) < 1e-4
    # the graph is the 64 px weights with the 16x16 position grid resampled to 24x24 (timm's bicubic), run at 96 px
    source = load_file(weights)
    source["pos_embed"] = resample_abs_pos_embed(source["pos_embed"], new_size=(24, 24), old_size=(16, 16),
                                                 num_prefix_tokens=0)
    expected = timm.create_model("flowformer", img_size=96, num_classes=6, **TINY_KWARGS).eval()
    expected.load_state_dict(source)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})[:1]
    with torch.no_grad():
        assert float((torch.from_numpy(onnx_out) - expected(x)).abs().max()) < 1e-4

    row = bench_model("flowformer", batch=1, img_size=96, warmup=0, iters=1, model_kwargs=TINY_KWARGS)
    assert row.error is None and row.img_size == 96 and row.gflops > 0 and row.infer_img_s > 0
    # a size the model cannot take is that model's row error (naming the sizes it can), not the end of the run
    row = bench_model("flowformer", batch=1, img_size=30, warmup=0, iters=1, model_kwargs=TINY_KWARGS)
    assert row.error.startswith("UserError: --img-size 30: Flowformer: img_size must be") and row.params_m is None


def test_a_size_the_model_cannot_take_is_one_line(capsys):
    """--img-size the architecture cannot take: the CLI's one line naming the sizes it can, exit 2, no traceback."""
    from attnzoo.cli import main

    assert main(["export", "agent_pvt_tiny", "--img-size", "72", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("zoo: error: --img-size 72: AgentPVT cannot take img_size=72: sizes are multiples of 32 from 32 "
                   "(e.g. 224, 288, 384)")
