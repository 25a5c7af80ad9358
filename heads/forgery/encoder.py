"""FakeReasoning's dual-branch visual encoder: frozen high-level (CLIP) and low-level (DINOv2) branches, one projector
each into the language model's width, and the Forgery-Aware Feature Fusion on top.

As in the official code (PRIS-CV/FakeReasoning, ``multimodal_encoder/clip_encoder.py``, ``dino_encoder.py``,
``llava_arch.py``, ``train/train.py``):

* the image is padded to a square with the CLIP mean colour, resized to 336 and CLIP-normalised;
* quirk kept: the *same* CLIP-normalised tensor feeds both branches (the official DINO tower reuses CLIP's processor);
* high-level branch: CLIP ViT-L/14-336, output of the penultimate block (``hidden_states[-2]``), CLS dropped;
* low-level branch: DINOv2 ViT-L/14, last block output *before* the final norm (``x_prenorm``), CLS dropped, and the
  last block's self-attention probabilities (batch, 16, 577, 577), CLS included (the fusion drops it);
* both frozen and run without gradients; projectors are ``mlp2x_gelu`` (Linear -> GELU -> Linear), one per branch.

Branches are arguments. Any module returning :class:`BranchOutput` works; adapters are given for open_clip vision
towers (:class:`OpenCLIPTokens`), timm ViTs with their attention map (:class:`TimmViTTokens`) and any timm / zoo
backbone with ``features_only`` (:class:`TimmFeatureTokens`, e.g. a BiFormer as the low-level branch). A branch
without an attention map makes the fusion run unbiased.

Known difference: timm's DINOv2 resamples its 37x37 position embedding to the 336 px grid once at load time; the
official DINOv2 interpolates at run time (bicubic with a 0.1 offset). Token features differ slightly from the
official ones for the same weights; the architecture and the weights are the same.

open_clip and timm are imported inside the functions that need them, so ``import attnzoo.heads`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .fusion import ForgeryAwareFusion

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "BranchOutput",
    "DualBranchEncoder",
    "FakeReasoningImageProcessor",
    "OpenCLIPTokens",
    "TimmFeatureTokens",
    "TimmViTTokens",
    "build_projector",
    "check_image_batch",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Published weights (loaded only when asked; never in tests).
CLIP_L14_336 = ("ViT-L-14-336", "openai")  # open_clip name + tag of openai/clip-vit-large-patch14-336
DINOV2_L14 = "vit_large_patch14_dinov2.lvd142m"  # timm name of dinov2_vitl14_pretrain.pth


@dataclass
class BranchOutput:
    """Patch tokens (B, N, C) and, when the branch has one, its attention map (B, heads, N+1, N+1) with CLS first."""

    tokens: torch.Tensor
    attn_map: torch.Tensor | None = None


def check_image_batch(images: torch.Tensor, min_side: int) -> None:
    """Loud errors for what the encoders cannot read: wrong rank, non-RGB channels, images too small."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            f"images must be a float tensor (batch, 3, height, width); got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
        )
    if images.shape[1] != 3:
        raise ValueError(
            f"images must be RGB (3 channels); got {images.shape[1]} channels. Convert them first, e.g. "
            "PIL.Image.convert('RGB'), or repeat a grey channel three times."
        )
    if min(images.shape[-2:]) < min_side:
        raise ValueError(
            f"images of {tuple(images.shape[-2:])} px are smaller than the {min_side} px this model needs; "
            "use larger images (the processor pads and resizes them to the model's input size)."
        )


