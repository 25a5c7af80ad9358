"""Lighter forgery-detection heads from the literature, and the augmentation they are trained with.

* :class:`UnivFD` (Ojha et al., CVPR 2023; WisconsinAIVision/UniversalFakeDetect ``models/clip_models.py``): a frozen
  CLIP ViT-L/14 image encoder (the projected 768-d image embedding, ``encode_image``) and one trainable linear layer
  to one logit. Official weights are only the linear layer (``fc_weights.pth``: ``weight``, ``bias``).
* :class:`NPR` (Tan et al., CVPR 2024; chuangchuangtan/NPR-DeepfakeDetection ``networks/resnet.py``): neighbouring
  pixel relationships ``x - up(down(x))`` (nearest, factor 2) scaled by 2/3, into a ResNet-50 truncated after
  layer2 with a 3x3 stride-2 stem, global average pooling and ``fc1`` 512 -> 1. Keys match the official state dict,
  so ``NPR.pth``'s state dict loads strictly (:func:`load_official_npr`).
* :func:`training_augmentation` (albumentations): Gaussian blur (sigma 0-3) and JPEG (quality 30-100), each with
  probability 0.5 (CNNDetection / UnivFD ``--data_aug`` defaults), optional random rescale, then crop and normalise.

Both heads output one logit per image; P(fake) = sigmoid(logit).

Nothing here reads a file: the official weights come in as state dicts. ``attnzoo.tasks.forgery.official`` downloads and
reads them (``load_official_univfd``, ``load_official_npr``: sha256 where published, weights-only reading).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_image_batch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NPR",
    "NPR_URL",
    "UNIVFD_FC_SHA256",
    "UNIVFD_FC_URL",
    "UnivFD",
    "evaluation_transform",
    "load_official_npr",
    "neighbouring_pixel_relationships",
    "recalibrate_batchnorm",
    "training_augmentation",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Published weights (fetched only when asked; never in tests).
UNIVFD_FC_URL = "https://github.com/WisconsinAIVision/UniversalFakeDetect/raw/main/pretrained_weights/fc_weights.pth"
UNIVFD_FC_SHA256 = "477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847"  # of the file in the repo
NPR_URL = "https://github.com/chuangchuangtan/NPR-DeepfakeDetection/raw/main/NPR.pth"  # ForenSynths-trained


class UnivFD(nn.Module):
    """Frozen CLIP image encoder + ``fc`` (embed_dim -> 1)."""

    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def __init__(self, clip_model: nn.Module, embed_dim: int | None = None):
        super().__init__()
        self.clip = clip_model
        self.clip.requires_grad_(False)
        self.clip.eval()
        embed_dim = embed_dim or clip_model.visual.output_dim
        self.fc = nn.Linear(embed_dim, 1)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)  # official trainer: init.normal_(fc.weight, 0, init_gain=0.02)
        nn.init.zeros_(self.fc.bias)

    @classmethod
    def from_pretrained(cls, name: str = "ViT-L-14", pretrained: str = "openai",
                        fc_state: dict[str, torch.Tensor] | None = None) -> UnivFD:
        """The paper's backbone (CLIP ViT-L/14, openai weights, through open_clip; downloads, not used in tests) and,
        when ``fc_state`` is given, the official linear layer (the state dict of ``fc_weights.pth``; read it with
        ``attnzoo.tasks.forgery.official.load_official_univfd``). Without it the linear layer is freshly initialised."""
        import open_clip

        model = cls(open_clip.create_model(name, pretrained=pretrained))
        if fc_state is not None:
            model.load_official_fc(fc_state)
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen: no dropout / statistics updates
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_image_batch(images, min_side=1)
        with torch.no_grad():
            features = self.clip.encode_image(images)
        return self.fc(features.to(self.fc.weight.dtype)).squeeze(-1)

    def load_official_fc(self, state_dict: dict[str, torch.Tensor]) -> None:
        """UniversalFakeDetect's ``fc_weights.pth`` (``weight`` (1, 768), ``bias`` (1,)), strictly."""
        expected = tuple(self.fc.weight.shape)
        if tuple(state_dict.get("weight", torch.empty(0)).shape) != expected:
            raise ValueError(
                f"official UnivFD fc weights have shape {tuple(state_dict['weight'].shape) if 'weight' in state_dict else None}"
                f", this head's fc is {expected}: the backbone's embedding size must match (CLIP ViT-L/14: 768)"
            )
        self.fc.load_state_dict(state_dict, strict=True)


def neighbouring_pixel_relationships(images: torch.Tensor) -> torch.Tensor:
    """``x - up(down(x))`` with nearest resampling by 2 (official NPR ``interpolate(x, 0.5)``)."""
    if images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(
            f"NPR needs even height and width (2x2 neighbourhoods); got {tuple(images.shape[-2:])}: crop one row/column"
        )
    down = F.interpolate(images, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    return images - F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)


