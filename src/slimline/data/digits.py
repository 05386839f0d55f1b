"""scikit-learn's 8 x 8 handwritten digits (1,797 images, bundled with sklearn: no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.data import DATASETS
from slimline.data.base import ArrayDataset, DataSpec
from slimline.errors import DataError

NAME = "digits"
N_TEST = 360  # 20% of 1,797, rounded up: 1,437 train / 360 test
SPLIT_SEED = 0

SPEC = DataSpec(
    name=NAME,
    input_shape=(1, 8, 8),
    num_classes=10,
    class_names=tuple(str(i) for i in range(10)),
    # Computed once over the train split, on the uint8 images scaled to [0, 1].
    mean=(0.3055,),
    std=(0.3759,),
    augment="none",
    pad=0,
)


@DATASETS.register(NAME)
def load(split: str, data_dir: Path | None, download: bool) -> ArrayDataset:
    """The ``split`` of the digits, as uint8 8 x 8 x 1 images (0..16 scaled to 0..255)."""
    if split not in ("train", "test"):
        raise DataError(f"{NAME}: split must be 'train' or 'test', not {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(f"{NAME} needs scikit-learn: pip install scikit-learn ({e})") from e
    bunch = load_digits()
    x = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    idx = split_indices(len(y), split)
    return ArrayDataset(x[idx], y[idx], SPEC, split, source="sklearn.datasets.load_digits")


def split_indices(n: int, split: str) -> np.ndarray:
    """Sorted indices of ``split``: a seeded permutation whose last ``N_TEST`` entries are the test set."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    part = perm[n - N_TEST :] if split == "test" else perm[: n - N_TEST]
    return np.sort(part)
