"""Issue 35, item 5: `zoo train --resume` continues the run's own recipe (the size, the model arguments and the rest
train_state.pth records); a flag that contradicts it is one line; a state that does not fit names the right fix.

The model is a Flowformer shrunk through --model-kwargs (one block per stage, widths 24-96) at 32 px: its stage-1
position embedding depends on the input size, so a resume at another size cannot load its own state. An epoch is one
step over 6 training images of 3 classes.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from attnzoo.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import make_imagefolder  # noqa: E402

TINY = ["--model-kwargs", "embed_dim=(24,48,72,96)", "depth=(1,1,1,1)"]
FAST = ["--batch-size", "6", "--workers", "0", "--no-aug"]  # one step per epoch


def _train(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "flowformer", "--data", str(data), "--out", str(out), "--epochs", str(epochs), *FAST, *extra]


def _run(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def _config(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_imagefolder.make(tmp_path_factory.mktemp("shapes"), num_train=2, num_val=1, size=32, num_classes=3,
                                 seed=0)


@pytest.fixture(scope="module")
def run_at_32(shapes, tmp_path_factory) -> Path:
    """One epoch at 32 px with a non-default lr; the folder is copied by each test that resumes it."""
    out = tmp_path_factory.mktemp("runs") / "at32"
    code, _ = _run(_train(shapes, out, 1, "--img-size", "32", "--lr", "2e-3", *TINY))
    assert code == 0
    return out


@pytest.fixture
def run(run_at_32, tmp_path) -> Path:
    return Path(shutil.copytree(run_at_32, tmp_path / "run"))


def test_resume_without_flags_continues_at_the_runs_size_and_recipe(run, shapes):
    # No --img-size, no --model-kwargs; --lr as the run's (a given flag that agrees is no contradiction).
    code, stdout = _run(_train(shapes, run, 2, "--resume", "--lr", "0.002"))
    assert code == 0, stdout
    config = _config(run)
    assert config["model_args"]["img_size"] == [32, 32] and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["model_args"]["embed_dim"] == [24, 48, 72, 96]
    state = torch.load(run / "train_state.pth", weights_only=True)
    assert state["epoch"] == 2 and state["recipe"]["img_size"] == 32 and state["recipe"]["lr"] == 2e-3
    assert "lr 0.002" in (run / "README.md").read_text()  # the recipe the card states is the run's


def test_a_flag_that_contradicts_the_recipe_is_one_line(run, shapes, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(_train(shapes, run, 2, "--resume", "--img-size", "64", "--lr", "1e-3")) == EXIT_USER_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"zoo: error: {run}: --resume continues the run's own recipe, and --img-size 64 (the run: "
                    "--img-size 32); --lr 0.001 (the run: --lr 0.002) contradict it; drop those flags to continue the "
                    f"run as it was, or start a new run from its weights (--pretrained {run} --out NEW).")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing rewritten
    assert main(_train(shapes, run, 2, "--resume", "--model-kwargs", "depth=(1,1,2,1)")) == EXIT_USER_ERROR
    assert "--model-kwargs depth=(1, 1, 2, 1) (the run: --model-kwargs embed_dim=" in capsys.readouterr().err


def test_a_run_without_a_recorded_recipe_resumes_from_its_config(run, shapes, capsys):
    """Runs written before train_state.pth recorded the recipe: the size and model arguments of config.json."""
    state = torch.load(run / "train_state.pth", weights_only=True)
    del state["recipe"]
    torch.save(state, run / "train_state.pth")
    assert main(_train(shapes, run, 2, "--resume", "--img-size", "64")) == EXIT_USER_ERROR
    assert "--img-size 64 (the run: --img-size 32) contradicts it" in capsys.readouterr().err
    code, stdout = _run(_train(shapes, run, 2, "--resume"))
    assert code == 0, stdout
    assert _config(run)["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_a_state_that_does_not_fit_names_the_fix(run, shapes, capsys):
    """A train_state.pth of another model (here: its weights at 64 px) is not the user's flags' fault."""
    state = torch.load(run / "train_state.pth", weights_only=True)
    state["model"]["pos_embed"] = torch.zeros(1, 16 * 16, 24)
    torch.save(state, run / "train_state.pth")
    assert main(_train(shapes, run, 2, "--resume")) == EXIT_USER_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "train_state.pth does not fit the model the run's recipe builds (MODEL flowformer; --model-kwargs " in line
    assert "--img-size 32" in line and f"start again in another --out (or with --pretrained {run}" in line
    assert "pass the same MODEL" not in line
