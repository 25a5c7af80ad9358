"""ImageFolder datasets for the classification verbs: find the split, check the folder, map class names to indices.

A folder is checked before timm reads it, because timm's reader is silent about the mistakes that make numbers wrong:
an empty class folder simply vanishes (every later class index shifts by one), and a corrupt image is replaced by the
next sample with a warning that does not name the file. Here a missing folder, a folder without class sub-folders and
an empty class folder are ``DatasetError``s that name the fix; a corrupt image is dropped with a warning naming it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from timm.data import ImageNetInfo, create_dataset
from timm.data.readers.reader_image_folder import get_img_extensions
from timm.utils.misc import natural_key
from tqdm.auto import tqdm

from ...errors import ZooError

__all__ = ["DatasetError", "ImageFolderScan", "build_dataset", "class_to_index_for_model", "find_split", "scan_image_folder"]

IMAGE_EXTENSIONS = frozenset(get_img_extensions(as_set=True))
VAL_SPLIT_NAMES = ("val", "validation")
_PROGRESS_ABOVE = 2000  # files; below this the header check takes well under a second


class DatasetError(ZooError, ValueError):
    """A dataset folder that cannot be used as given; the message names the problem and the fix."""


@dataclass
class ImageFolderScan:
    """What ``scan_image_folder`` found: the class folder names (timm's order) and the readable images of each."""

    root: Path
    classes: list[str]
    images: dict[str, list[Path]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return sum(len(files) for files in self.images.values())


def _has_class_folders(folder: Path) -> bool:
    return folder.is_dir() and any(child.is_dir() for child in folder.iterdir())


def find_split(data: str | os.PathLike, split: str, required: bool = True) -> Path | None:
    """The folder of ``split`` ('train' or 'val') under ``data``.

    'train' must be ``data/train``. 'val' is ``data/val`` (or ``data/validation``) when present, else ``data`` itself
    when it holds class folders directly (an ImageFolder or the ImageNet val layout ``val/n01440764/*.JPEG``).
    """
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; pass --data a folder with one sub-folder of images per class.")
    names = ("train",) if split == "train" else VAL_SPLIT_NAMES
    for name in names:
        if _has_class_folders(root / name):
            return root / name
    if split != "train" and _has_class_folders(root) and not (root / "train").is_dir():
        return root
    if not required:
        return None
    if split == "train":
        raise DatasetError(f"{root}: no train/ folder with class sub-folders; zoo train reads DIR/train/<class>/<image> "
                           "(and DIR/val/<class>/<image> to validate), e.g. made by tools/make_imagefolder.py.")
    raise DatasetError(f"{root}: no class sub-folders (and no val/ folder holding them); pass --data the folder whose "
                       "sub-folders are the classes (DIR/<class>/<image>).")


def _image_problem(path: Path) -> str | None:
    """Why PIL cannot read ``path`` (a header check: cheap, catches non-images and truncated headers), or None."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, SyntaxError, struct.error, ...)
        return f"{type(err).__name__}: {err}"
    return None


def scan_image_folder(folder: str | os.PathLike, check_images: bool = True, verbose: bool = True) -> ImageFolderScan:
    """List the class folders of ``folder`` and their images; refuse empty classes; drop unreadable images.

    Classes are the immediate sub-folders, sorted the way timm's reader sorts them (``natural_key``); images are the
    files with an image extension anywhere under a class folder. With ``check_images`` every image's header is read
    once, and one that PIL cannot open is left out with a warning on stderr naming the file (when ``verbose``).
    """
    root = Path(folder)
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders; put the images of each class in DIR/<class>/.")
    images: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        files = sorted((p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                       key=lambda p: natural_key(str(p)))
        if not files:
            raise DatasetError(
                f"{class_dir}: class folder '{class_dir.name}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images to it or remove the folder.")
        images[class_dir.name] = files
    scan = ImageFolderScan(root=root, classes=[p.name for p in class_dirs], images=images)
    if check_images:
        total = scan.num_images
        with tqdm(total=total, desc=f"checking {root.name}", unit="img", leave=False,
                  disable=not verbose or total < _PROGRESS_ABOVE) as bar:
            for name, files in images.items():
                kept = []
                for path in files:
                    problem = _image_problem(path)
                    if problem is None:
                        kept.append(path)
                    else:
                        scan.skipped.append((path, problem))
                        if verbose:
                            print(f"zoo: warning: skipped unreadable image {path} ({problem})", file=sys.stderr)
                    bar.update()
                if not kept:
                    raise DatasetError(f"{root / name}: none of the images of class '{name}' can be read; "
                                       "replace them or remove the folder.")
                images[name] = kept
    return scan


def class_to_index_for_model(scan: ImageFolderScan, num_classes: int, label_names: list[str] | None) -> dict[str, int]:
    """How the folder's class names map to the model's output indices.

    - The model names its classes (a ``zoo train`` run, ``label_names`` in config.json): by name; every folder class
      must be one of them (a subset is fine).
    - A 1000-class ImageNet head and synset folders (``n01440764``, ...): the ImageNet-1k index of each synset, so a
      subset of ImageNet val is scored correctly too.
    - Otherwise the folder's sorted order, which needs as many class folders as the head has outputs.
    """
    if label_names:
        unknown = [c for c in scan.classes if c not in label_names]
        if unknown:
            raise DatasetError(f"{scan.root}: class folder(s) {', '.join(unknown[:5])} are not classes of the model "
                               f"({', '.join(label_names[:10])}{', ...' if len(label_names) > 10 else ''}); "
                               "pass --data a folder with the classes the model was trained on.")
        return {c: label_names.index(c) for c in scan.classes}
    if num_classes == 1000:
        synsets = ImageNetInfo("imagenet-1k").label_names()
        index = {s: i for i, s in enumerate(synsets)}
        if all(c in index for c in scan.classes):
            return {c: index[c] for c in scan.classes}
    if len(scan.classes) != num_classes:
        raise DatasetError(
            f"{scan.root}: {len(scan.classes)} class folders, but the model's head has {num_classes} outputs; "
            "pass the folder the model was trained on (ImageNet: the 1000 synset folders n01440764, ...), "
            "or fine-tune it on this folder with `zoo train`.")
    return {c: i for i, c in enumerate(scan.classes)}


def build_dataset(scan: ImageFolderScan, class_to_idx: dict[str, int], shard: tuple[int, int] = (0, 1)):
    """timm's ImageFolder dataset over the scanned images (unreadable ones left out), optionally one rank's shard.

    ``shard=(rank, world_size)`` keeps every world_size-th image starting at rank: the shards are disjoint and cover
    the folder exactly once (timm's distributed samplers pad the last batch with repeats, which would count some
    images twice in an exact top-1).
    """
    dataset = create_dataset("", root=str(scan.root), class_map=dict(class_to_idx), is_training=False)
    keep = {str(p) for files in scan.images.values() for p in files}
    samples = [s for s in dataset.reader.samples if str(s[0]) in keep]
    rank, world_size = shard
    dataset.reader.samples = samples[rank::world_size]
    return dataset
