"""Dataset loaders on real files where present, and every bad input on small files built here."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from slimline.data import ArrayDataset, DataSpec, cifar10, digits, fashion_mnist, imagefolder, load_dataset
from slimline.errors import DataError

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user environment leaks in; the download cache lives in tmp_path."""
    for var in ("SLIMLINE_DATA", "SLIMLINE_SHARED"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _offline(url: str, dest: Path) -> None:
    raise DataError(f"could not download {url}: <urlopen error [Errno -2] Name or service not known>")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# ================================================================ Fashion-MNIST


def _idx_images(n: int, rows: int = 28, cols: int = 28, magic: int = 2051, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    return struct.pack(">IIII", magic, n, rows, cols) + pixels.tobytes()


def _idx_labels(n: int, magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, n) + (np.arange(n) % 10).astype(np.uint8).tobytes()


def _write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def _fmnist_dir(folder: Path, n_img: int = 6, n_lbl: int = 6, split: str = "test") -> Path:
    img, lbl = fashion_mnist.FILES[split]
    _write_gz(folder / img, _idx_images(n_img))
    _write_gz(folder / lbl, _idx_labels(n_lbl))
    return folder


@pytest.fixture
def no_default_fmnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is found outside --data-dir, and the network is down."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", ())
    monkeypatch.setattr(fashion_mnist, "_fetch", _offline)


@pytest.mark.skipif(
    not FMNIST_SYSTEM.is_dir(), reason=f"{FMNIST_SYSTEM} absent (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_real_test_split() -> None:
    ds = load_dataset("fashion-mnist", split="test", download=False)
    assert len(ds) == 10000
    assert ds.x.shape == (10000, 28, 28, 1) and ds.x.dtype == np.uint8
    assert ds.y.dtype == np.int64 and ds.y.min() == 0 and ds.y.max() == 9
    assert np.bincount(ds.y).tolist() == [1000] * 10
    assert Path(ds.source) == FMNIST_SYSTEM
    assert ds.spec.input_shape == (1, 28, 28) and ds.spec.class_names[0] == "T-shirt/top"
    assert ds.spec.class_names[9] == "Ankle boot" and ds.spec.pad == 2
    # parsed once per process: a second load reuses the arrays (and returns an independent copy)
    n_cached = len(fashion_mnist._PARSED)
    again = load_dataset("fashion-mnist", split="test", download=False, limit=5)
    assert len(fashion_mnist._PARSED) == n_cached and len(again) == 5
    assert np.array_equal(again.x, ds.x[:5])
    ds.x[:5] = 0  # editing one result must not reach the cache
    assert np.array_equal(load_dataset("fashion-mnist", split="test", download=False, limit=5).x, again.x)


def test_fashion_mnist_from_data_dir(tmp_path: Path, no_default_fmnist: None) -> None:
    ds = load_dataset("fashion-mnist", split="test", data_dir=_fmnist_dir(tmp_path / "fm"), download=False)
    assert ds.x.shape == (6, 28, 28, 1) and ds.y.tolist() == [0, 1, 2, 3, 4, 5]
    raw = np.frombuffer(_idx_images(6), dtype=np.uint8, offset=16).reshape(6, 28, 28)
    assert np.array_equal(ds.x[..., 0], raw)


def test_fashion_mnist_env_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_default_fmnist: None) -> None:
    _fmnist_dir(tmp_path / "data" / "fashion-mnist", split="train")
    monkeypatch.setenv("SLIMLINE_DATA", str(tmp_path / "data"))
    assert len(fashion_mnist.load("train", None, download=False)) == 6


def test_fashion_mnist_missing_lists_every_place(tmp_path: Path, isolated: Path, no_default_fmnist: None) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz and t10k-labels-idx1-ubyte\.gz not found") as e:
        load_dataset("fashion-mnist", split="test", data_dir=empty, download=True)
    msg = str(e.value)
    for place in (str(empty), str(isolated / "slimline" / "fashion-mnist"), "$SLIMLINE_DATA (not set)"):
        assert place in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert "Download failed" in msg and "Name or service not known" in msg
    assert not list((isolated / "slimline" / "fashion-mnist").glob("*"))  # no partial download left


def test_fashion_mnist_missing_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (tmp_path / "system",))
    monkeypatch.setattr(fashion_mnist, "_fetch", _offline)
    with pytest.raises(DataError, match=r"(?s)Searched:.*system \(system datasets\).*Downloads are disabled") as e:
        fashion_mnist.load("train", tmp_path / "mine", download=False)
    assert str(tmp_path / "mine") in str(e.value)


