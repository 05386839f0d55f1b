"""Batch prediction: workers give the same output as one process, order is kept, a killed run resumes
from its finished shards and ends with the same file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimline.artifact import Artifact, save_torch
from slimline.data import load_dataset
from slimline.errors import SlimlineError
from slimline.models import load_model
from slimline.optimize.predict import predict, shard_path

N, SHARD = 600, 50


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    import torch

    torch.manual_seed(0)
    model = load_model("small_cnn_half")
    return save_torch(model, tmp_path_factory.mktemp("pred") / "cnn", {"input_shape": [1, 28, 28]}, [])


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    try:
        return load_dataset("fashion-mnist", "test", limit=N, download=False)
    except SlimlineError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")


@pytest.fixture(scope="module")
def two_workers(art: Artifact, data, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("pred2") / "logits.npy"
    res = predict(art, data, out, workers=2, threads=2, batch_size=32, shard_size=SHARD, logits=True)
    assert res["shards"] == N // SHARD and res["threads_per_worker"] == 1 and res["shards_reused"] == 0
    return out


def test_two_workers_match_one_process(art: Artifact, data, two_workers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    one = tmp_path / "one.npy"
    res = predict(art, data, one, workers=1, threads=1, batch_size=32, shard_size=SHARD, logits=True)
    a, b = np.load(one), np.load(two_workers)
    assert a.shape == b.shape == (N, 10)
    assert (a.argmax(1) == b.argmax(1)).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # ordered: row i is sample i
    model = load_model("small_cnn_half")
    model.load_state_dict(torch.load(art.model_file, weights_only=True))
    with torch.no_grad():
        direct = model(data.normalize(data.x[[0, 257, N - 1]])).numpy()
    np.testing.assert_allclose(a[[0, 257, N - 1]], direct, rtol=1e-5, atol=1e-5)
    assert abs(res["top1"] - 100 * float((a.argmax(1) == data.y).mean())) < 1e-9
    assert not one.with_name("one.npy.shards").exists()  # shards removed after success


def test_classes_output(art: Artifact, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "pred.npy"
    predict(art, data, out, threads=1, batch_size=64, shard_size=250)
    pred = np.load(out)
    assert pred.dtype == np.int64 and pred.shape == (N,) and pred.min() >= 0 and pred.max() < 10


def test_resume_after_kill_gives_same_file(art: Artifact, data, two_workers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "logits.npy"
    code = (
        "from slimline.data import load_dataset\n"
        "from slimline.optimize.predict import predict\n"
        f"ds = load_dataset('fashion-mnist', 'test', limit={N}, download=False)\n"
        f"predict({str(art.path)!r}, ds, {str(out)!r}, workers=1, threads=1, batch_size=32, shard_size={SHARD},"
        " logits=True, _stop_after=2)\n"
    )  # one thread, like each of two workers sharing two threads: shards must come out the same
    env = dict(os.environ, SLIMLINE_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]  # killed mid-way, no cleanup
    shards = out.with_name(out.name + ".shards")
    done = sorted(p.name for p in shards.glob("shard_*.npy"))
    assert 2 <= len(done) < N // SHARD and not out.exists()
    res = predict(art, data, out, workers=2, threads=2, batch_size=32, shard_size=SHARD, logits=True)
    assert res["shards_reused"] == len(done)
    assert out.read_bytes() == two_workers.read_bytes()


def test_stale_shards_of_other_settings_are_discarded(art: Artifact, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.npy"
    predict(art, data, out, threads=1, batch_size=32, shard_size=SHARD, logits=True, keep_shards=True)
    junk = shard_path(out.with_name("p.npy.shards"), 0)
    np.save(junk, np.full((SHARD, 10), 7.0, np.float32))  # a "finished" shard that is wrong for new settings
    res = predict(art, data, out, threads=1, batch_size=16, shard_size=SHARD, logits=True)  # batch size changed
    assert res["shards_reused"] == 0 and not (np.load(out) == 7.0).all(axis=1).any()


def test_resume_reuses_matching_shards(art: Artifact, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.npy"
    first = predict(art, data, out, threads=1, batch_size=32, shard_size=SHARD, logits=True, keep_shards=True)
    again = predict(art, data, out, threads=1, batch_size=32, shard_size=SHARD, logits=True)
    assert first["shards_reused"] == 0 and again["shards_reused"] == N // SHARD
    restart = predict(art, data, out, threads=1, batch_size=32, shard_size=SHARD, logits=True, resume=False)
    assert restart["shards_reused"] == 0


def test_parquet_output(art: Artifact, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "p.parquet"
    predict(art, data, out, threads=1, batch_size=64, shard_size=SHARD, logits=True)
    table = pq.read_table(out)
    assert table.column_names == ["index", "pred", "confidence", "label", "logits"]
    assert table.num_rows == N and table.column("label").to_pylist() == data.y.tolist()


def test_parquet_without_pyarrow_says_what_to_do(
    art: Artifact,
    data,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(SlimlineError, match="pip install pyarrow"):
        predict(art, data.take(50), tmp_path / "p.parquet", shard_size=50)


def test_bad_output_suffix(art: Artifact, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SlimlineError, match=r"\.npy or \.parquet"):
        predict(art, data, tmp_path / "p.csv")


def test_cli_predict(art: Artifact, tmp_path: Path) -> None:
    from slimline.cli import app

    out, report = tmp_path / "p.npy", tmp_path / "r.json"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(art.path),
            "--data",
            "fashion-mnist",
            "--limit",
            "120",
            "--out",
            str(out),
            "--shard-size",
            "50",
            "--threads",
            "1",
            "--json",
            str(report),
        ],
    )
    if result.exit_code != 0 and "Fashion-MNIST" in result.output:
        pytest.skip("Fashion-MNIST not available")
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["n"] == 120 and doc["shards"] == 3 and np.load(out).shape == (120,)
