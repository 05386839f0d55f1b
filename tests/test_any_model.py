"""Any model in: named-array data, calibration feeding every input, fidelity of any outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimline.cli.app import app
from slimline.data.arrays import NamedSamples, is_arrays_path, load_arrays
from slimline.errors import DataError
from slimline.signature import Signature

runner = CliRunner()


def _save(model: object, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def three_input_model(path: Path) -> Path:
    """x float [b, 8], ids int64 [b, 4] (Gather on an embedding initializer), state float [b, 16] ->
    logits [b, 10] and new_state [b, 16] (a recurrent cell's shape)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((100, 8)).astype(np.float32), "emb"),
        numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(np.float32), "ws"),
        numpy_helper.from_array((rng.standard_normal((16, 10)) * 0.3).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["em"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["x", "em"], ["xc"], axis=1),
        helper.make_node("MatMul", ["xc", "w1"], ["h1"]),
        helper.make_node("MatMul", ["state", "ws"], ["hs"]),
        helper.make_node("Add", ["h1", "hs"], ["h2"]),
        helper.make_node("Tanh", ["h2"], ["new_state"]),
        helper.make_node("MatMul", ["new_state", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "three_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 16]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("new_state", TensorProto.FLOAT, ["batch", 16]),
        ],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def detector_model(path: Path, scale: float = 1.0) -> Path:
    """images float [b, 1, 4, 4] -> boxes [b, 9, 50] (a detector's output shape)."""
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(1).standard_normal((16, 450)) * scale).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["images", "in_shape"], ["pixels"]),
            helper.make_node("MatMul", ["pixels", "w"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["boxes"]),
        ],
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 9, 50])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([-1, 9, 50], np.int64), "shape"),
            numpy_helper.from_array(np.array([-1, 16], np.int64), "in_shape"),
        ],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def three_input_samples(n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {
        "x": rng.standard_normal((n, 8)).astype(np.float32),
        "ids": rng.integers(0, 100, (n, 4)),
        "state": (rng.standard_normal((n, 16)) * 0.5).astype(np.float32),
    }


# --- the arrays source --------------------------------------------------------------------------------------


def test_arrays_source_loads_splits_and_batches(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", **three_input_samples(), labels=np.arange(40) % 10)
    assert is_arrays_path(tmp_path / "d.npz") and is_arrays_path(tmp_path) and not is_arrays_path("digits")
    s = load_arrays(tmp_path / "d.npz").conform(Signature.from_onnx(three_input_model(tmp_path / "m.onnx")))
    assert len(s) == 40 and s.labels is not None and s.arrays["ids"].dtype == np.int64
    calib, held = s.split(0.25, seed=0)
    assert (len(calib), len(held)) == (30, 10)
    assert sorted(np.concatenate([calib.arrays["x"], held.arrays["x"]]).sum(1)) == sorted(s.arrays["x"].sum(1))
    assert calib.split(0.25, seed=0)[0].arrays["x"].tobytes() == calib.split(0.25, seed=0)[0].arrays["x"].tobytes()
    batches = list(s.batches(16))
    assert [len(b["x"]) for b in batches] == [16, 16, 8] and set(batches[0]) == {"x", "ids", "state"}
    assert len(s.sample(5, seed=1)) == 5
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, v in three_input_samples(6).items():
        np.save(folder / f"{k}.npy", v)
    assert sorted(load_arrays(folder).names) == ["ids", "state", "x"]


def test_arrays_source_errors_are_one_line(tmp_path: Path) -> None:
    sig = Signature.from_onnx(three_input_model(tmp_path / "m.onnx"))
    with pytest.raises(DataError) as e:
        NamedSamples({"x": np.zeros((4, 8), np.float32)}, source="c.npz").conform(sig)
    msg = str(e.value)
    assert "\n" not in msg and "ids, state" in msg and "x, ids, state" in msg
    with pytest.raises(DataError, match="different sample counts") as e:
        NamedSamples({"x": np.zeros((4, 8)), "ids": np.zeros((3, 4))})
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="not numeric"):
        NamedSamples({"x": np.array(["a", "b"])})
    with pytest.raises(DataError, match="does not exist"):
        load_arrays(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 8)))  # CLI: one line naming the missing inputs
    r = runner.invoke(
        app,
        [
            "eval",
            "-m",
            str(tmp_path / "m.onnx"),
            "--reference",
            str(tmp_path / "m.onnx"),
            "-d",
            str(tmp_path / "bad.npz"),
        ],
    )
    assert r.exit_code != 0 and "ids, state" in r.output and "Traceback" not in r.output


