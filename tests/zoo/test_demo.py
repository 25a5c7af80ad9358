"""The demo: a deterministic picture, and a list of steps later issues can extend."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from zoo_helpers import SMALL_MODEL, card_fields, write_card

from zoo import demo


def test_demo_image_is_deterministic_and_shipped():
    first, second = np.asarray(demo.draw_demo_image()), np.asarray(demo.draw_demo_image())
    assert first.shape == (256, 256, 3) and np.array_equal(first, second)
    assert not np.array_equal(first, np.asarray(demo.draw_demo_image(seed=1)))
    assert demo.DEMO_IMAGE.is_file() and demo.demo_image().size == (256, 256)


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
