"""Named datasets. Each loader is registered in ``DATASETS`` and returns an :class:`ArrayDataset`."""

from __future__ import annotations

from pathlib import Path

from slimline.data.base import ArrayDataset, DataSpec
from slimline.registry import Registry

DATASETS: Registry = Registry("dataset")


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
) -> ArrayDataset:
    """Load dataset ``name`` (see ``DATASETS.names()``), ``split`` "train" or "test".

    ``limit`` keeps the first ``limit`` samples. Nothing is downloaded unless ``download=True``. Loaders raise
    :class:`slimline.errors.DataError` listing every place searched when the data cannot be found.
    """
    _import_loaders()
    if split not in ("train", "test"):
        from slimline.errors import DataError

        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    loader = DATASETS.get(name)
    ds = loader(split=split, data_dir=Path(data_dir) if data_dir else None, download=download)
    return ds.take(limit)


def _import_loaders() -> None:
    from slimline.data import cifar10, digits, fashion_mnist, imagefolder  # noqa: F401


__all__ = ["ArrayDataset", "DataSpec", "DATASETS", "load_dataset"]
