"""Named datasets. Each loader is registered in ``DATASETS`` and returns an :class:`ArrayDataset`.

Besides the names: ``package.module:function`` (a user's factory returning an :class:`ArrayDataset` or
:class:`~slimline.data.arrays.NamedSamples`), named arrays (:mod:`slimline.data.arrays`) and text files
(:mod:`slimline.data.text`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slimline.data.arrays import NamedSamples
from slimline.data.base import ArrayDataset, DataSpec
from slimline.data.preprocess import Preprocess, parse_preprocess
from slimline.registry import Registry

DATASETS: Registry = Registry(
    "dataset",
    [f"slimline.data.{m}" for m in ("cifar10", "digits", "fashion_mnist", "imagefolder")],
    group="slimline.datasets",
)


def is_factory(name: str) -> bool:
    """Whether a ``-d``/recipe data value names a Python factory (``package.module:function``)."""
    return ":" in name and not Path(name).exists()


def load_factory(
    spec: str, kwargs: Mapping[str, Any] | None = None, split: str | None = None
) -> ArrayDataset | NamedSamples:
    """Call the user's ``package.module:function`` with ``kwargs`` (and ``split=`` when it takes one).

    Only for a factory the user named (``-d``, a recipe's ``data.factory``): importing it runs its code."""
    from slimline.errors import DataError
    from slimline.models import import_factory

    fn = import_factory(spec, "data factory", DataError)
    kw = dict(kwargs or {})
    if split is not None and "split" not in kw and _takes(fn, "split"):
        kw["split"] = split
    out = fn(**kw)
    if not isinstance(out, ArrayDataset | NamedSamples):
        raise DataError(
            f"data factory {spec} returned {type(out).__name__}; return a slimline ArrayDataset or "
            "NamedSamples (arrays keyed by input name)"
        )
    return out


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
    *,
    preprocess: Preprocess | Mapping[str, Any] | str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> ArrayDataset:
    """Load dataset ``name`` (see ``DATASETS.names()``, or a ``package.module:function`` factory called with
    ``kwargs``), ``split`` "train" or "test".

    ``limit`` keeps the first ``limit`` samples. Nothing is downloaded unless ``download=True``. ``preprocess``
    declares how image files become inputs (:class:`slimline.data.preprocess.Preprocess`; imagefolder only).
    Loaders raise :class:`slimline.errors.DataError` listing every place searched when the data cannot be found.
    """
    from slimline.errors import DataError

    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    pp = parse_preprocess(preprocess)
    if is_factory(name):
        if pp is not None:
            raise DataError(
                f"preprocess applies to image files (imagefolder); data factory {name} preprocesses "
                "its own samples: leave preprocess out"
            )
        ds = load_factory(name, kwargs, split)
        if not isinstance(ds, ArrayDataset):
            raise DataError(
                f"data factory {name} returned named arrays, which only eval takes; return an "
                "ArrayDataset (images and labels) to train, prune or quantize on it"
            )
        return ds.take(limit)
    if kwargs:
        raise DataError(f"kwargs are for a data factory (package.module:function), not dataset {name!r}; remove them")
    _import_loaders()
    loader = DATASETS.get(name)
    if pp is None:
        ds = loader(split=split, data_dir=Path(data_dir) if data_dir else None, download=download)
    elif _takes(loader, "preprocess"):
        ds = loader(split=split, data_dir=Path(data_dir) if data_dir else None, download=download, preprocess=pp)
    else:
        raise DataError(
            f"dataset {name} has its own fixed preprocessing; preprocess applies to imagefolder "
            "(your image files): remove it"
        )
    return ds.take(limit)


def _takes(fn: Any, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _import_loaders() -> None:
    DATASETS.load()


__all__ = [
    "ArrayDataset",
    "DataSpec",
    "DATASETS",
    "Preprocess",
    "is_factory",
    "load_dataset",
    "load_factory",
    "parse_preprocess",
]
