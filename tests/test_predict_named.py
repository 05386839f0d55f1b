"""``slimline predict`` on any ONNX model: named arrays in, every output by name out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from typer.testing import CliRunner

from slimline.artifact import Artifact
from slimline.errors import SlimlineError
from slimline.optimize.predict import predict


def _two_input_model(path: Path) -> Path:
    """x float [batch, 4], ids int64 [batch, 3] -> y = x @ w [batch, 2], z = Gather(emb, ids) [batch, 3, 5]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 2)).astype(np.float32)
    emb = rng.standard_normal((10, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Gather", ["emb", "ids"], ["z"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3, 5]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(emb, "emb")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture
def art(tmp_path: Path) -> Artifact:
    from slimline.bench.targets import file_artifact

    return file_artifact(_two_input_model(tmp_path / "two.onnx"), tmp_path / "arts")


@pytest.fixture
def feeds(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    arrays = {"x": rng.standard_normal((23, 4)).astype(np.float32), "ids": rng.integers(0, 10, (23, 3))}
    np.savez(tmp_path / "inputs.npz", **arrays)
    return tmp_path / "inputs.npz", arrays


def test_outputs_by_name_equal_onnxruntime(
    art: Artifact, feeds: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    import onnxruntime as ort

    path, arrays = feeds
    res = predict(art, path, tmp_path / "out.npz", batch_size=5, progress=False)
    assert res["n"] == 23 and res["format"] == "npz" and res["outputs"] == {"y": [23, 2], "z": [23, 3, 5]}
    want = dict(zip(["y", "z"], ort.InferenceSession(str(art.model_file)).run(None, arrays), strict=True))
    with np.load(tmp_path / "out.npz") as got:
        assert sorted(got.files) == ["y", "z"]
        for name in ("y", "z"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    part = predict(art, path, tmp_path / "part.npz", limit=7, progress=False)
    assert part["n"] == 7 and part["outputs"]["y"] == [7, 2]


def test_cli_and_one_line_errors(art: Artifact, feeds: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from slimline.cli import app

    path, _ = feeds
    r = CliRunner().invoke(
        app,
        [
            "predict",
            str(art.path),
            "-d",
            str(path),
            "--out",
            str(tmp_path / "o.npz"),
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "outputs y, z" in r.output
    assert json.loads((tmp_path / "r.json").read_text())["outputs"]["z"] == [23, 3, 5]
    with pytest.raises(SlimlineError, match="write a .npz file"):
        predict(art, path, tmp_path / "o.parquet", progress=False)
    with pytest.raises(SlimlineError, match="outputs y, z; write a .npz file"):
        predict(art, path, tmp_path / "o.npy", progress=False)


def test_workers_shards_and_resume_after_a_kill(
    art: Artifact, feeds: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """Named arrays: a run killed after 2 of 5 shards resumes them with 2 workers (the CLI) and writes what one
    process writes; the shards are .npz files of every output."""
    import os
    import subprocess
    import sys

    from slimline.cli import app

    path, _ = feeds
    one = predict(art, path, tmp_path / "one.npz", batch_size=4, shard_size=5, threads=1, progress=False)
    assert one["shards"] == 5 and one["shards_reused"] == 0
    out = tmp_path / "o.npz"
    code = (
        "from slimline.optimize.predict import predict\n"
        f"predict({str(art.path)!r}, {str(path)!r}, {str(out)!r}, batch_size=4, shard_size=5, threads=1,"
        " progress=False, _stop_after=2)\n"
    )
    env = dict(os.environ, SLIMLINE_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]  # killed mid-way, no cleanup
    shards = sorted(p.name for p in out.with_name("o.npz.shards").glob("shard_*"))
    assert shards == ["shard_00000.npz", "shard_00001.npz"] and not out.exists()
    args = ["predict", str(art.path), "-d", str(path), "--out", str(out), "--workers", "2", "--threads", "2"]
    args += ["--batch-size", "4", "--shard-size", "5", "--json", str(tmp_path / "r.json")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["shards_reused"] == 2 and res["workers"] == 2 and res["threads_per_worker"] == 1
    assert not out.with_name("o.npz.shards").exists()
    with np.load(tmp_path / "one.npz") as want, np.load(out) as got:
        assert sorted(got.files) == ["y", "z"]
        for name in ("y", "z"):
            np.testing.assert_array_equal(got[name], want[name])
    again = predict(art, path, out, batch_size=4, shard_size=5, keep_shards=True, progress=False)
    assert again["shards_reused"] == 0  # the shards were removed after the output was written
    stale = predict(art, path, out, batch_size=2, shard_size=5, progress=False)
    assert stale["shards_reused"] == 0  # kept shards of another batch size are not mixed in


def _clips(root: Path) -> Path:
    """Two class folders of constant 8 kHz clips: loud (label 0, sorted first) and quiet (label 1)."""
    amps = {"loud": [0.5, 0.7, 0.9], "quiet": [0.02, 0.05, 0.1]}
    for label, levels in amps.items():
        (root / label).mkdir(parents=True)
        for i, amp in enumerate(levels):
            n = 6000 if i == 2 else 4000  # a longer clip: cropped to the model's 8000-sample window at 16 kHz
            wavfile.write(root / label / f"{i}.wav", 8000, np.full(n, amp, np.float32))
    return root


def _kws_model(path: Path) -> Path:
    """wave float [batch, 8000] -> logits [batch, 2] = [mean - 0.25, 0.25 - mean]: loud is class 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.stack([np.ones(8000), -np.ones(8000)], axis=1).astype(np.float32) / 8000
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["wave", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["logits"])],
        "kws",
        [helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["batch", 8000])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-0.25, 0.25], np.float32), "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_audio_folder_predicts_with_labels(tmp_path: Path) -> None:
    """A wav folder in class subfolders feeds a single-input model under any input name, framed to its window;
    labels give top-1."""
    from slimline.bench.targets import file_artifact

    art = file_artifact(_kws_model(tmp_path / "kws.onnx"), tmp_path / "arts")
    res = predict(art, _clips(tmp_path / "clips"), tmp_path / "o.npy", progress=False)  # 8 kHz clips -> 16 kHz
    assert res["outputs"] == {"logits": [6, 2]} and res["format"] == "npy" and res["top1"] == 100.0
    assert np.load(tmp_path / "o.npy").argmax(1).tolist() == [0, 0, 0, 1, 1, 1]


def test_quantize_calibrates_on_a_wav_folder(tmp_path: Path) -> None:
    from slimline.cli import app

    model, clips = _kws_model(tmp_path / "kws.onnx"), _clips(tmp_path / "clips")
    r = CliRunner().invoke(
        app,
        [
            "quantize",
            "-m",
            str(model),
            "-d",
            str(clips),
            "-b",
            "onnxruntime",
            "-o",
            str(tmp_path / "q"),
            "--json",
            str(tmp_path / "q.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "q.json").read_text())
    assert summary["calibration"]["source"] == str(clips)


def test_evaluate_frames_a_wav_folder_to_the_model(tmp_path: Path) -> None:
    """eval reads an audio folder once the model is open, so the clips (one longer) fit its 8000-sample window."""
    from slimline.api import evaluate_model

    res = evaluate_model(str(_kws_model(tmp_path / "kws.onnx")), str(_clips(tmp_path / "clips")))
    assert res["n"] == 6
    assert res["top1"] == 100.0
