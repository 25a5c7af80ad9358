"""The demo: a deterministic picture, and a list of steps later issues can extend."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from zoo_helpers import SMALL_MODEL, card_fields, write_card

from attnzoo.tasks import demo


def test_demo_image_is_deterministic_and_shipped():
    first, second = np.asarray(demo.draw_demo_image()), np.asarray(demo.draw_demo_image())
    assert first.shape == (256, 256, 3) and np.array_equal(first, second)
    assert not np.array_equal(first, np.asarray(demo.draw_demo_image(seed=1)))
    assert demo.DEMO_IMAGE.is_file() and demo.demo_image().size == (256, 256)
    assert demo.DEMO_IMAGE.parent.name == "assets" and demo.DEMO_IMAGE.parent.parent.name == "zoo"


def test_steps_run_in_order_and_can_be_appended(card_dir, monkeypatch):
    write_card(card_dir, card_fields())
    seen = []
    steps = [*demo.DEMO_STEPS, demo.DemoStep("a later issue's step", lambda console, options: seen.append(options))]
    monkeypatch.setattr(demo, "DEMO_STEPS", steps)
    console = Console(record=True, width=160)
    demo.run_demo(pattern=SMALL_MODEL, console=console, max_gflops=1.0, xray_minutes=0)
    text = console.export_text()
    assert text.index("Model zoo") < text.index("a later issue's step")
    assert SMALL_MODEL in text and seen[0].pattern == SMALL_MODEL and seen[0].max_gflops == 1.0
    assert text.index("Model zoo") < text.index("X-ray") and "X-ray step skipped" in text


def test_xray_step_trains_fixed_iterations_under_a_guard_and_ends_with_zoo_xray_detect(tmp_path):
    """One small run of the X-ray step (64 px scans, a handful of images): a time guard far shorter than the planned
    1000 iterations stops training early and says so; the step still evaluates and ends with `zoo xray detect` on
    held-out bags, whose summary lines and files it shows."""
    import json

    import pytest

    pytest.importorskip("mmdet")
    from attnzoo.tasks.xray import demo as xray_demo

    lines = []
    result = xray_demo.run_xray_demo(tmp_path / "xray", iterations=1000, guard_minutes=0.01, num_train=6,
                                     num_test=2, image_size=64, seed=1, log=lines.append)
    text = "\n".join(lines)
    done = result["iterations"]
    assert result["planned_iterations"] == 1000 and 1 <= done < 1000 and result["stopped_early"]
    assert f"TIME GUARD: training stopped after {done} of 1000 iterations" in text
    assert "training 1000 iterations (seed 1)" in text and f"trained {done} of 1000 iterations; train.py took" in text
    command = next(line for line in lines if line.startswith("$ zoo xray detect "))
    assert str(result["checkpoint"]) in command and "held_out_bags" in command
    bags = sorted(p.name for p in (tmp_path / "xray" / "held_out_bags").iterdir())
    assert bags == ["easy_00000.png", "easy_00001.png", "hard_00000.png", "hard_00001.png", "hidden_00000.png",
                    "hidden_00001.png"]
    for bag in bags:  # a summary line per bag, a JSON and a picture per bag
        assert any(line.strip().startswith(f"{bag}: ") for line in lines), bag
        assert (tmp_path / "xray" / "detect" / bag).is_file()
        assert json.loads((tmp_path / "xray" / "detect" / bag.replace(".png", ".json")).read_text())["image"]
    assert result["detect"]["images"] == 6 and set(result["trained"]) >= {"easy", "hard", "hidden", "overall"}


def test_xray_demo_config_and_untrained_checkpoint_are_library_functions(tmp_path):
    """The demo's config (this run's data root and seed) and its seeded untrained detector, written in-process."""
    import pytest

    pytest.importorskip("mmdet")
    from mmengine.config import Config

    from attnzoo.openmmlab import RUNNER_CHECKPOINT_GLOBALS
    from attnzoo.tasks.xray.demo import save_untrained_checkpoint, write_demo_config
    from attnzoo.weights import compare_state_dicts, read_checkpoint

    root = tmp_path / "data"
    config = write_demo_config(tmp_path / "config.py", root, seed=3)
    cfg = Config.fromfile(str(config))
    assert cfg.randomness.seed == 3 and cfg.train_dataloader.dataset.data_root == f"{root}/"
    assert [d.data_root for d in cfg.test_dataloader.dataset.datasets] == [f"{root}/"] * 3
    assert cfg.test_evaluator.ann_files == {s: f"{root}/annotations/xray_test_{s}.json" for s in ("easy", "hard",
                                                                                                   "hidden")}

    import torch

    before = torch.random.get_rng_state()
    first = read_checkpoint(save_untrained_checkpoint(config, tmp_path / "a.pth", seed=3),
                            extra_globals=RUNNER_CHECKPOINT_GLOBALS)
    second = read_checkpoint(save_untrained_checkpoint(config, tmp_path / "b.pth", seed=3))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is left alone
    assert first["meta"] == {"note": "untrained: seeded initialisation"}
    assert len(first["state_dict"]) > 100 and compare_state_dicts(first["state_dict"], second["state_dict"]).fits
    assert all(torch.equal(v, second["state_dict"][k]) for k, v in first["state_dict"].items())
