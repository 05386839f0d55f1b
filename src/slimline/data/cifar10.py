"""CIFAR-10: the full set from the official python archive, and the small lossless sample in ``shared/``."""

from __future__ import annotations

import codecs
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slimline.data import DATASETS, base
from slimline.data.base import ArrayDataset, DataSpec
from slimline.errors import DataError
from slimline.fileio import atomic_path, dir_mode

NAME = "cifar10"
SAMPLE_NAME = "cifar10-sample"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_DIR = "cifar-10-batches-py"
BATCHES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
ARCHIVE_MEMBERS = (*BATCHES["train"], *BATCHES["test"], "batches.meta", "readme.html")
SAMPLE_FILES = {
    "train": "cifar10_train_lossless_first2000.npz",
    "test": "cifar10_test_lossless_first1000.npz",
}
SHARED_SUBDIR = Path("shared") / "data" / "cifar10"
SOURCE_DIR = Path(__file__).resolve().parent  # the walk up to shared/ also starts here

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _spec(name: str) -> DataSpec:
    return DataSpec(
        name=name,
        input_shape=(3, 32, 32),
        num_classes=10,
        class_names=CLASSES,
        mean=(0.485, 0.456, 0.406),  # the pretrained CIFAR ResNets' normalisation
        std=(0.229, 0.224, 0.225),
        augment="crop_flip",
        pad=4,
    )


SPEC = _spec(NAME)
SAMPLE_SPEC = _spec(SAMPLE_NAME)

# Parsed (x, y), keyed by the files read and their (mtime_ns, size).
_PARSED: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}


# ================================================================ cifar10 (official archive)


@DATASETS.register(NAME)
def load(split: str, data_dir: Path | None, download: bool) -> ArrayDataset:
    """The full CIFAR-10 ``split`` (50,000 train / 10,000 test) from ``cifar-10-batches-py``."""
    names = _batch_names(split)
    places = search_dirs(data_dir)
    notes: list[str] = []
    folder = _find_batches(places, names, notes)
    if folder is None:
        folder = _download_or_fail(split, places, notes, download)
    paths = [folder / n for n in names]
    x, y = _cached(paths, lambda: _read_batches(paths))
    return ArrayDataset(x.copy(), y.copy(), SPEC, split, source=str(folder))


def _batch_names(split: str) -> tuple[str, ...]:
    if split not in BATCHES:
        raise DataError(f"{NAME}: split must be 'train' or 'test', not {split!r}")
    return BATCHES[split]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slimline/cifar10`` (``~/.cache`` when unset)."""
    return base.cache_dir(NAME)


def search_dirs(data_dir: Path | None) -> list[tuple[Path, str]]:
    """Folders searched for the batches or the archive, in order, with their origin."""
    return base.search_dirs(NAME, data_dir)


def _find_batches(places: list[tuple[Path, str]], names: tuple[str, ...], notes: list[str]) -> Path | None:
    """The first batch folder holding every file of the split; an archive found on the way is extracted."""
    for folder, _ in places:
        for cand in (folder, folder / BATCH_DIR):
            if cand.name != BATCH_DIR or not cand.is_dir():
                continue
            missing = [n for n in names if not (cand / n).is_file()]
            if not missing:
                return cand
            notes.append(f"{cand} is incomplete: missing {', '.join(missing)}")
        archive = folder / ARCHIVE
        if archive.is_file():
            return _extracted(archive)
    return None


def _extracted(archive: Path) -> Path:
    """Extract the batches of ``archive`` into the cache once (atomically) and return the batch folder."""
    st = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "extracted" / key / BATCH_DIR
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        tmp.chmod(dir_mode())  # mkdtemp: 0700; the extracted folder gets the mode mkdir would give it
        _extract_members(archive, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # someone else finished first otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_members(archive: Path, dest: Path) -> None:
    """Copy only the known regular files of ``cifar-10-batches-py/`` out of ``archive`` (no path tricks)."""
    wanted = {f"{BATCH_DIR}/{m}": m for m in ARCHIVE_MEMBERS}
    got: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 20)
                got.add(name)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive} is not a readable tar.gz archive ({e}); delete it and get it again") from e
    missing = [n for n in (*BATCHES["train"], *BATCHES["test"]) if n not in got]
    if missing:
        raise DataError(
            f"{archive} lacks {BATCH_DIR}/{', '.join(missing)}; it is not the official CIFAR-10 python archive ({URL})"
        )


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest``; network trouble becomes a DataError."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DataError(f"could not download {url}: {e}") from e


def _download_or_fail(split: str, places: list[tuple[Path, str]], notes: list[str], download: bool) -> Path:
    if not download:
        raise DataError(_not_found(split, places, notes, _NO_DOWNLOAD))
    dest = cache_dir() / ARCHIVE
    try:
        with atomic_path(dest) as tmp:
            _fetch(URL, tmp)
            got = _md5(tmp)
            if ARCHIVE_MD5 and got != ARCHIVE_MD5:
                raise DataError(f"{URL} arrived with MD5 {got}, expected {ARCHIVE_MD5}; the download is corrupt")
    except (DataError, OSError) as e:
        raise DataError(_not_found(split, places, notes, f"Download failed: {e}")) from e
    return _extracted(dest)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_NO_DOWNLOAD = (
    "Downloads are disabled by default: pass --download (Python: download=True; recipe: data.download: true)."
)


def _not_found(split: str, places: list[tuple[Path, str]], notes: list[str], why: str) -> str:
    env_note = "" if os.environ.get("SLIMLINE_DATA") else "\n  - $SLIMLINE_DATA (not set)"
    searched = "\n".join(f"  - {p} ({src})" for p, src in places) + env_note
    extra = "".join(f"\n  note: {n}" for n in notes)
    return (
        f"{NAME} ({split}): neither {BATCH_DIR}/ nor {ARCHIVE} found. Searched:\n{searched}{extra}\n{why}\n"
        f"To get the data: download {URL} (MD5 {ARCHIVE_MD5}) and pass --data-dir pointing at its folder "
        f"(or set $SLIMLINE_DATA); or run with --download while online (it goes to {cache_dir()}). "
        f"For the small offline sample use the dataset '{SAMPLE_NAME}'."
    )


# ---------------------------------------------------------------- batch files


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the official batch dicts, allowing only the numpy array reconstruction globals."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np.array(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.array(0).__reduce__()[0],
        ("numpy.core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
        ("numpy._core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
        ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch") from None


def _read_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(p) for p in paths]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 N x 32 x 32 x 3, int64 N)."""
    if path.parent.name != BATCH_DIR:
        raise DataError(f"{path}: refusing to unpickle a file outside a {BATCH_DIR}/ folder")
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"{path} is not a CIFAR-10 batch file ({e}); it is corrupt or truncated") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(d).__name__}")
    data, labels = _field(d, "data"), _field(d, "labels")
    if data is None or labels is None:
        raise DataError(f"{path}: the batch lacks its 'data' or 'labels' entry; it is not a CIFAR-10 batch")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 N x 3072")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels; the file is corrupt")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)


