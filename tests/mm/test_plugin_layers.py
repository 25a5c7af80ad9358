"""attnzoo.layers as mmcv plug-ins in OpenMMLab ResNets (issue 18).

The issue's own plug-in dict builds in mmdet's ResNet-50 and, with gamma at its initial 0, leaves the network's
function unchanged; the synthetic-data variant of the plug-in detection config lowers its training loss in a few
iterations on the CPU.
"""

from __future__ import annotations

import torch
from mm_cycle import CONFIGS
from mmengine.config import Config
from mmengine.registry import init_default_scope

ISSUE_PLUGINS = [dict(cfg=dict(type="BiLevelRoutingAttention2d"), stages=(False, True, True, True),
                      position="after_conv2")]
SYNTH_CONFIG = CONFIGS / "det/faster-rcnn_r50-bra-c3-c5_fpn_coco-synth.py"


def test_issue_plugin_dict_builds_in_mmdet_resnet50():
    from mmdet.registry import MODELS

    import attnzoo.openmmlab  # noqa: F401  (configs import it through custom_imports)
    from attnzoo.layers import BiLevelRoutingAttention2d

    init_default_scope("mmdet")
    torch.manual_seed(0)
    plain = MODELS.build(dict(type="ResNet", depth=50))
    with_bra = MODELS.build(dict(type="ResNet", depth=50, plugins=ISSUE_PLUGINS))
    plain.eval()  # mmdet's ResNet.train() returns None, so no chaining
    with_bra.eval()
    layers = [m.layer for m in with_bra.modules() if isinstance(getattr(m, "layer", None), BiLevelRoutingAttention2d)]
    assert [layer.dim for layer in layers] == [128] * 4 + [256] * 6 + [512] * 3  # planes of stages 2-4
    missing, unexpected = with_bra.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".bra." in key for key in missing)
    x = torch.randn(1, 3, 72, 100)  # stage maps 18x25 ... 3x4: not multiples of the 8x8 regions
    with torch.no_grad():
        for got, expected in zip(with_bra(x), plain(x)):
            torch.testing.assert_close(got, expected)  # gamma starts at 0: the pretrained function is unchanged
        for module in with_bra.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.5)
        assert not torch.allclose(with_bra(x)[-1], plain(x)[-1])  # and the plug-ins are in the path


def test_synthetic_plugin_config_lowers_the_loss(coco_synth):
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner

    import attnzoo.openmmlab  # noqa: F401

    torch.set_num_threads(1)
    cfg = Config.fromfile(str(SYNTH_CONFIG))
    cfg.train_dataloader.dataset.data_root = f"{coco_synth}/"
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.pipeline[3].prob = 0.0  # the same two images every step: the loss can only fall
    cfg.train_dataloader.sampler.shuffle = False
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    losses = []
    for _ in range(8):
        log_vars = model.train_step(batch, optim_wrapper)
        losses.append(log_vars["loss"].item())
    print("\nsynthetic BRA-plug-in Faster R-CNN, loss per step:", " ".join(f"{loss:.3f}" for loss in losses))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0], losses


def test_slab_plugin_builds_in_mmdet_resnet50():
    """SimplifiedLinearAttention2d as a plug-in in stage 4 of mmdet's ResNet-50: 512-channel layers, unchanged at
    gamma 0, in the path once gamma moves."""
    from mmdet.registry import MODELS

    import attnzoo.openmmlab  # noqa: F401
    from attnzoo.layers import SimplifiedLinearAttention2d

    init_default_scope("mmdet")
    torch.manual_seed(0)
    plugins = [dict(cfg=dict(type="SimplifiedLinearAttention2d"), stages=(False, False, False, True),
                    position="after_conv2")]
    plain = MODELS.build(dict(type="ResNet", depth=50))
    with_slab = MODELS.build(dict(type="ResNet", depth=50, plugins=plugins))
    plain.eval()
    with_slab.eval()
    layers = [m.layer for m in with_slab.modules() if isinstance(getattr(m, "layer", None), SimplifiedLinearAttention2d)]
    assert [layer.dim for layer in layers] == [512] * 3
    missing, unexpected = with_slab.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".slab_attention." in key for key in missing)
    x = torch.randn(1, 3, 72, 100)
    with torch.no_grad():
        torch.testing.assert_close(with_slab(x)[-1], plain(x)[-1])
        for module in with_slab.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.5)
        assert not torch.allclose(with_slab(x)[-1], plain(x)[-1])
