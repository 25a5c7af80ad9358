"""RelationNet++ (BVR) against the official microsoft/RelationNet2 modules (fixtures: tests/fixtures/bvr_*, float64)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

from attnzoo.heads.detection import (  # noqa: E402
    BVRMultiheadAttention,
    PositionalEncodingLearned,
    PositionalEncodingSine,
    PositionalEncodingSineLearned,
    SimpleBVRTransformer,
    convert_official_bvr_checkpoint,
)

register_all_modules(init_default_scope=False)
TOL = dict(rtol=1e-5, atol=1e-6)


def _close(actual, expected):
    # .double(): FCOS / ATSS cast their box maps with .float(), the official code and mmdet 3 alike
    torch.testing.assert_close(actual.double(), expected.double(), **TOL)


def test_attention_matches_official(parity):
    case = parity("bvr_attention")
    kwargs = case.meta["official_kwargs"]
    module = BVRMultiheadAttention(kwargs["embed_dim"], kwargs["num_heads"]).double().eval()
    module.load_state_dict(case.state_dict, strict=True)
    query, key, rel = (case.inputs[n].double() for n in ("query", "key", "relative"))
    with torch.no_grad():
        out, weights = module(query, key, key, rel)
        module.app_relation = False
        geometry_only, _ = module(query, key, key, rel)
    _close(out, case.outputs["out"])
    _close(weights, case.outputs["weights"])
    _close(geometry_only, case.outputs["out_geometry_only"])


def test_positional_encodings_match_official(parity):
    case = parity("bvr_positional_encoding")
    kw = case.meta["official_kwargs"]
    sine_learned = PositionalEncodingSineLearned(**kw["sine_learned"]).double().eval()
    sine_learned.load_state_dict({k[len("sine_learned."):]: v for k, v in case.state_dict.items()
                                  if k.startswith("sine_learned.")}, strict=True)
    learned = PositionalEncodingLearned(**kw["learned"]).double().eval()
    learned.load_state_dict({k[len("learned."):]: v for k, v in case.state_dict.items() if k.startswith("learned.")},
                            strict=True)
    sine = PositionalEncodingSine(**kw["sine"]).double()
    positions = case.inputs["positions"].double()
    with torch.no_grad():
        _close(sine_learned(positions), case.outputs["sine_learned"])
        _close(sine_learned.pre_compute(), case.outputs["sine_learned_grid"])
        _close(sine(positions), case.outputs["sine"])
        _close(learned(case.inputs["positions8"].double()), case.outputs["learned"])
    # the grid buffer is rebuilt identically (float32 grid from the constructor vs the official one, stored float32)
    rebuilt = PositionalEncodingSineLearned(**kw["sine_learned"]).base_embedding
    torch.testing.assert_close(rebuilt, case.state_dict["sine_learned.base_embedding"], rtol=1e-6, atol=1e-6)


def test_transformer_matches_official(parity):
    case = parity("bvr_transformer")
    module = SimpleBVRTransformer(**case.meta["official_kwargs"]).double().eval()
    module.load_state_dict(case.state_dict, strict=True)
    i = {k: v.double() for k, v in case.inputs.items()}
    levels, groups = range(2), range(2)
    with torch.no_grad():
        out = module([i[f"query_feature.{lvl}"] for lvl in levels], [i[f"query_position.{lvl}"] for lvl in levels],
                     [[i[f"key_feature.{lvl}.{g}"] for g in groups] for lvl in levels],
                     [[i[f"key_position.{lvl}.{g}"] for g in groups] for lvl in levels], case.meta["scale_terms"])
    for lvl in levels:
        _close(out[lvl], case.outputs[f"out.{lvl}"])


@pytest.fixture(scope="module", params=["retina", "fcos", "atss"])
def head_case(request, parity):
    case = parity(f"bvr_{request.param}_head")
    kwargs = dict(case.meta["official_kwargs"])
    head = MODELS.build(dict(type="BVRHead", **kwargs,
                             train_cfg=dict(bbox=None, keypoint=dict(assigner=dict(type="PointKptAssigner")))))
    state = {f"bbox_head.{k}": v for k, v in case.state_dict.items()}  # as in a detector checkpoint
    state = convert_official_bvr_checkpoint(state)
    head.load_state_dict({k[len("bbox_head."):]: v for k, v in state.items()}, strict=True)
    return case, head.double()


def test_head_forward_matches_official(head_case):
    """Classification / regression (/ centerness) maps in train and eval mode, and every keypoint map."""
    case, head = head_case
    feats = [case.inputs[f"feat.{lvl}"].double() for lvl in range(5)]
    names = ("cls_score", "bbox_pred", "centerness")
    with torch.no_grad():
        head.train()
        bbox_outs, kpt_scores, kpt_offsets = head.forward_all(feats)
        head.eval()
        eval_outs = head(feats)
    checked = 0
    for mode, outs in (("train", bbox_outs), ("eval", eval_outs)):
        for name, maps in zip(names, outs):
            for lvl, value in enumerate(maps):
                _close(value, case.outputs[f"{mode}.{name}.{lvl}"])
                checked += 1
    for kpt_type in ("top_left_corner", "bottom_right_corner", "center"):
        for lvl in range(5):
            _close(kpt_scores[kpt_type][lvl], case.outputs[f"kpt_score.{kpt_type}.{lvl}"])
            _close(kpt_offsets[kpt_type][lvl], case.outputs[f"kpt_offset.{kpt_type}.{lvl}"])
    expected = sum(1 for k in case.outputs if k.startswith(("train.", "eval.")))
    assert checked == expected


def test_keypoint_loss_matches_official(head_case):
    """Point-assigner targets + Gaussian focal / smooth L1 losses for the same maps and boxes."""
    case, head = head_case
    feats = [case.inputs[f"feat.{lvl}"].double() for lvl in range(5)]
    boxes = [case.inputs[f"gt_bboxes.{i}"].double() for i in range(2)]
    labels = [torch.tensor(lbl) for lbl in case.meta["gt_labels"]]
    with torch.no_grad():
        head.train()
        _, kpt_scores, kpt_offsets = head.forward_all(feats)
        losses = head.keypoint_head.loss_multihead(kpt_scores, kpt_offsets, boxes, labels)
    for name, value in losses.items():
        _close(value.reshape(1), case.outputs[f"loss.{name}"])