# --- quantize any ONNX model with named calibration arrays --------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_quantize_three_inputs_feeds_every_input(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.quant.backends import get_backend

    ok, why = get_backend(backend).available()
    if not ok:
        pytest.skip(why)
    import slimline.quant.backends.openvino as ov_mod
    import slimline.quant.backends.ort as ort_mod

    fed: list[set[str]] = []
    for mod in (ort_mod, ov_mod):
        real = mod.calibration_feeds

        def spy(calib, names, batch_size, real=real):  # type: ignore[no-untyped-def]
            feeds = real(calib, names, batch_size)
            fed.extend(set(f) for f in feeds)
            return feeds

        monkeypatch.setattr(mod, "calibration_feeds", spy)
    model = three_input_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **three_input_samples())
    out, js = tmp_path / "q", tmp_path / "q.json"
    r = runner.invoke(
        app,
        [
            "quantize",
            "-m",
            str(model),
            "-d",
            str(tmp_path / "calib.npz"),
            "-b",
            backend,
            "-o",
            str(out),
            "--json",
            str(js),
        ],
    )
    assert r.exit_code == 0, r.output
    assert fed and all(f == {"x", "ids", "state"} for f in fed)
    summary = json.loads(js.read_text())
    fid = summary["fidelity"]
    assert fid["split"] == "held-out" and fid["n"] == 10 and set(fid["outputs"]) == {"logits", "new_state"}
    assert 0.5 < fid["min_cosine"] <= 1.0 + 1e-9 and fid["max_abs_diff"] < 1.0
    assert "top1_agreement" in fid["outputs"]["logits"]
    assert summary["verification"]["runs"] == "ok"
    assert summary["calibration"]["inputs"] == ["x", "ids", "state"]
    assert "cosine min" in r.output
    art = (
        json.loads((out / "01_quantize" / "artifact.json").read_text())
        if (out / "01_quantize" / "artifact.json").exists()
        else None
    )
    assert art is None or art["kind"] in ("onnx", "openvino")


def test_calibration_feeds_error_names_inputs() -> None:
    from slimline.errors import RecipeError
    from slimline.quant.backends.base import calibration_feeds

    with pytest.raises(RecipeError, match=r"3 inputs \(x, ids, state\).*calib.npz"):
        calibration_feeds(np.zeros((4, 8), np.float32), ["x", "ids", "state"], 2)
    s = NamedSamples({"x": np.zeros((5, 8), np.float32)})
    with pytest.raises(RecipeError, match="no array for input"):
        calibration_feeds(s, ["x", "ids"], 2)
    assert [len(f["x"]) for f in calibration_feeds(s, ["x"], 2)] == [2, 2, 1]


# --- eval: fidelity of any model -----------------------------------------------------------------------------


