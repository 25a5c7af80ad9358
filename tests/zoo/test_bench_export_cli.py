"""`zoo bench` and `zoo export` from the command line (in-process through zoo.cli.main)."""

from __future__ import annotations

import json

import pytest
import torch

from zoo.cli import main


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
