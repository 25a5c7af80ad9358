"""Model cards: one YAML file per model in ``zoo/cards/<timm_name>.yaml``, validated when loaded.

A card states what the zoo knows about a model from outside the code: the paper, the official repository, the
numbers the authors report, and where the official weights live. Every field below is checked on load; a bad card
raises :class:`CardError` naming the file and the field. The live model is checked against the card by
``tests/zoo/test_cards.py`` (parameter count within 0.5%).

Schema (YAML keys; all required unless marked optional)::

    name: poolformer_s12            # the timm model name; must equal the file's stem
    family: poolformer              # family name (lower case), groups models in `zoo list`
    paper:
      title: "MetaFormer Is Actually What You Need for Vision"
      arxiv: "2111.11418"           # arXiv id (NNNN.NNNNN), no URL
    official_repo: https://github.com/sail-sg/poolformer
    license: apache-2.0             # SPDX-style id, as on the Hugging Face hub
    params_m: 11.9                  # parameters in millions, for the model as built with model_kwargs
    gflops: 1.8                     # GMACs at input_size (what papers call "GFLOPs"); see zoo/flops.py
    input_size: [3, 224, 224]       # [channels, height, width] the numbers below refer to
    mean: [0.485, 0.456, 0.406]     # per-channel normalisation, one value per input channel
    std: [0.229, 0.224, 0.225]
    metrics:                        # reported numbers; may be an empty list
      - task: image-classification  # lower-case words joined by "-"
        dataset: imagenet-1k
        metric: top1                # e.g. top1, top5, box_ap, mask_ap, miou
        value: 77.2                 # a number, in the unit the source uses (percent for top1)
        source: "paper, Table 2"    # where the number comes from: paper table, README, model zoo page
    checkpoints:                    # official weights; may be an empty list
      - url: https://github.com/.../poolformer_s12.pth.tar
        sha256: null                # 64 hex digits, or null when not known
        note: "official ImageNet-1k weights (official key layout; attnzoo.load_checkpoint converts it)"
    notes: |                        # optional free text: known differences, caveats
      ...
    model_kwargs: {}                # optional: keyword arguments for timm.create_model that the checkpoints need

Task heads (``task`` other than ``classification``) describe a whole detector, segmentor or forgery model instead of
a timm model. Their name is any card name (not a timm name); ``params_m``, ``gflops``, ``input_size``, ``mean`` and
``std`` become optional, and one more section is required::

    task: xray                      # optional, default classification; one of TASKS: classification, xray,
                                    # detection, segmentation, forgery (`zoo list --task` filters on it)
    detector:                       # required for xray / detection / segmentation, not allowed otherwise
      config: xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py   # a shipped config (attnzoo.shipped.config_path)
      architecture: "Cascade Mask R-CNN, FPN + SDANet"             # text
      backbone: "ResNet-101 (torchvision ImageNet weights)"        # text
      backbone_card: null           # the zoo card of the backbone (e.g. biformer_small), or null when it has none
      dataset: pidray               # the dataset the config trains on
      key_mapping: attnzoo.heads.xray.selective_attention.convert_official_sdanet_checkpoint
                                    # module.function that turns an official checkpoint's state dict into the
                                    # config's keys, or null when the official keys load as they are
    forgery:                        # required for forgery, not allowed otherwise
      head: npr                     # the attnzoo.heads.forgery model: fakereasoning, univfd or npr
      encoder_branches:             # one text per image-encoder branch (at least one)
        - "ResNet-50 on neighbouring-pixel residuals"
      language_model: null          # text naming the LM (FakeReasoning), or null
      training_data: "ForenSynths ProGAN, 4 classes"               # what the paper trained on
      key_mapping: null             # as for detectors

    metrics:                        # every task: entries may also carry
      - ...
        split: easy                 # optional: the test split (PIDray easy / hard / hidden / overall)
        generator: progan           # optional: the generator whose images are the fakes (forgery)

``attnzoo.load_checkpoint(model, "<name>")`` uses the first checkpoint, verifying its sha256 when the card gives one.
Cards are read from ``zoo/cards/`` and from the directories in the ``ZOO_CARD_PATH`` environment variable
(``os.pathsep``-separated), so private cards can live outside the package; a name defined twice is an error.

Tasks are a table, ``TASK_SPECS`` in ``zoo/cards/schema.py``: one :class:`TaskSpec` per task names the section its
cards require (None, ``detector``, ``forgery``), whether the model stats are required, the function that parses the
section (stored as ``Card.section``), the renderer (``zoo/cards/render.py``), the front matter's library and tags,
the "Model Type" text, the card's opening phrase, usage commands, and ``built_from(card)`` for ``zoo list``.
``TASKS``, ``DETECTOR_TASKS``, ``load_card_file``, ``render_card``, ``zoo list`` and ``zoo list --task`` all read it.

To add a task: add one ``TaskSpec`` entry to ``TASK_SPECS`` (a new section also needs its dataclass and a ``parse``
function next to ``parse_detector``), plus its renderer in ``render.py`` (reuse ``header_lines``,
``results_lines``, ...), and describe its section above. A task that reuses the ``detector`` section needs only the
entry (see ``_detector_task``). Code outside the package can add one at run time with ``register_task(spec)``.

Layout: ``schema.py`` (dataclasses, validation, the task table), ``render.py`` (Markdown renderers), ``lookup.py``
(card directories, the cached card table, ``get_card`` / ``list_cards`` / ``render_card``).
"""

from .lookup import CARD_PATH_ENV, PACKAGE_CARD_DIR, card_dirs, get_card, has_card, list_cards, render_card
from .render import usage_lines
from .schema import (
    CLASSIFICATION,
    DETECTOR_TASKS,
    FORGERY_HEADS,
    FORGERY_TASK,
    TASK_SPECS,
    TASKS,
    Card,
    CardError,
    Checker,
    Checkpoint,
    DetectorSpec,
    ForgerySpec,
    Metric,
    Paper,
    TaskSpec,
    UnknownModelError,
    load_card_file,
    register_task,
    suggest_names,
)

__all__ = [
    "CARD_PATH_ENV",
    "CLASSIFICATION",
    "DETECTOR_TASKS",
    "FORGERY_HEADS",
    "FORGERY_TASK",
    "PACKAGE_CARD_DIR",
    "TASKS",
    "TASK_SPECS",
    "Card",
    "CardError",
    "Checker",
    "Checkpoint",
    "DetectorSpec",
    "ForgerySpec",
    "Metric",
    "Paper",
    "TaskSpec",
    "UnknownModelError",
    "card_dirs",
    "get_card",
    "has_card",
    "list_cards",
    "load_card_file",
    "register_task",
    "render_card",
    "suggest_names",
    "usage_lines",
]
