"""The README's "Input sizes" table, measured: every cell of every family on a tiny configuration of it.

The table is parsed from README.md and is the expectation: a "yes" cell must work as the column says, a "no" cell
must be refused with a TypeError or ValueError (one clear error, not a failure deep inside). A family or column
added to one side only fails ``test_readme_table_lists_every_family_and_column``, so README and tests cannot drift.

Columns (B = 224, the released size; N = 288, an official high-resolution size of Agent-Swin):
- ``img_size=``: built at N, a forward of an N x N image gives the logits.
- ``set_input_size``: a B model moved to N in place keeps every weight that does not depend on the size, has the
  shapes of a model built at N, and runs at N.
- ``dynamic_img_size=True``: a B model built with it runs an N image and equals ``set_input_size(N)``.
- ``224 -> N checkpoint``: a B model's state dict loads strictly into an N model through the family filter, and the
  N model equals the B model after ``set_input_size(N)``.
- ``any size per call``: a B model (with the dense-task options of the family's row) returns the feature maps of
  a 192 x 256 input at its feature_info strides (forward_intermediates) without being rebuilt.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import timm
import torch

import attnzoo.backbones  # noqa: F401  (registers the families)
from attnzoo.weights import checkpoint_filter_fn_for

README = Path(__file__).resolve().parents[2] / "README.md"
B, N = 224, 288
DENSE = (192, 256)

# The README rows, in order: timm name and a tiny configuration (widths/depths as the parity fixtures use them).
FAMILIES = {
    "BiFormer": ("biformer_tiny", dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 48, 64), qk_dims=(16, 32, 48, 64),
                                       head_dim=16)),
    "Agent-PVT": ("agent_pvt_tiny", dict(embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1),
                                         mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1))),
    "Agent-Swin": ("agent_swin_tiny", dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))),
    "Agent-CSWin": ("agent_cswin_tiny", dict(embed_dim=8, depth=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))),
    "Agent-DeiT": ("agent_deit_tiny", dict(embed_dim=48, depth=2, num_heads=3)),
    "Flowformer": ("flowformer", dict(embed_dim=(24, 48, 72, 96), depth=(1, 1, 1, 1))),
    "SLAB / PRepBN PVT": ("slab_pvt_tiny", dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8),
                                                depths=(1, 1, 1, 1))),
    "SLAB / PRepBN Swin": ("slab_swin_tiny", dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))),
    "SLAB CSWin": ("slab_cswin_tiny", dict(embed_dim=16, depth=(1, 1, 1, 1), num_heads=(2, 4, 8, 16))),
    "SLAB / PRepBN DeiT": ("slab_deit_tiny", dict(embed_dim=48, depth=2, num_heads=3)),
    "PoolFormer v1 (official head)": ("poolformer_s12_official", dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64))),
}
# What "with ..." in the last column asks for; a family without an entry runs any size as built.
DENSE_KWARGS = {family: dict(dynamic_img_size=True) for family in
                ("Agent-PVT", "Agent-DeiT", "Flowformer", "SLAB / PRepBN PVT", "SLAB / PRepBN DeiT")}
COLUMNS = ["img_size", "set_input_size", "dynamic_img_size", "load", "dense"]
HEADER_WORDS = ["`img_size=`", "`set_input_size`", "`dynamic_img_size=True`", "224 → N checkpoint",
                "any size per call"]


def _readme_table() -> tuple[list[str], dict[str, list[str]]]:
    """(header cells, {family: cells}) of the first table in README.md's "## Input sizes" section."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Input sizes\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Input sizes' section"
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    header, body = cells[0], cells[2:]
    return header, {row[0]: row[1:] for row in body}


HEADER, TABLE = _readme_table()


def _claim(family: str, column: str) -> bool:
    cell = TABLE[family][COLUMNS.index(column)]
    word = cell.split()[0].strip(",").lower() if cell else ""
    assert word in ("yes", "no"), f"README cell {family} / {column} must start with yes or no: {cell!r}"
    return word == "yes"


