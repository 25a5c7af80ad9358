"""attnzoo.tasks.measure, the one measuring harness of zoo bench and tools/benchmark.py."""

from __future__ import annotations

import json

import pytest
import torch

from attnzoo.tasks import measure


def test_time_call_is_the_median_in_milliseconds_after_the_warmup():
    calls = []
    assert measure.time_call(lambda: calls.append(1), "cpu", warmup=2, repeats=3) >= 0
    assert len(calls) == 5
    assert measure.time_call(lambda: sum(range(10_000)), "cpu", 0, 1, cpu_clock="process") >= 0
    with pytest.raises(ValueError, match="cpu_clock"):
        measure.time_call(lambda: None, "cpu", 0, 1, cpu_clock="gpu")


def test_cpu_peak_is_the_allocation_above_what_was_live():
    held = torch.ones(1 << 20)  # live before: not counted

    def step():
        return held + torch.ones(1 << 20)  # two 4 MiB temporaries at once

    peak = measure.peak_memory_mib(step, "cpu")
    assert 4 <= peak <= 8.5
    result = measure.measure_step(step, "cpu", 0, 1)
    assert result.ms >= 0 and result.peak_mib == pytest.approx(peak)


def test_markdown_json_and_labels(tmp_path):
    table = measure.markdown_table(["a", "b"], [("x", None), (1.5, measure.fmt(2.0, 1))], align="lr", missing="–")
    assert table.splitlines() == ["| a | b |", "|---|---:|", "| x | – |", "| 1.5 | 2.0 |"]
    assert measure.fmt(None) == "-" and measure.fmt(float("nan")) == "nan" and measure.fmt(1 / 3, 2) == "0.33"
    measure.write_json(tmp_path / "r.json", {"path": tmp_path}, indent=2)
    assert json.loads((tmp_path / "r.json").read_text()) == {"path": str(tmp_path)}
    env = measure.environment("cpu")
    assert env["torch"] == torch.__version__
    assert measure.device_label(env, "cpu").startswith("CPU ") and measure.machine_label("cpu").endswith("threads")
    assert measure.process_peak_rss_mib() > 0


def test_plots_are_png(tmp_path):
    measure.plot_bars(tmp_path / "bars.png", "t", ["g1", "g2"], {"a": {"ms@g1": 1.0, "ms@g2": 2.0}}, [("ms", "ms")])
    points = [measure.ScatterPoint("m", "fam", 10.0, 80.0), measure.ScatterPoint("p", "peer", 5.0, None, square=True)]
    measure.plot_throughput_vs_top1(tmp_path / "scatter.png", points, xlabel="img/s", title="t")
    for name in ("bars.png", "scatter.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
