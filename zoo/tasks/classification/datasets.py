"""ImageFolder datasets for the classification verbs: find the split, check the folder, map class names to indices.

How a folder becomes classes (one rule, for the check, the counts and the labels of ``zoo validate`` and ``zoo
train``): the classes are the sub-folders of the split folder (``DIR/<class>/``), sorted as timm sorts them; every
image anywhere below a class folder, in nested sub-folders too, is an image of that class (``val/cross/diamond/x.png``
is a "cross", even where "diamond" is another class: that nested folder is named in a warning). Links to folders are
followed, each real folder once (``attnzoo.tasks.folders.walk_files``), so any arrangement of links ends. An image file
that belongs to no class (directly in the split folder), a link to nothing and a folder that cannot be read are
reported with a warning naming them; nothing is relabelled or dropped without a word. The dataset's samples are the
scan's own images with the scan's labels: timm's folder reader (which labels an image by its innermost folder and
follows link loops forever) never walks the folder.

A folder is checked before it is read, because a reader that is silent about mistakes makes numbers wrong: an empty
class folder would vanish (every later class index shifts by one), and a corrupt image would be replaced by the next
sample. Here a missing folder, a folder without class sub-folders and an empty class folder are ``DatasetError``s
that name the fix; an image the zoo's reader (``attnzoo.tasks.images``) does not read (not an image, truncated,
corrupt, over the pixel limit) is left out with a warning naming it, so the counts and the top-1 are over the readable
images only. The dataset then reads every image through that same reader (modes converted to RGB as it converts them)
and never replaces one by another: an image that cannot be read when it is loaded (with ``--no-image-check``, or a
file changed since the check) stops the run with one line naming it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from timm.data import ImageDataset, ImageNetInfo
from timm.data.readers.reader import Reader
from timm.data.readers.reader_image_folder import get_img_extensions
from timm.utils.misc import natural_key
from tqdm.auto import tqdm

from ...errors import ZooError
from ..folders import printable, walk_files
from ..images import DEFAULT_MAX_PIXELS, UnreadableImage, check_image, display_path, read_image

__all__ = ["DatasetError", "ImageFolderDataset", "ImageFolderScan", "UnreadableImageError", "build_dataset",
           "class_to_index_for_model", "find_split", "scan_image_folder"]

IMAGE_EXTENSIONS = frozenset(get_img_extensions(as_set=True))
VAL_SPLIT_NAMES = ("val", "validation")
_PROGRESS_ABOVE = 2000  # files; below this the image check takes well under a second


class DatasetError(ZooError, ValueError):
    """A dataset folder that cannot be used as given; the message names the problem and the fix."""


class UnreadableImageError(DatasetError):
    """An image of the dataset that cannot be read when it is loaded (one line naming it, also from a loader worker)."""

    def __init__(self, message: str):
        if "\nOriginal Traceback" in message:
            # torch's DataLoader re-raises a worker's error as this type with the worker's traceback as the message:
            # keep the worker's own one-line message, its last line after "<module>.<class>: "
            last = message.rstrip().splitlines()[-1]
            name = f"{type(self).__module__}.{type(self).__qualname__}: "
            message = last[len(name):] if last.startswith(name) else last
        super().__init__(message)


@dataclass
class ImageFolderScan:
    """What ``scan_image_folder`` found: the class folder names (timm's order) and the readable images of each."""

    root: Path
    classes: list[str]
    images: dict[str, list[Path]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # images not counted, with the reason
    notes: list[tuple[Path, str]] = field(default_factory=list)  # links not followed again, unreadable folders, ...
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # the pixel limit of the check, and of the dataset's reads

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


def _image_problem(path: Path, max_pixels: int | None) -> str | None:
    """Why the zoo's reader does not read ``path`` (header, pixel limit, and a complete file: a truncated JPEG or PNG
    is caught without decoding it in full), or None."""
    try:
        check_image(path, max_pixels, complete=True)
    except UnreadableImage as err:
        return err.reason
    return None


def _warn(message: str) -> None:
    print(f"zoo: warning: {message}", file=sys.stderr, flush=True)


def scan_image_folder(folder: str | os.PathLike, check_images: bool = True, verbose: bool = True,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFolderScan:
    """List the class folders of ``folder`` and their images (the module's rule); refuse empty classes; drop
    unreadable images.

    Classes are the immediate sub-folders, sorted the way timm's reader sorts them (``natural_key``); images are the
    files with an image extension anywhere under a class folder (``attnzoo.tasks.folders.walk_files``: links followed,
    each real folder once). What is not counted is reported in ``skipped`` (an image file in no class folder, a link to
    nothing) or ``notes`` (a link loop, an unreadable folder, a nested folder named like another class), and on stderr
    when ``verbose``. With ``check_images`` every image is checked once (``attnzoo.tasks.images.check_image``: its
    header, ``max_pixels``, a complete file), and one the zoo's reader does not read is left out with a warning naming
    the file. ``max_pixels`` is also the limit of the dataset's reads (:func:`build_dataset`).
    """
    root = Path(folder)
    try:
        entries = list(root.iterdir())
    except OSError as err:
        raise DatasetError(f"{display_path(root)}: cannot be read ({err.strerror or err}).") from None
    class_dirs = sorted((p for p in entries if p.is_dir()), key=lambda p: natural_key(p.name))
    if not class_dirs:
        raise DatasetError(f"{display_path(root)}: no class sub-folders; put the images of each class in "
                           "DIR/<class>/.")
    names = {p.name for p in class_dirs}
    root_key = os.stat(root)
    scan = ImageFolderScan(root=root, classes=[p.name for p in class_dirs], images={}, max_pixels=max_pixels)

    def report(path: Path, reason: str, skipped: bool) -> None:
        (scan.skipped if skipped else scan.notes).append((path, reason))
        if verbose:
            _warn(f"{'skipped ' if skipped else ''}{display_path(path)}: {reason}")

    loose = sorted((p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                   key=lambda p: natural_key(str(p)))
    for path in loose:
        report(path, f"in no class folder (images go in {display_path(root)}/<class>/); not counted", True)
    for class_dir in class_dirs:
        walk = walk_files(class_dir, IMAGE_EXTENSIONS, skip=[(root_key.st_dev, root_key.st_ino)])
        for path, reason in walk.problems:
            report(path, reason, reason == "a link to nothing")
        for sub in walk.folders:
            if sub.name in names and sub.name != class_dir.name:
                report(sub, f"a folder named like class '{printable(sub.name)}' inside class "
                            f"'{printable(class_dir.name)}': its images count as '{printable(class_dir.name)}' (the "
                            f"class is the folder right under {display_path(root)})", False)
        files = sorted(walk.files, key=lambda p: natural_key(str(p)))
        if not files:
            raise DatasetError(
                f"{display_path(class_dir)}: class folder '{printable(class_dir.name)}' has no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images to it or remove the folder.")
        scan.images[class_dir.name] = files
    if check_images:
        total = scan.num_images
        with tqdm(total=total, desc=f"checking {printable(root.name)}", unit="img", leave=False,
                  disable=not verbose or total < _PROGRESS_ABOVE) as bar:
            for name, files in scan.images.items():
                kept = []
                for path in files:
                    problem = _image_problem(path, max_pixels)
                    if problem is None:
                        kept.append(path)
                    else:
                        scan.skipped.append((path, problem))
                        if verbose:
                            _warn(f"skipped unreadable image {display_path(path)} ({problem})")
                    bar.update()
                if not kept:
                    raise DatasetError(f"{display_path(root / name)}: none of the images of class "
                                       f"'{printable(name)}' can be read; replace them or remove the folder.")
                scan.images[name] = kept
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


class _ScanReader(Reader):
    """timm's reader interface over a given list of (path, class index) samples: no folder walk of its own."""

    def __init__(self, samples: list[tuple[Path, int]]):
        super().__init__()
        self.samples = samples

    def __getitem__(self, index):
        return self.samples[index]

    def __len__(self) -> int:
        return len(self.samples)

    def _filename(self, index, basename=False, absolute=False):
        path = self.samples[index][0]
        return os.path.basename(path) if basename else (os.path.abspath(path) if absolute else str(path))


class ImageFolderDataset(ImageDataset):
    """timm's ImageFolder dataset over the scan's samples (``(path, class index)``; the module's rule, never timm's
    folder reader), reading every image through the zoo's reader (``attnzoo.tasks.images.read_image``: modes to RGB,
    the pixel limit). timm's own ``ImageDataset`` replaces an image it cannot read by the next sample; this one raises
    :class:`UnreadableImageError` naming the file instead."""

    def __init__(self, samples: list[tuple[Path, int]], max_pixels: int | None = DEFAULT_MAX_PIXELS):
        super().__init__("", reader=_ScanReader(samples))
        self.max_pixels = max_pixels

    def __getitem__(self, index):
        path, target = self.reader.samples[index]
        try:
            image = read_image(path, self.max_pixels)
        except UnreadableImage as err:
            raise UnreadableImageError(
                f"{err}; it was not left out by the folder check (run without --no-image-check, or replace the file "
                "if it changed during the run)") from None
        if self.transform is not None:
            image = self.transform(image)
        if target is None:
            target = -1
        elif self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def build_dataset(scan: ImageFolderScan, class_to_idx: dict[str, int], shard: tuple[int, int] = (0, 1)):
    """The ImageFolder dataset over the scanned images (unreadable ones left out), each labelled by its class folder
    (``class_to_idx[class]``), optionally one rank's shard; it reads through the zoo's reader with the scan's pixel
    limit (:class:`ImageFolderDataset`). Samples are in timm's order (``natural_key`` of the path).

    ``shard=(rank, world_size)`` keeps every world_size-th image starting at rank: the shards are disjoint and cover
    the folder exactly once (timm's distributed samplers pad the last batch with repeats, which would count some
    images twice in an exact top-1).
    """
    samples = sorted(((str(path), class_to_idx[name]) for name, files in scan.images.items() for path in files),
                     key=lambda sample: natural_key(str(sample[0])))
    rank, world_size = shard
    return ImageFolderDataset(samples[rank::world_size], max_pixels=scan.max_pixels)