class FakeReasoningImageProcessor:
    """PIL / uint8 RGB image -> (3, size, size) tensor: pad to square with the mean colour, resize (bicubic), normalise.

    Mirrors LLaVA's ``image_aspect_ratio='pad'`` path + CLIPImageProcessor (resize 336, centre crop 336, /255,
    CLIP mean/std). ``min_side`` refuses images too small to carry forensic evidence.
    """

    def __init__(self, size: int = 336, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, min_side: int = 32):
        self.size = size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.min_side = min_side

    def _to_pil(self, image):
        from PIL import Image

        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                raise ValueError(
                    f"image mode is {image.mode!r}, not 'RGB'; convert it first with image.convert('RGB') "
                    "(a forensic model must not guess how to drop alpha or expand palettes)."
                )
            return image
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 array (height, width, 3); got shape {array.shape} dtype {array.dtype}"
            )
        return Image.fromarray(array)

    def pad_to_square(self, image):
        from PIL import Image

        width, height = image.size
        if width == height:
            return image
        side = max(width, height)
        background = tuple(int(m * 255) for m in self.mean)  # official: tuple(int(x*255) for x in image_mean)
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        image = self._to_pil(image)
        if min(image.size) < self.min_side:
            raise ValueError(
                f"image of {image.size[0]}x{image.size[1]} px is smaller than min_side={self.min_side} px; "
                "forensic traces do not survive that; use the original resolution"
            )
        image = self.pad_to_square(image).resize((self.size, self.size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


class _FrozenBranch(nn.Module):
    """A frozen feature extractor: no gradients, always in eval mode (the official towers are frozen)."""

    def _freeze(self, module: nn.Module) -> None:
        module.requires_grad_(False)
        module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for child in self.children():
            child.eval()
        return self


class OpenCLIPTokens(_FrozenBranch):
    """Patch tokens of one block of an open_clip vision transformer (default: penultimate), CLS dropped.

    ``layer=-2`` is LLaVA's ``mm_vision_select_layer=-2``: the output of the second-to-last residual block,
    before ``ln_post``.
    """

    def __init__(self, visual: nn.Module, layer: int = -2):
        super().__init__()
        if not hasattr(visual, "forward_intermediates") or not hasattr(visual, "transformer"):
            raise TypeError("OpenCLIPTokens needs an open_clip VisionTransformer (model.visual)")
        self.visual = visual
        num_blocks = len(visual.transformer.resblocks)
        self.block_index = layer % num_blocks
        self.out_dim = visual.transformer.width
        self.has_attention_map = False
        self._freeze(self.visual)

    @classmethod
    def from_pretrained(cls, name: str = CLIP_L14_336[0], pretrained: str = CLIP_L14_336[1], layer: int = -2):
        """Real weights by their published name (downloads through open_clip; not used in tests)."""
        import open_clip

        model = open_clip.create_model(name, pretrained=pretrained)
        return cls(model.visual, layer=layer)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BranchOutput:
        out = self.visual.forward_intermediates(
            images, indices=[self.block_index], stop_early=True, intermediates_only=True, output_fmt="NLC"
        )
        return BranchOutput(out["image_intermediates"][0])


class TimmViTTokens(_FrozenBranch):
    """A timm VisionTransformer: last block output before the final norm (patch tokens) + that block's attention map.

    The map is recomputed from the last block's attention input (its qkv, q/k norms and scale) — the softmax
    probabilities the block used, (B, heads, N+1, N+1), CLS first. ``with_attention=False`` skips it.
    """

    def __init__(self, model: nn.Module, with_attention: bool = True):
        super().__init__()
        if not hasattr(model, "blocks") or not hasattr(model, "forward_intermediates"):
            raise TypeError("TimmViTTokens needs a timm VisionTransformer (blocks + forward_intermediates)")
        self.model = model
        self.out_dim = model.embed_dim
        self.has_attention_map = with_attention
        if with_attention and getattr(model, "num_prefix_tokens", 1) != 1:
            raise ValueError(
                f"the fusion drops one CLS row/column from the attention map, but this ViT has "
                f"{model.num_prefix_tokens} prefix tokens (registers?); use a ViT with only a CLS token "
                "(e.g. vit_large_patch14_dinov2, not *_reg4_*) or with_attention=False"
            )
        self._freeze(self.model)

    @classmethod
    def from_pretrained(cls, name: str = DINOV2_L14, img_size: int = 336, with_attention: bool = True):
        """Real weights by their published name (downloads through timm; not used in tests)."""
        import timm

        return cls(timm.create_model(name, pretrained=True, img_size=img_size), with_attention=with_attention)

    @staticmethod
    def _attention_probs(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, _ = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BranchOutput:
        last_attn = self.model.blocks[-1].attn
        captured: list[torch.Tensor] = []
        handle = None
        if self.has_attention_map:
            handle = last_attn.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            tokens = self.model.forward_intermediates(
                images, indices=[len(self.model.blocks) - 1], norm=False, output_fmt="NLC", intermediates_only=True
            )[0]
        finally:
            if handle is not None:
                handle.remove()
        attn_map = self._attention_probs(last_attn, captured[0]) if self.has_attention_map else None
        return BranchOutput(tokens, attn_map)


class TimmFeatureTokens(_FrozenBranch):
    """Any timm / zoo backbone with ``features_only``: one feature map (default: the last) flattened to tokens.

    No attention map: hierarchical backbones (BiFormer, PoolFormer, a CNN) expose none, so the fusion runs unbiased.
    """

    def __init__(self, model: nn.Module, feature_index: int = -1):
        super().__init__()
        if not hasattr(model, "feature_info"):
            raise TypeError("TimmFeatureTokens needs a features_only timm model (timm.create_model(..., features_only=True))")
        self.model = model
        self.feature_index = feature_index
        self.out_dim = model.feature_info.channels()[feature_index]
        self.has_attention_map = False
        self._freeze(self.model)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BranchOutput:
        feature = self.model(images)[self.feature_index]
        if feature.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) feature map, got {tuple(feature.shape)}")
        if feature.shape[1] != self.out_dim and feature.shape[-1] == self.out_dim:
            feature = feature.permute(0, 3, 1, 2)  # NHWC feature maps (some zoo backbones) -> NCHW
        return BranchOutput(feature.flatten(2).transpose(1, 2))


def build_projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """LLaVA's ``mlp2x_gelu`` projector: Linear -> GELU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class DualBranchEncoder(nn.Module):
    """High- and low-level branches -> projectors -> Forgery-Aware Feature Fusion -> image tokens (B, N, width).

    Args:
        high_level: branch giving the query tokens (CLIP in the paper).
        low_level: branch giving the key/value tokens and, if it has one, the attention map (DINOv2 in the paper).
        width: the language model's hidden size.
        fusion_heads, fusion_ffn, dropout, bias_hidden: see :class:`ForgeryAwareFusion` (paper: 16, 4*width, 0.1, 32).
        min_side: smallest image side accepted by :meth:`forward`.
    """

    def __init__(
        self,
        high_level: nn.Module,
        low_level: nn.Module,
        width: int,
        fusion_heads: int = 16,
        fusion_ffn: int | None = None,
        dropout: float = 0.1,
        bias_hidden: int = 32,
        map_heads: int | None = None,
        min_side: int = 14,
    ):
        super().__init__()
        self.high_level = high_level
        self.low_level = low_level
        self.high_projector = build_projector(high_level.out_dim, width)
        self.low_projector = build_projector(low_level.out_dim, width)
        if map_heads is None:
            blocks = getattr(getattr(low_level, "model", None), "blocks", None)
            map_heads = blocks[-1].attn.num_heads if blocks is not None else fusion_heads
        self.fusion = ForgeryAwareFusion(width, fusion_heads, fusion_ffn, dropout, map_heads, bias_hidden)
        self.width = width
        self.min_side = min_side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_image_batch(images, self.min_side)
        high = self.high_level(images)
        low = self.low_level(images)
        dtype = self.high_projector[0].weight.dtype
        queries = self.high_projector(high.tokens.to(dtype))
        keys_values = self.low_projector(low.tokens.to(dtype))
        attn_map = None if low.attn_map is None else low.attn_map.to(dtype)
        return self.fusion(queries, keys_values, attn_map)
