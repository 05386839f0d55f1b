"""Fashion-MNIST from the standard IDX ``.gz`` files: found locally, or downloaded once into the cache."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import struct
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slimline.data import DATASETS, base
from slimline.data.base import ArrayDataset, DataSpec
from slimline.errors import DataError
from slimline.fileio import atomic_path

NAME = "fashion-mnist"
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# MD5 of the official .gz files as published (also used by torchvision); checked on download only,
# since distribution packages may recompress the same data.
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049

SPEC = DataSpec(
    name=NAME,
    input_shape=(1, 28, 28),
    num_classes=10,
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    mean=(0.2860,),
    std=(0.3530,),
    augment="crop_flip",
    pad=2,
)

# Parsed arrays, keyed by (resolved path, mtime_ns, size): repeated loads in one process are free.
_PARSED: dict[tuple[str, int, int], np.ndarray] = {}


@DATASETS.register(NAME)
def load(split: str, data_dir: Path | None, download: bool) -> ArrayDataset:
    """The ``split`` ("train" or "test") of Fashion-MNIST as uint8 28 x 28 x 1 images."""
    if split not in FILES:
        raise DataError(f"{NAME}: split must be 'train' or 'test', not {split!r}")
    img_name, lbl_name = FILES[split]
    places = search_dirs(data_dir)
    found = _find(places, (img_name, lbl_name))
    if found is None:
        found = _download_or_fail(split, places, download)
    img_path, lbl_path = found
    x = _cached(img_path, _parse_images)
    y = _cached(lbl_path, _parse_labels)
    if len(x) != len(y):
        raise DataError(
            f"{NAME} ({split}): {img_path} holds {len(x)} images but {lbl_path} holds {len(y)} labels; "
            "the files do not belong together or one is truncated. Replace both with the official files."
        )
    return ArrayDataset(x.copy(), y.astype(np.int64), SPEC, split, source=str(img_path.parent))


# ---------------------------------------------------------------- where to look


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slimline/fashion-mnist`` (``~/.cache`` when unset)."""
    return base.cache_dir(NAME)


def search_dirs(data_dir: Path | None) -> list[tuple[Path, str]]:
    """Every folder searched, in order, with where it came from (for messages)."""
    return base.search_dirs(NAME, data_dir, [(d, "system datasets") for d in SYSTEM_DIRS])


def _find(places: list[tuple[Path, str]], names: tuple[str, str]) -> tuple[Path, Path] | None:
    for folder, _ in places:
        paths = [_existing(folder, n) for n in names]
        if all(paths):
            return paths[0], paths[1]  # type: ignore[return-value]
    return None


def _existing(folder: Path, name: str) -> Path | None:
    """``folder/name``, or its uncompressed twin (``name`` without ``.gz``), if it is a file."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------- download


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest``; network trouble becomes a DataError."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DataError(f"could not download {url}: {e}") from e


def _download_or_fail(split: str, places: list[tuple[Path, str]], download: bool) -> tuple[Path, Path]:
    names = FILES[split]
    if not download:
        raise DataError(_not_found(split, places, _NO_DOWNLOAD))
    dest = cache_dir()
    try:
        for name in names:
            if _existing(dest, name) is None:
                _download_file(BASE_URL + name, dest / name)
    except (DataError, OSError) as e:
        raise DataError(_not_found(split, places, f"Download failed: {e}")) from e
    return dest / names[0], dest / names[1]


def _download_file(url: str, dest: Path) -> None:
    """Fetch into a temporary file beside ``dest``, check its MD5, then rename it into place."""
    with atomic_path(dest) as tmp:
        _fetch(url, tmp)
        want = MD5.get(dest.name)
        got = _md5(tmp)
        if want and got != want:
            raise DataError(f"{url} arrived with MD5 {got}, expected {want}; the download is corrupt, try again")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_NO_DOWNLOAD = (
    "Downloads are disabled by default: pass --download (Python: download=True; recipe: data.download: true)."
)


def _not_found(split: str, places: list[tuple[Path, str]], why: str) -> str:
    img, lbl = FILES[split]
    env_note = "" if os.environ.get("SLIMLINE_DATA") else "\n  - $SLIMLINE_DATA (not set)"
    searched = "\n".join(f"  - {p} ({src})" for p, src in places) + env_note
    return (
        f"{NAME} ({split}): {img} and {lbl} not found. Searched:\n{searched}\n{why}\n"
        "To get the data: `apt-get install dataset-fashion-mnist`; or pass --data-dir pointing at a folder "
        f"holding the IDX .gz files from {BASE_URL}; or run with --download while online "
        f"(they go to {cache_dir()})."
    )


# ---------------------------------------------------------------- parsing


def _cached(path: Path, parse: Callable[[Path], np.ndarray]) -> np.ndarray:
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        _PARSED[key] = parse(path)
    return _PARSED[key]


def _read(path: Path) -> bytes:
    """The whole (decompressed) file; a damaged gzip stream becomes a DataError naming the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path} is not a complete gzip file ({e}); it is truncated or corrupt. {_REFETCH}") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e


_REFETCH = "Delete it and download it again (or reinstall dataset-fashion-mnist)."


def _header(path: Path, data: bytes, magic: int, ndims: int) -> tuple[int, ...]:
    need = 4 + 4 * ndims
    got_magic = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if got_magic is not None and got_magic != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise DataError(
            f"{path}: magic number {got_magic}, expected {magic} for IDX {kind}; "
            f"this is not a Fashion-MNIST {kind} file (images and labels swapped?). {_REFETCH}"
        )
    if len(data) < need:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX file. {_REFETCH}")
    dims = struct.unpack(f">{ndims}I", data[4:need])
    expected = need + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{path}: header says {' x '.join(map(str, dims))} ({expected} bytes) but the file holds "
            f"{len(data)} bytes; it is truncated or corrupt. {_REFETCH}"
        )
    return tuple(dims)


def _parse_images(path: Path) -> np.ndarray:
    data = _read(path)
    n, rows, cols = _header(path, data, IMAGE_MAGIC, 3)
    if (rows, cols) != (28, 28):
        raise DataError(f"{path}: images are {rows} x {cols}, Fashion-MNIST images are 28 x 28")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols, 1)


def _parse_labels(path: Path) -> np.ndarray:
    data = _read(path)
    _header(path, data, LABEL_MAGIC, 1)
    y = np.frombuffer(data, dtype=np.uint8, offset=8)
    if len(y) and y.max() >= SPEC.num_classes:
        raise DataError(f"{path}: label {int(y.max())} is out of range 0..9; the file is corrupt. {_REFETCH}")
    return y