def test_load_dataset_does_not_download_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: Path, no_default_fmnist: None
) -> None:
    def no_fetch(*a: object, **k: object) -> None:
        raise AssertionError("load_dataset tried to download without download=True")

    monkeypatch.setattr(fashion_mnist, "_fetch", no_fetch)
    with pytest.raises(DataError, match="--download") as e:
        load_dataset("fashion-mnist", split="test", data_dir=tmp_path / "none")
    assert "Downloads are disabled" in str(e.value)


def test_fashion_mnist_network_error_is_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", ())

    def refused(url: str, dest: Path) -> None:
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(fashion_mnist, "_fetch", refused)
    with pytest.raises(DataError, match="Download failed: <urlopen error connection refused>"):
        fashion_mnist.load("test", tmp_path, download=True)


def test_fashion_mnist_download(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = _fmnist_dir(tmp_path / "remote", n_img=4, n_lbl=4)
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url)
        shutil.copy(remote / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", ())
    monkeypatch.setattr(fashion_mnist, "_fetch", fake_fetch)
    monkeypatch.setattr(fashion_mnist, "MD5", {p.name: _md5(p) for p in remote.iterdir()})
    ds = fashion_mnist.load("test", None, download=True)
    assert len(ds) == 4
    assert fetched == [fashion_mnist.BASE_URL + n for n in fashion_mnist.FILES["test"]]
    cache = isolated / "slimline" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(fashion_mnist.FILES["test"])
    fetched.clear()
    assert len(fashion_mnist.load("test", None, download=True)) == 4 and fetched == []  # served from the cache


def test_fashion_mnist_download_md5_mismatch(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = _fmnist_dir(tmp_path / "remote")
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", ())
    monkeypatch.setattr(fashion_mnist, "_fetch", lambda url, dest: shutil.copy(remote / url.rsplit("/", 1)[1], dest))
    with pytest.raises(DataError, match=r"arrived with MD5 [0-9a-f]{32}, expected bef4ecab"):
        fashion_mnist.load("test", None, download=True)
    assert not list((isolated / "slimline" / "fashion-mnist").iterdir())  # nothing half-written kept


def test_fashion_mnist_truncated_gzip(tmp_path: Path, no_default_fmnist: None) -> None:
    folder = _fmnist_dir(tmp_path)
    img = folder / "t10k-images-idx3-ubyte.gz"
    img.write_bytes(img.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is not a complete gzip file"):
        fashion_mnist.load("test", folder, download=False)


def test_fashion_mnist_not_gzip(tmp_path: Path, no_default_fmnist: None) -> None:
    folder = _fmnist_dir(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is not a complete gzip file"):
        fashion_mnist.load("test", folder, download=False)


def test_fashion_mnist_wrong_magic(tmp_path: Path, no_default_fmnist: None) -> None:
    folder = _fmnist_dir(tmp_path)
    _write_gz(folder / "t10k-images-idx3-ubyte.gz", _idx_labels(6))  # a labels file under the images name
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: magic number 2049, expected 2051"):
        fashion_mnist.load("test", folder, download=False)
    _fmnist_dir(folder)
    _write_gz(folder / "t10k-labels-idx1-ubyte.gz", _idx_labels(6, magic=1234))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: magic number 1234, expected 2049"):
        fashion_mnist.load("test", folder, download=False)


def test_fashion_mnist_size_does_not_match_header(tmp_path: Path, no_default_fmnist: None) -> None:
    folder = _fmnist_dir(tmp_path)
    _write_gz(folder / "t10k-images-idx3-ubyte.gz", _idx_images(6)[:-28])  # one row short
    with pytest.raises(DataError, match=r"header says 6 x 28 x 28 .* but the file holds \d+ bytes; it is truncated"):
        fashion_mnist.load("test", folder, download=False)
    _write_gz(folder / "t10k-images-idx3-ubyte.gz", _idx_images(6, rows=32, cols=32))
    with pytest.raises(DataError, match="images are 32 x 32"):
        fashion_mnist.load("test", folder, download=False)


def test_fashion_mnist_count_mismatch(tmp_path: Path, no_default_fmnist: None) -> None:
    folder = _fmnist_dir(tmp_path, n_img=6, n_lbl=5)
    with pytest.raises(DataError, match=r"holds 6 images but .*t10k-labels-idx1-ubyte\.gz holds 5 labels"):
        fashion_mnist.load("test", folder, download=False)


def test_fashion_mnist_label_out_of_range(tmp_path: Path, no_default_fmnist: None) -> None:
    folder = _fmnist_dir(tmp_path)
    _write_gz(folder / "t10k-labels-idx1-ubyte.gz", struct.pack(">II", 2049, 6) + bytes([0, 1, 2, 3, 4, 12]))
    with pytest.raises(DataError, match="label 12 is out of range"):
        fashion_mnist.load("test", folder, download=False)


# ================================================================ CIFAR-10 sample (real shared files)


def _sample_file(split: str) -> Path | None:
    name = cifar10.SAMPLE_FILES[split]
    return next((p / name for p, _ in cifar10.sample_search_dirs(None) if (p / name).is_file()), None)


@pytest.mark.parametrize(("split", "count"), [("train", 2000), ("test", 1000)])
def test_cifar10_sample_real(split: str, count: int) -> None:
    path = _sample_file(split)
    if path is None:
        pytest.skip("shared/data/cifar10 not found above the working directory or the source")
    ds = load_dataset("cifar10-sample", split=split)
    assert len(ds) == count and ds.x.shape == (count, 32, 32, 3) and ds.x.dtype == np.uint8
    with np.load(path) as z:
        assert ds.y[0] == int(z["y"][0]) and np.array_equal(ds.x[0], z["x"][0])
    assert ds.spec.input_shape == (3, 32, 32) and ds.spec.class_names[0] == "airplane"
    assert ds.spec.mean == (0.485, 0.456, 0.406) and ds.spec.pad == 4


def test_cifar10_sample_from_shared_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "shared" / "data" / "cifar10"
    folder.mkdir(parents=True)
    _write_npz(folder / cifar10.SAMPLE_FILES["test"], n=3)
    monkeypatch.setenv("SLIMLINE_SHARED", str(tmp_path / "shared"))
    monkeypatch.chdir(tmp_path)
    assert len(cifar10.load_sample("test", None, download=False)) == 3


def test_cifar10_sample_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cifar10, "SOURCE_DIR", tmp_path / "src")
    with pytest.raises(DataError, match=r"cifar10_train_lossless_first2000\.npz not found\. Searched:") as e:
        load_dataset("cifar10-sample", split="train", data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "$SLIMLINE_SHARED" in msg and "shared/data/cifar10/" in msg


def _write_npz(path: Path, n: int = 4, n_labels: int | None = None, **arrays: np.ndarray) -> Path:
    x = np.random.default_rng(1).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(n if n_labels is None else n_labels) % 10).astype(np.uint8)
    np.savez(path, **({"x": x, "y": y} | arrays))
    return path


def test_cifar10_sample_bad_zip(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / cifar10.SAMPLE_FILES["test"])
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cifar10_test_lossless_first1000\.npz is not a readable npz file"):
        cifar10.load_sample("test", tmp_path, download=False)


def test_cifar10_sample_missing_array(tmp_path: Path) -> None:
    path = tmp_path / cifar10.SAMPLE_FILES["test"]
    np.savez(path, x=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"array y missing \(found: x\)"):
        cifar10.load_sample("test", tmp_path, download=False)


def test_cifar10_sample_count_mismatch(tmp_path: Path) -> None:
    _write_npz(tmp_path / cifar10.SAMPLE_FILES["train"], n=4, n_labels=3)
    with pytest.raises(DataError, match="4 images but 3 labels"):
        cifar10.load_sample("train", tmp_path, download=False)


# ================================================================ CIFAR-10, official python archive layout


def _py2_pickle(obj: object) -> bytes:
    """Pickle like the official (Python 2 cPickle) batches: byte strings as BINSTRING, numpy.core globals."""

    class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
        dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

        def save_bytes(self, b: bytes) -> None:
            if len(b) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
            self.memoize(b)

        dispatch[bytes] = save_bytes

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _batch_arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    data = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return data, [int(v) for v in (np.arange(n) + seed) % 10]


def _write_batches(folder: Path, n: int = 3, skip: tuple[str, ...] = ()) -> Path:
    batch_dir = folder / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    for i, name in enumerate((*cifar10.BATCHES["train"], *cifar10.BATCHES["test"])):
        if name in skip:
            continue
        data, labels = _batch_arrays(n, seed=i)
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
        (batch_dir / name).write_bytes(_py2_pickle(d))
    return batch_dir


def _write_archive(path: Path, n: int = 3) -> Path:
    src = _write_batches(path.parent / "archive-src", n=n)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    shutil.rmtree(src.parent)
    return path


def test_cifar10_official_layout(tmp_path: Path) -> None:
    _write_batches(tmp_path / "data", n=3)
    train = load_dataset("cifar10", split="train", data_dir=tmp_path / "data", download=False)
    test = load_dataset("cifar10", split="test", data_dir=tmp_path / "data", download=False)
    assert train.x.shape == (15, 32, 32, 3) and len(test) == 3
    data, labels = _batch_arrays(3, seed=0)
    assert train.y[:3].tolist() == labels
    # rows are 1024 R, then 1024 G, then 1024 B values, row-major: stored as HWC
    assert np.array_equal(train.x[0], data[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert train.spec.name == "cifar10" and train.spec.num_classes == 10


def test_cifar10_archive_is_extracted_to_cache(tmp_path: Path, isolated: Path) -> None:
    archive = _write_archive(tmp_path / "dl" / "cifar-10-python.tar.gz")
    ds = cifar10.load("test", archive.parent, download=False)
    assert len(ds) == 3 and ds.y.tolist() == _batch_arrays(3, seed=5)[1]
    assert Path(ds.source).is_relative_to(isolated) and Path(ds.source).name == "cifar-10-batches-py"
    assert not list(Path(ds.source).parent.parent.glob(".extract-*"))  # temp folder gone
    assert cifar10.load("train", archive.parent, download=False).source == ds.source  # extracted once


def test_cifar10_download(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = _write_archive(tmp_path / "remote" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "_fetch", lambda url, dest: shutil.copy(remote, dest))
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", _md5(remote))
    assert len(cifar10.load("train", tmp_path / "empty", download=True)) == 15
    assert (isolated / "slimline" / "cifar10" / "cifar-10-python.tar.gz").is_file()


def test_cifar10_download_md5_mismatch(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = _write_archive(tmp_path / "remote" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "_fetch", lambda url, dest: shutil.copy(remote, dest))
    with pytest.raises(DataError, match=r"(?s)Download failed: .* arrived with MD5 [0-9a-f]{32}, expected c58f3010"):
        cifar10.load("test", None, download=True)
    assert not (isolated / "slimline" / "cifar10" / "cifar-10-python.tar.gz").exists()


def test_cifar10_missing_lists_places(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar10, "_fetch", _offline)
    _write_batches(tmp_path / "partial", skip=("data_batch_3",))
    with pytest.raises(DataError, match=r"neither cifar-10-batches-py/ nor cifar-10-python\.tar\.gz found") as e:
        load_dataset("cifar10", split="train", data_dir=tmp_path / "partial", download=True)
    msg = str(e.value)
    assert str(tmp_path / "partial") in msg and str(isolated / "slimline" / "cifar10") in msg
    assert "incomplete: missing data_batch_3" in msg and "Download failed" in msg and "cifar10-sample" in msg


def test_cifar10_missing_without_download_says_how(tmp_path: Path, isolated: Path) -> None:
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", split="test", data_dir=tmp_path / "none")


def test_cifar10_corrupt_archive(tmp_path: Path) -> None:
    archive = _write_archive(tmp_path / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[:500])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz is not a readable tar\.gz archive"):
        cifar10.load("test", tmp_path, download=False)


def test_cifar10_refuses_foreign_pickles(tmp_path: Path) -> None:
    batch_dir = _write_batches(tmp_path)
    (batch_dir / "test_batch").write_bytes(pickle.dumps(shutil.rmtree, protocol=2))
    with pytest.raises(DataError, match=r"test_batch is not a CIFAR-10 batch file \(global shutil\.rmtree"):
        cifar10.load("test", tmp_path, download=False)
    (batch_dir / "test_batch").write_bytes(_py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}))
    with pytest.raises(DataError, match="2 images but 1 labels"):
        cifar10.load("test", tmp_path, download=False)
    (batch_dir / "test_batch").write_bytes(_py2_pickle({b"labels": [1]})[:-5])
    with pytest.raises(DataError, match="corrupt or truncated"):
        cifar10.load("test", tmp_path, download=False)
    with pytest.raises(DataError, match="refusing to unpickle a file outside"):
        cifar10._read_batch(tmp_path / "elsewhere")


# ================================================================ digits


def test_digits_splits() -> None:
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.x.shape[1:] == (8, 8, 1) and train.x.dtype == np.uint8 and train.x.max() == 255
    assert not set(digits.split_indices(1797, "train")) & set(digits.split_indices(1797, "test"))
    px = train.x.astype(np.float64) / 255
    assert train.spec.mean[0] == pytest.approx(px.mean(), abs=1e-4)
    assert train.spec.std[0] == pytest.approx(px.std(), abs=1e-4)
    assert train.spec.class_names == tuple("0123456789") and train.spec.augment == "none"


# ================================================================ imagefolder


def _image(path: Path, size: tuple[int, int] = (16, 12), value: int = 0, mode: str = "RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)
    return path


def _tree(root: Path) -> Path:
    _image(root / "train" / "cat" / "a.png", value=10)
    _image(root / "train" / "cat" / "b.bmp", value=20)
    _image(root / "train" / "dog" / "c.png", value=30, mode="L")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    _image(root / "test" / "dog" / "d.jpg", value=40)
    _image(root / "test" / "cat" / "e.png", value=50)
    return root


def test_imagefolder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "imgs")
    train = load_dataset("imagefolder", split="train", data_dir=root)
    assert train.x.shape == (3, 12, 16, 3) and train.y.tolist() == [0, 0, 1]
    assert train.x[0, 0, 0].tolist() == [10, 245, 7] and train.x[2, 0, 0].tolist() == [30, 30, 30]  # L -> RGB
    assert train.spec.class_names == ("cat", "dog") and train.spec.input_shape == (3, 12, 16)
    assert train.spec.pad == 1 and train.spec.augment == "crop_flip"
    test = imagefolder.load("test", root, download=False)
    assert len(test) == 2 and test.y.tolist() == [0, 1] and test.spec == train.spec


def test_imagefolder_only_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "a" / "1.png")
    _image(tmp_path / "b" / "2.png")
    assert len(imagefolder.load("train", tmp_path, download=False)) == 2
    with pytest.raises(DataError, match="no train/ and test/ sub-folders.*there is no test split"):
        imagefolder.load("test", tmp_path, download=False)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="imagefolder needs --data-dir"):
        load_dataset("imagefolder", split="train")
    root = _tree(tmp_path / "imgs")
    odd = _image(root / "train" / "dog" / "e.png", size=(20, 20))
    with pytest.raises(DataError, match=r"e\.png is 20 x 20 but .*a\.png is 16 x 12; all images must share one size"):
        imagefolder.load("train", root, download=False)
    odd.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"cannot read image .*e\.png"):
        imagefolder.load("train", root, download=False)
    odd.unlink()
    _image(root / "test" / "bird" / "f.png")
    with pytest.raises(DataError, match="class folders not in the train split: bird"):
        imagefolder.load("test", root, download=False)


def test_imagefolder_empty_or_missing_class_folder_is_an_error(tmp_path: Path) -> None:
    """An empty class folder would give a class no images (or shift labels); a class missing from test likewise."""
    root = _tree(tmp_path / "imgs")
    (root / "train" / "bird").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/bird has no images \(.*\.png.*\); remove it or add"):
        imagefolder.load("train", root, download=False)
    _image(root / "train" / "bird" / "x.png")
    with pytest.raises(DataError, match=r"test has no folder for class\(es\) bird .*same classes"):
        imagefolder.load("test", root, download=False)
    (root / "test" / "bird").mkdir()
    with pytest.raises(DataError, match=r"class folder .*test/bird has no images"):
        imagefolder.load("test", root, download=False)
    _image(root / "test" / "bird" / "y.png")
    assert imagefolder.load("test", root, download=False).y.tolist() == [0, 1, 2]


# ================================================================ ArrayDataset


def _toy(n: int = 10) -> ArrayDataset:
    spec = DataSpec("toy", (3, 8, 8), 2, ("a", "b"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "crop_flip", 2)
    x = np.random.default_rng(0).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    return ArrayDataset(x, np.arange(n) % 2, spec)


def test_batches_augmentation_keeps_shapes() -> None:
    ds = _toy()
    plain = list(ds.batches(4))
    aug = list(ds.batches(4, shuffle=True, augment=True, seed=3))
    assert [tuple(b[0].shape) for b in aug] == [tuple(b[0].shape) for b in plain] == [(4, 3, 8, 8)] * 2 + [(2, 3, 8, 8)]
    assert not all(np.array_equal(a[0], p[0]) for a, p in zip(aug, plain, strict=True))
    assert sorted(int(v) for b in aug for v in b[1]) == sorted(ds.y.tolist())
    assert len(list(ds.batches(4, drop_last=True))) == 2


def test_split_off_is_disjoint() -> None:
    ds = _toy(10)
    ds.x[:, 0, 0, 0] = np.arange(10)  # tag each sample
    train, val = ds.split_off(0.3, seed=1)
    tags_t, tags_v = set(train.x[:, 0, 0, 0].tolist()), set(val.x[:, 0, 0, 0].tolist())
    assert (len(train), len(val)) == (7, 3) and not tags_t & tags_v and tags_t | tags_v == set(range(10))
    assert val.split == "train-val"
    with pytest.raises(DataError, match="does not fit"):
        ds.split_off(10)
