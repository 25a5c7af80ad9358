"""`zoo bench` and `zoo export` from the command line (in-process through attnzoo.cli.main)."""

from __future__ import annotations

import json

import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.tasks.bench import bench_model


def test_zoo_bench_writes_json_markdown_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "poolformer_s12", "--batch", "1", "--img-size", "64", "--warmup", "0", "--iters", "1",
               "--train", "--no-peers", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "bench.json").read_text())
    (row,) = data["rows"]
    assert row["name"] == "poolformer_s12" and row["error"] is None
    assert row["params_m"] == pytest.approx(11.92, abs=0.01)
    assert row["gflops"] > 0 and row["infer_img_s"] > 0 and row["train_img_s"] > 0
    assert row["top1"] is not None  # from the card, plotted against throughput
    assert "| poolformer_s12 |" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "poolformer_s12" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_zoo_bench_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "poolformer_s12", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_zoo_export_onnx_reports_the_check(tmp_path, capsys):
    path = tmp_path / "p.onnx"
    rc = main(["export", "poolformer_s12", "--format", "onnx", "-o", str(path), "--input-size", "3", "64", "64"])
    assert rc == 0 and path.stat().st_size > 1_000_000  # the 11.9M weights are in the file
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "exporter=" in line
    diff = float(line.rsplit("=", 1)[1])
    assert diff < 1e-4


def test_zoo_export_unknown_model_exit_2(capsys):
    assert main(["export", "biformer_tinyy"]) == 2
    assert "biformer_tiny" in capsys.readouterr().err


def _with_card(monkeypatch, card):
    """Cards as shipped, with ``card`` in place of the shipped card of the same name (test-only overlay)."""
    import importlib

    cards_module = importlib.import_module(attnzoo.get_card.__module__)
    shipped = cards_module._all_cards
    monkeypatch.setattr(cards_module, "_all_cards", lambda: {**shipped(), card.name: card})


def test_zoo_export_builds_the_card_model(tmp_path, monkeypatch, capsys):
    """``zoo export`` applies the card's model_kwargs: FocalNet-L/XL/H cards set ``normalize_modulator``, which has no
    parameters, so a checkpoint loads strictly into a model built without it and the ONNX file computes another
    function. Here: a copy of the focalnet_tiny_srf card with that argument, seeded weights saved and given as
    --checkpoint; the exported graph must equal the card's model (attnzoo.create_model) in onnxruntime."""
    import onnxruntime as ort
    import yaml
    from safetensors.torch import save_file

    from attnzoo.cards import load_card_file

    name = "focalnet_tiny_srf"
    fields = yaml.safe_load(attnzoo.get_card(name).path.read_text())
    fields["model_kwargs"] = {"normalize_modulator": True}
    (tmp_path / "cards").mkdir()
    card_path = tmp_path / "cards" / f"{name}.yaml"
    card_path.write_text(yaml.safe_dump(fields, sort_keys=False))
    _with_card(monkeypatch, load_card_file(card_path))

    torch.manual_seed(0)
    model = attnzoo.create_model(name).eval()
    assert model.layers[0].blocks[0].modulation.normalize_modulator  # the card's argument reached the model
    with torch.no_grad():  # at timm's init the modulator's scale moves the logits by ~1e-3 only; make it show
        for param_name, param in model.named_parameters():
            if param.dim() > 1 or param_name.endswith("bias"):
                param.normal_(0, 0.05)
    weights = tmp_path / "seeded.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    path = tmp_path / "f.onnx"
    assert main(["export", name, "-o", str(path), "--checkpoint", str(weights), "--input-size", "3", "64", "64",
                 "--exporter", "torchscript"]) == 0
    assert "exporter=torchscript" in capsys.readouterr().out

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})[:1]
    with torch.no_grad():
        eager = model(x[:1])
    diff = float((torch.from_numpy(onnx_out) - eager).abs().max())
    assert diff < 1e-4, f"the exported graph is not the card's model: max |onnx - card model| = {diff:.3g}"


def test_zoo_bench_builds_the_card_model(card_dir, tmp_path):
    """zoo bench builds through attnzoo.create_model: a private card's model_kwargs shape the measured model."""
    from zoo_helpers import SMALL_MODEL, card_fields, write_card

    write_card(card_dir, card_fields(model_kwargs={"num_classes": 10}))
    row = bench_model(SMALL_MODEL, batch=1, img_size=32, warmup=0, iters=1)
    expected = sum(p.numel() for p in attnzoo.create_model(SMALL_MODEL, num_classes=10).parameters()) / 1e6
    assert row.error is None and row.params_m == round(expected, 2)
    assert row.params_m != round(sum(p.numel() for p in attnzoo.create_model(SMALL_MODEL, num_classes=1000).parameters())
                                 / 1e6, 2)
    assert row.infer_peak_mib is not None and row.infer_peak_mib > 0  # CPU: the profiler lower bound