def test_readme_table_lists_every_family_and_column():
    assert HEADER[0] == "family" and len(HEADER) == 1 + len(COLUMNS)
    assert all(header.startswith(words) for header, words in zip(HEADER[1:], HEADER_WORDS)), HEADER
    assert list(TABLE) == list(FAMILIES)
    assert all(len(cells) == len(COLUMNS) for cells in TABLE.values())


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


_BUILT: dict[str, torch.nn.Module] = {}


def _build(family: str, **kwargs) -> torch.nn.Module:
    name, tiny = FAMILIES[family]
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10, **tiny, **kwargs).eval()


def _at_b(family: str) -> torch.nn.Module:
    """The family's model built at B with seeded weights (one per family; callers copy it before changing it)."""
    if family not in _BUILT:
        _BUILT[family] = _build(family)
    return _BUILT[family]


def _image(size, channels: int = 3) -> torch.Tensor:
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(1))


def _size_dependent(model: torch.nn.Module, other: torch.nn.Module) -> set[str]:
    """State-dict keys whose shapes differ between two builds of one architecture at two sizes."""
    mine, theirs = model.state_dict(), other.state_dict()
    return {k for k in mine if k in theirs and mine[k].shape != theirs[k].shape}


_MOVED: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}


def _moved_to_n(family: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A copy of the B model after ``set_input_size(N)``, and its logits on the N image (one per family)."""
    if family not in _MOVED:
        model = copy.deepcopy(_at_b(family))
        model.set_input_size(img_size=N)
        with torch.no_grad():
            _MOVED[family] = model, model(_image(N))
    return _MOVED[family]


def _meta_build(family: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return _build(family, **kwargs)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def measure_img_size(family: str) -> None:
    model = _build(family, img_size=N)
    with torch.no_grad():
        assert model(_image(N)).shape == (1, 10)


def measure_set_input_size(family: str) -> None:
    model, logits = _moved_to_n(family)
    at_n = _meta_build(family, img_size=N)  # shapes only
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in at_n.state_dict().items()}
    before = _at_b(family).state_dict()
    changed = _size_dependent(_at_b(family), at_n)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k in after and k not in changed)
    assert logits.shape == (1, 10) and bool(torch.isfinite(logits).all())


def measure_dynamic_img_size(family: str) -> None:
    model = _build(family, dynamic_img_size=True)
    model.load_state_dict(_at_b(family).state_dict(), strict=True)
    with torch.no_grad():
        _close(model(_image(N)), _moved_to_n(family)[1])


def measure_load(family: str) -> None:
    at_n = _build(family, img_size=N)
    filter_fn = checkpoint_filter_fn_for(at_n)
    assert filter_fn is not None
    at_n.load_state_dict(filter_fn(copy.deepcopy(_at_b(family).state_dict()), at_n), strict=True)
    with torch.no_grad():
        _close(at_n(_image(N)), _moved_to_n(family)[1])


def measure_dense(family: str) -> None:
    model = _build(family, **DENSE_KWARGS.get(family, {}))
    with torch.no_grad():
        maps = model.forward_intermediates(_image(DENSE), intermediates_only=True)
    strides = [info["reduction"] for info in model.feature_info]  # 4/8/16/32, or 16 per block for the DeiTs
    assert [tuple(m.shape[-2:]) for m in maps] == [(DENSE[0] // s, DENSE[1] // s) for s in strides]


MEASURES = {"img_size": measure_img_size, "set_input_size": measure_set_input_size,
            "dynamic_img_size": measure_dynamic_img_size, "load": measure_load, "dense": measure_dense}


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_readme_cell(family, column):
    if _claim(family, column):
        MEASURES[column](family)
    else:
        with pytest.raises((TypeError, ValueError)):
            MEASURES[column](family)