def test_eval_fidelity_detector_outputs(tmp_path: Path) -> None:
    ref = detector_model(tmp_path / "ref.onnx")
    cand = detector_model(tmp_path / "cand.onnx", scale=1.01)
    np.savez(tmp_path / "d.npz", images=np.random.default_rng(3).standard_normal((12, 1, 4, 4)).astype(np.float32))
    js = tmp_path / "e.json"
    r = runner.invoke(
        app, ["eval", "-m", str(cand), "--reference", str(ref), "-d", str(tmp_path / "d.npz"), "--json", str(js)]
    )
    assert r.exit_code == 0, r.output
    f = json.loads(js.read_text())["fidelity"]["boxes"]
    assert f["min_cosine"] == pytest.approx(1.0, abs=1e-5) and f["max_abs_diff"] > 0 and f["mean_abs_diff"] > 0
    assert "top1_agreement" not in f and "boxes: cosine min" in r.output
    # labels without a reference: no [batch, classes] output to score, so it says fidelity needs a reference
    np.savez(tmp_path / "l.npz", images=np.zeros((4, 1, 4, 4), np.float32), labels=np.zeros(4, np.int64))
    r = runner.invoke(app, ["eval", "-m", str(cand), "-d", str(tmp_path / "l.npz")])
    assert r.exit_code != 0 and "only fidelity" in r.output and "Traceback" not in r.output


def test_eval_fidelity_detector_on_image_dataset(tmp_path: Path) -> None:
    """A detector evaluated against a reference on a named dataset gives fidelity, not a broadcast traceback."""
    from slimline.api import evaluate_model
    from slimline.data.base import ArrayDataset, DataSpec

    spec = DataSpec("tiny", (1, 4, 4), 10, tuple(str(i) for i in range(10)), (0.5,), (0.25,))
    ds = ArrayDataset(np.random.default_rng(4).integers(0, 255, (6, 4, 4, 1)).astype(np.uint8), np.zeros(6), spec)
    ref = detector_model(tmp_path / "ref.onnx")
    m = evaluate_model(detector_model(tmp_path / "cand.onnx", 1.02), ds, reference=ref)
    assert set(m["fidelity"]) == {"boxes"} and m["fidelity"]["boxes"]["min_cosine"] > 0.99


def test_eval_classification_with_labels(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from slimline.api import evaluate_model

    w = np.eye(8, 10, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])],
        "cls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "w")],
    )
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "c.onnx")
    x = np.eye(8, dtype=np.float32)
    m = evaluate_model(model, NamedSamples({"x": x}, np.arange(8)))
    assert m["top1"] == 100.0 and m["n"] == 8
    m = evaluate_model(model, NamedSamples({"x": x}, np.arange(8)), reference=model)
    assert m["fidelity"]["scores"]["top1_agreement"] == 100.0 and m["top1"] == 100.0


def test_quantize_gru_with_state_input_on_batch_axis_1(tmp_path: Path) -> None:
    """A GRU exported with h0 ([layers, batch, hidden]) as an input calibrates: samples stay first in the npz
    and batches put them on the model's batch axis."""
    import torch

    class Cell(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru, self.fc = torch.nn.GRU(8, 16, batch_first=True), torch.nn.Linear(16, 5)

        def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y, h = self.gru(x, h0)
            return self.fc(y[:, -1]), h

    model = tmp_path / "gru.onnx"
    torch.onnx.export(
        Cell().eval(),
        (torch.randn(1, 6, 8), torch.zeros(1, 1, 16)),
        str(model),
        input_names=["x", "h0"],
        output_names=["logits", "hn"],
        opset_version=13,
        dynamo=False,
        dynamic_axes={"x": {0: "batch"}, "h0": {1: "batch"}, "logits": {0: "batch"}, "hn": {1: "batch"}},
    )
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "c.npz", x=rng.standard_normal((20, 6, 8)).astype(np.float32), h0=np.zeros((20, 1, 16), np.float32)
    )
    s = load_arrays(tmp_path / "c.npz").conform(Signature.from_onnx(model))
    assert next(s.batches(4))["h0"].shape == (1, 4, 16)
    js = tmp_path / "q.json"
    r = runner.invoke(
        app, ["quantize", "-m", str(model), "-d", str(tmp_path / "c.npz"), "-o", str(tmp_path / "q"), "--json", str(js)]
    )
    assert r.exit_code == 0, r.output
    assert set(json.loads(js.read_text())["fidelity"]["outputs"]) == {"logits", "hn"}