class NPR(nn.Module):
    """NPR detector: ResNet-50 stem (3x3, stride 2) + layer1 + layer2 on NPR * 2/3, avg pool, ``fc1`` 512 -> 1."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, layers: tuple[int, int] = (3, 4), num_classes: int = 1):
        super().__init__()
        from torchvision.models.resnet import Bottleneck, conv1x1

        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for planes, blocks, stride in ((64, layers[0], 1), (128, layers[1], 2)):
            downsample = None
            if stride != 1 or inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(conv1x1(inplanes, planes * Bottleneck.expansion, stride),
                                           nn.BatchNorm2d(planes * Bottleneck.expansion))
            stage = [Bottleneck(inplanes, planes, stride, downsample)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_image_batch(images, min_side=2)
        x = self.conv1(neighbouring_pixel_relationships(images) * 2.0 / 3.0)  # official scale 2/3
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.avgpool(self.layer2(self.layer1(x))).flatten(1)
        return self.fc1(x).squeeze(-1)


def load_official_npr(state_dict: dict[str, torch.Tensor], model: NPR | None = None) -> NPR:
    """The official ``NPR.pth``'s state dict (plain or ``{'model': ...}``; ``module.`` prefixes stripped) loaded
    strictly into ``model`` (a new :class:`NPR` by default). ``attnzoo.tasks.forgery.official.load_official_npr`` reads
    the file (or URL)."""
    model = model or NPR()
    state = state_dict.get("model", state_dict)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    return model


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader) -> int:
    """Recompute every BatchNorm's running mean and variance as the plain average over ``loader``'s batches (images, or
    (images, labels) pairs), leaving every weight as it is; returns the number of images seen (0: no BatchNorm).

    Why: BatchNorm's running statistics are an exponential average (momentum 0.1) that starts at mean 0, variance 1.
    After a short training run they still carry much of that start: NPR's first BatchNorm sees features with variance
    near 0.01 (the NPR residuals are small), and after 19 steps its running variance is still about 0.14, so in eval
    mode every feature is shrunk several-fold and all images land on one side of the 0.5 threshold (the ranking, and
    so AP, survives). One pass over the training images with the final weights gives the statistics those weights
    produce. This is ``torch.optim.swa_utils.update_bn``'s procedure (reset, cumulative average, restore momenta).
    """
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not batchnorms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in batchnorms]
    previous = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in batchnorms]
    for module in batchnorms:
        module.reset_running_stats()
        module.momentum = None  # None: a cumulative (equal-weight) average over the batches seen
    model.train()
    seen = 0
    device = next(model.parameters()).device
    for batch in loader:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        model(images.to(device))
        seen += images.shape[0]
    for module, momentum in zip(batchnorms, momenta):
        module.momentum = momentum
    model.train(was_training)
    if seen == 0:
        for module, (mean, var, count) in zip(batchnorms, previous):
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
            module.num_batches_tracked.copy_(count)
        raise ValueError("recalibrate_batchnorm got an empty loader (statistics left as they were); pass the "
                         "training images")
    return seen


def _normalise(mean, std):
    import albumentations as A

    return A.Normalize(mean=mean, std=std, max_pixel_value=255.0)


def training_augmentation(crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, blur_prob: float = 0.5,
                          blur_sigma: tuple[float, float] = (0.0, 3.0), jpeg_prob: float = 0.5,
                          jpeg_quality: tuple[int, int] = (30, 100), resize_prob: float = 0.0,
                          resize_scale: tuple[float, float] = (0.5, 1.5)):
    """albumentations pipeline: uint8 RGB array -> normalised CHW float tensor."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    steps = []
    if resize_prob > 0:
        steps.append(A.RandomScale(scale_limit=(resize_scale[0] - 1.0, resize_scale[1] - 1.0), p=resize_prob))
    if blur_prob > 0:
        steps.append(A.GaussianBlur(blur_limit=0, sigma_limit=blur_sigma, p=blur_prob))
    if jpeg_prob > 0:
        steps.append(A.ImageCompression(quality_range=jpeg_quality, p=jpeg_prob))
    steps += [A.PadIfNeeded(crop, crop), A.RandomCrop(crop, crop), A.HorizontalFlip(p=0.5), _normalise(mean, std),
              ToTensorV2()]
    pipeline = A.Compose(steps)
    return lambda image: pipeline(image=image)["image"]


def evaluation_transform(crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Centre crop (no resize: resampling would erase the upsampling traces detectors look for) and normalise."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    pipeline = A.Compose([A.PadIfNeeded(crop, crop), A.CenterCrop(crop, crop), _normalise(mean, std), ToTensorV2()])
    return lambda image: pipeline(image=image)["image"]
