"""Your own images: ``DATA_DIR/{train,test}/<class>/<image>``, one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.data import DATASETS
from slimline.data.base import ArrayDataset, DataSpec
from slimline.data.preprocess import IMAGENET, Preprocess
from slimline.errors import DataError

NAME = "imagefolder"
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
SPLITS = ("train", "test")


@DATASETS.register(NAME)
def load(split: str, data_dir: Path | None, download: bool, preprocess: Preprocess | None = None) -> ArrayDataset:
    """Every image of ``split`` through ``preprocess`` (default :data:`IMAGENET`: RGB, scale 1/255, ImageNet
    mean/std, NCHW, no resize); after it all images must share one size. The spec records the preprocessing."""
    if data_dir is None:
        raise DataError(
            f"{NAME} needs --data-dir: a folder with train/ and test/ sub-folders, "
            "each holding one sub-folder of images per class"
        )
    pp = preprocess or IMAGENET
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{NAME}: {root} is not a folder")
    split_dir, train_dir = _split_dirs(root, split)
    classes = _class_names(train_dir if train_dir.is_dir() else split_dir)
    files, labels = _list_images(split_dir, classes)
    ref_file = _first_image(train_dir, classes) if train_dir.is_dir() else files[0]
    ref = _read(ref_file, pp)
    x = np.stack([_check_size(_read(f, pp), f, ref, ref_file) for f in files])
    h, w = ref.shape[:2]
    c = pp.num_channels
    spec = DataSpec(
        name=NAME,
        input_shape=pp.input_shape(h, w),
        num_classes=len(classes),
        class_names=tuple(classes),
        mean=pp.mean if pp.mean is not None else (0.0,) * c,
        std=pp.std if pp.std is not None else (1.0,) * c,
        augment="crop_flip",
        pad=min(h, w) // 8,
        preprocess=pp,
    )
    return ArrayDataset(x, np.asarray(labels, dtype=np.int64), spec, split, source=str(split_dir))


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    """(folder of ``split``, folder of the train split); a root holding only class folders is the train split."""
    if split not in SPLITS:
        raise DataError(f"{NAME}: split must be 'train' or 'test', not {split!r}")
    if (root / "train").is_dir() or (root / "test").is_dir():
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{NAME}: {root} has no {split}/ sub-folder; expected {root}/{{train,test}}/<class>/")
        return split_dir, root / "train"
    if split == "test":
        raise DataError(
            f"{NAME}: {root} holds class folders but no train/ and test/ sub-folders, so it is used as the "
            f"train split and there is no test split; create {root}/test/<class>/ (and move the rest to train/)"
        )
    return root, root


def _class_names(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{NAME}: {folder} has no class sub-folders; expected {folder}/<class>/<image>")
    return classes


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )


def _list_images(split_dir: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Every image of every class; each class needs a folder with images in every split (else labels would
    mean different classes in train and test)."""
    present = _class_names(split_dir)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(
            f"{NAME}: {split_dir} has class folders not in the train split: {', '.join(unknown)} "
            f"(train classes: {', '.join(classes)})"
        )
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(
            f"{NAME}: {split_dir} has no folder for class(es) {', '.join(missing)} that the train split has; "
            "train and test must have the same classes: add the folders with images, or remove them from train"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _images_in(split_dir / name)
        if not found:
            raise DataError(
                f"{NAME}: class folder {split_dir / name} has no images ({', '.join(sorted(EXTENSIONS))}); "
                "remove it or add images"
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{NAME}: no images in {split_dir}/<class>/ (supported: {', '.join(sorted(EXTENSIONS))})")
    return files, labels


def _first_image(train_dir: Path, classes: list[str]) -> Path:
    for name in classes:
        found = _images_in(train_dir / name)
        if found:
            return found[0]
    raise DataError(f"{NAME}: no images in {train_dir}/<class>/ (supported: {', '.join(sorted(EXTENSIONS))})")


def _read(path: Path, pp: Preprocess) -> np.ndarray:
    """The image at ``path``, fully decoded and preprocessed (uint8 H x W x C)."""
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError(f"{NAME} needs Pillow to read images: pip install pillow ({e})") from e
    try:
        with Image.open(path) as img:
            img.load()
            return pp.image(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{NAME}: cannot read image {path} ({e}); delete or replace it") from e


def _check_size(a: np.ndarray, path: Path, ref: np.ndarray, ref_file: Path) -> np.ndarray:
    if a.shape != ref.shape:
        raise DataError(
            f"{NAME}: {path} is {a.shape[1]} x {a.shape[0]} but {ref_file} is {ref.shape[1]} x {ref.shape[0]}; "
            "all images must share one size: declare preprocess: {resize: [H, W]} (or resize them first)"
        )
    return a