def _field(d: dict[Any, Any], key: str) -> Any:
    return d.get(key.encode(), d.get(key))


def _cached(paths: list[Path], parse: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    key = tuple(_stamp(p) for p in paths)
    if key not in _PARSED:
        _PARSED[key] = parse()
    return _PARSED[key]


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


# ================================================================ cifar10-sample (shared npz files)


@DATASETS.register(SAMPLE_NAME)
def load_sample(split: str, data_dir: Path | None, download: bool) -> ArrayDataset:
    """The lossless CIFAR-10 sample: train = first 2,000 training images, test = first 1,000 test images."""
    if split not in SAMPLE_FILES:
        raise DataError(f"{SAMPLE_NAME}: split must be 'train' or 'test', not {split!r}")
    fname = SAMPLE_FILES[split]
    places = sample_search_dirs(data_dir)
    path = next((p / fname for p, _ in places if (p / fname).is_file()), None)
    if path is None:
        raise DataError(_sample_not_found(split, places))
    x, y = _cached([path], lambda: _read_npz(path))
    return ArrayDataset(x.copy(), y.copy(), SAMPLE_SPEC, split, source=str(path))


def sample_search_dirs(data_dir: Path | None) -> list[tuple[Path, str]]:
    """Folders searched for the sample npz files, in order, with their origin."""
    places = base.user_dirs(NAME, data_dir)
    shared = os.environ.get("SLIMLINE_SHARED")
    if shared:
        places.append((Path(shared) / "data" / NAME, "$SLIMLINE_SHARED"))
    for start, why in ((Path.cwd(), "above the working directory"), (SOURCE_DIR, "above the source")):
        places += [(d / SHARED_SUBDIR, why) for d in _ancestors(start)]
    return base.unique_places(places)


def _ancestors(start: Path) -> Iterator[Path]:
    p = start.resolve()
    yield p
    yield from p.parents


def _sample_not_found(split: str, places: list[tuple[Path, str]]) -> str:
    fname = SAMPLE_FILES[split]
    direct = [f"  - {p} ({why})" for p, why in places if not why.startswith("above")]
    if not os.environ.get("SLIMLINE_DATA"):
        direct.append("  - $SLIMLINE_DATA (not set)")
    if not os.environ.get("SLIMLINE_SHARED"):
        direct.append("  - $SLIMLINE_SHARED/data/cifar10 ($SLIMLINE_SHARED not set)")
    direct.append(f"  - {SHARED_SUBDIR}/ in every folder above {Path.cwd()} and above {SOURCE_DIR}")
    return (
        f"{SAMPLE_NAME} ({split}): {fname} not found. Searched:\n" + "\n".join(direct) + "\n"
        "The sample ships in the project's shared/data/cifar10 folder (beside the repository clone). "
        "Set $SLIMLINE_SHARED to the shared folder, or pass --data-dir pointing at the folder holding the npz files. "
        f"It cannot be downloaded; for the full set use the dataset '{NAME}'."
    )


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` uint8 N x 32 x 32 x 3 and ``y`` N from one sample npz, checked."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(f"{path}: array {' and '.join(missing)} missing (found: {', '.join(z.files)})")
            x, y = z["x"], z["y"]
    except (zipfile.BadZipFile, EOFError, ValueError, TypeError, OSError) as e:
        raise DataError(f"{path} is not a readable npz file ({e}); it is truncated or corrupt") from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise DataError(f"{path}: x is {x.dtype} {x.shape}, expected uint8 N x 32 x 32 x 3")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {y.size} labels; the file is corrupt")
    return x, y.astype(np.int64)
