"""PIDray as an mmdet 3.x dataset: the 12 classes in the official order, COCO json, one split per dataset.

PIDray (Wang et al., ICCV 2021; Zhang et al., IJCV 2023) ships ``annotations/xray_train.json``,
``xray_test_easy.json``, ``xray_test_hard.json``, ``xray_test_hidden.json`` with images in ``train/``, ``easy/``,
``hard/``, ``hidden/``. The test set is evaluated per split and overall, so every sample carries its ``split`` name
(add ``'split'`` to ``PackDetInputs``' meta_keys; ``configs/xray/_base_/pidray_instance.py`` does) and
``PIDrayMetric`` groups by it.

Bad inputs fail loudly instead of turning into a quiet zero AP:

* a category name outside the 12 classes, or an annotation whose category id is not declared: ``ValueError``;
* an image file that does not exist: ``FileNotFoundError`` listing them (or, with ``missing_images='skip'``, a
  warning with the count; ``PIDrayMetric`` then evaluates only the images that were seen and says so);
* a split with no images: ``ValueError``.
"""

from __future__ import annotations

import copy
import os.path as osp

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

# Official order (lutao2021/PIDray and bywang2018/security-dataset, mmdet/datasets/coco.py ``CLASSES``).
PIDRAY_CLASSES = ("Baton", "Pliers", "Hammer", "Powerbank", "Scissors", "Wrench", "Gun", "Bullet", "Sprayer",
                  "HandCuffs", "Knife", "Lighter")

# Split -> (annotation file, image folder) relative to the data root, as released.
PIDRAY_SPLITS = {
    "train": ("annotations/xray_train.json", "train/"),
    "easy": ("annotations/xray_test_easy.json", "easy/"),
    "hard": ("annotations/xray_test_hard.json", "hard/"),
    "hidden": ("annotations/xray_test_hidden.json", "hidden/"),
}
PIDRAY_TEST_SPLITS = ("easy", "hard", "hidden")


def check_category_names(categories: list[dict], classes, source: str) -> dict[int, int]:
    """{category id: label index in ``classes``}, matched by name; unknown names are an error."""
    known = {name: index for index, name in enumerate(classes)}
    unknown = [c["name"] for c in categories if c["name"] not in known]
    if unknown:
        raise ValueError(
            f"{source}: category name(s) {unknown} are not PIDray classes {list(classes)}. Fix the annotation file's "
            f"'categories' (names are case-sensitive), or pass metainfo=dict(classes=...) if this is another dataset."
        )
    return {int(c["id"]): known[c["name"]] for c in categories}


@DATASETS.register_module()
class PIDrayDataset(CocoDataset):
    """One PIDray split (``split='train'|'easy'|'hard'|'hidden'``) from its COCO json.

    Labels follow the official class order by category *name* (mmdet's CocoDataset follows the order of the file's
    categories, which would silently permute labels for a file that lists them differently).

    Args:
        split: the split's name, stored in every sample for per-split evaluation.
        missing_images: ``'error'`` (default) or ``'skip'`` (drop them, with a warning).
    """

    METAINFO = {
        "classes": PIDRAY_CLASSES,
        # one colour per class for visualisation (mmdet's palette convention: RGB tuples)
        "palette": [(220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230), (106, 0, 228), (0, 60, 100),
                    (0, 80, 100), (0, 0, 70), (250, 170, 30), (100, 170, 30), (220, 220, 0), (175, 116, 175)],
    }

    def __init__(self, *args, split: str = "train", missing_images: str = "error", **kwargs):
        if missing_images not in ("error", "skip"):
            raise ValueError(f"missing_images must be 'error' or 'skip', got {missing_images!r}")
        self.split = split
        self.missing_images = missing_images
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            self.coco = self.COCOAPI(local_path)
        classes = self.metainfo["classes"]
        source = f"PIDray split '{self.split}' ({self.ann_file})"
        cat2label = check_category_names(self.coco.dataset.get("categories", []), classes, source)
        undeclared = sorted({a["category_id"] for a in self.coco.dataset.get("annotations", [])} - set(cat2label))
        if undeclared:
            raise ValueError(f"{source}: annotations use category id(s) {undeclared} that 'categories' does not "
                             f"declare; every annotation's category_id must name one of {list(classes)}")
        # ids in label order, so mmdet's filter_data (which walks self.cat_ids) sees the same mapping
        self.cat_ids = sorted(cat2label, key=cat2label.get)
        self.cat2label = cat2label
        self.cat_img_map = copy.deepcopy(self.coco.cat_img_map)

        data_list, missing = [], []
        for img_id in self.coco.get_img_ids():
            raw_img_info = self.coco.load_imgs([img_id])[0]
            raw_img_info["img_id"] = img_id
            raw_ann_info = self.coco.load_anns(self.coco.get_ann_ids(img_ids=[img_id]))
            data_info = self.parse_data_info({"raw_ann_info": raw_ann_info, "raw_img_info": raw_img_info})
            if not osp.isfile(data_info["img_path"]):
                missing.append(data_info["img_path"])
                continue
            data_info["split"] = self.split
            data_list.append(data_info)
        del self.coco

        if missing:
            listing = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            if self.missing_images == "error":
                raise FileNotFoundError(
                    f"{source}: {len(missing)} image file(s) listed in the annotations do not exist: {listing}. "
                    f"Check data_root / data_prefix, or set missing_images='skip' to evaluate without them.")
            print_log(f"{source}: skipping {len(missing)} image(s) whose files do not exist: {listing}",
                      logger="current", level=30)
        if not data_list:
            raise ValueError(
                f"{source}: the split has no images" + (" whose files exist" if missing else "") +
                ". An empty split cannot be trained on or evaluated; regenerate it or drop it from the config.")
        return data_list
