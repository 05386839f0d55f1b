"""The in-memory dataset every loader returns, with its preprocessing declared beside it."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimline.data.preprocess import Preprocess
from slimline.errors import DataError

# A folder searched for data files, with where it came from (for messages).
Place = tuple[Path, str]


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/slimline/<name>`` (``~/.cache`` when unset): where downloads of dataset ``name`` go."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "slimline" / name


def user_dirs(name: str, data_dir: Path | None) -> list[Place]:
    """``--data-dir`` and ``$SLIMLINE_DATA``, each as given and with ``name`` appended, in that order."""
    places: list[Place] = []
    if data_dir is not None:
        places += [(Path(data_dir), "--data-dir"), (Path(data_dir) / name, "--data-dir")]
    env = os.environ.get("SLIMLINE_DATA")
    if env:
        places += [(Path(env), "$SLIMLINE_DATA"), (Path(env) / name, "$SLIMLINE_DATA")]
    return places


def search_dirs(name: str, data_dir: Path | None, extra: Iterable[Place] = ()) -> list[Place]:
    """Folders searched for dataset ``name``, in order: the user's folders, ``extra``, the download cache."""
    return unique_places([*user_dirs(name, data_dir), *extra, (cache_dir(name), "download cache")])


def unique_places(places: Iterable[Place]) -> list[Place]:
    """``places`` without repeated folders; the first origin given for a folder is kept."""
    seen: dict[Path, str] = {}
    for p, why in places:
        seen.setdefault(p, why)
    return list(seen.items())


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its input: shape, classes and preprocessing.

    Images are stored as uint8 HWC; the model sees float32 NCHW, ``(x / 255 - mean) / std``, or with a declared
    ``preprocess`` (:class:`slimline.data.preprocess.Preprocess`) ``(x * scale - mean) / std`` in its layout.
    """

    name: str
    input_shape: tuple[int, int, int]  # C, H, W (H, W, C when preprocess.layout is NHWC)
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # "none" | "crop" | "crop_flip"
    pad: int = 0  # zero padding for random crops
    preprocess: Preprocess | None = None  # declared in full where the data comes from image files

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict() if self.preprocess else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        d = dict(d)
        for k in ("input_shape", "class_names", "mean", "std"):
            d[k] = tuple(d[k])
        if d.get("preprocess") is not None:
            d["preprocess"] = Preprocess.from_dict(d["preprocess"])
        return cls(**d)


@dataclass
class ArrayDataset:
    """Images ``x`` (uint8, N x H x W x C) with labels ``y`` (int64, N) and their spec."""

    x: np.ndarray
    y: np.ndarray
    spec: DataSpec
    split: str = "train"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim == 3:  # N x H x W -> N x H x W x 1
            self.x = self.x[..., None]
        if self.x.ndim != 4:
            raise DataError(f"{self.spec.name}: images must be N x H x W x C, got shape {self.x.shape}")
        if len(self.x) != len(self.y):
            raise DataError(
                f"{self.spec.name} ({self.split}): {len(self.x)} images but {len(self.y)} labels "
                f"in {self.source or 'the data'}; the files do not belong together or one is truncated"
            )
        self.y = np.asarray(self.y, dtype=np.int64)
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.spec.num_classes):
            raise DataError(
                f"{self.spec.name}: labels must lie in 0..{self.spec.num_classes - 1}, "
                f"found {int(self.y.min())}..{int(self.y.max())} in {self.source or 'the data'}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray | list[int] | slice) -> ArrayDataset:
        return ArrayDataset(self.x[indices], self.y[indices], self.spec, self.split, self.source)

    def take(self, n: int | None) -> ArrayDataset:
        """The first ``n`` samples (all when ``n`` is None or larger than the set)."""
        if n is not None and n < 1:
            raise DataError(f"a limit of {n} samples leaves nothing to use: give at least 1 (or no limit)")
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def sample(self, n: int | None, seed: int = 0) -> ArrayDataset:
        """``n`` samples drawn without replacement, reproducibly."""
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self.subset(idx)

    def split_off(self, val_size: int | float, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
        """Split into (train, validation) by a seeded permutation; validation gets ``val_size``."""
        n_val = int(round(val_size * len(self))) if isinstance(val_size, float) else int(val_size)
        if not 0 < n_val < len(self):
            raise DataError(f"validation size {val_size} does not fit a set of {len(self)} samples")
        perm = np.random.default_rng(seed).permutation(len(self))
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        t, v = self.subset(train), self.subset(val)
        v.split = f"{self.split}-val"
        return t, v

    def normalize(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x C -> normalised float32 N x C x H x W (N x H x W x C with a declared NHWC layout)."""
        return self._layout(self._nchw(x))

    def _nchw(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
        pp = self.spec.preprocess
        inv = 1 / pp.scale if pp else 255.0
        t = t.div_(round(inv)) if math.isclose(inv, round(inv), rel_tol=1e-9) else t.mul_(pp.scale if pp else 1.0)
        mean, std = (pp.mean, pp.std) if pp else (self.spec.mean, self.spec.std)
        if mean is not None:
            t = t - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        if std is not None:
            t = t / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        return t

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        pp = self.spec.preprocess
        return t.permute(0, 2, 3, 1).contiguous() if pp is not None and pp.layout == "NHWC" else t

    def inputs(self) -> np.ndarray:
        """All samples, preprocessed, as one float32 NCHW array (for calibration and parity checks)."""
        return self.normalize(self.x).numpy()

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, labels) tensors; augmentation follows ``spec.augment``."""
        n = len(self)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=gen).numpy() if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            xb = self._nchw(self.x[idx])
            if augment and self.spec.augment != "none":
                xb = _augment(xb, self.spec, gen)
            yield self._layout(xb), torch.from_numpy(self.y[idx])


def _augment(x: torch.Tensor, spec: DataSpec, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    if spec.pad > 0:
        p = spec.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * p)
        x = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    if spec.augment == "crop_flip":
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x
