"""TFLite / LiteRT (issue 23): export parity on tiny models, one-line errors for operators the converter cannot
lower, the ``litert`` runtime over named inputs (the runtime contract at the export's fixed shapes) and
full-integer int8 through the ``litert`` quantization backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from typer.testing import CliRunner  # noqa: E402

from slimline.artifact import Artifact, save_torch  # noqa: E402
from slimline.cli import app  # noqa: E402
from slimline.errors import ExportError, SlimlineError  # noqa: E402
from slimline.runtimes import default_runtime, get_runtime, open_session, runtime_options  # noqa: E402
from slimline.signature import artifact_signature  # noqa: E402


class TinyResNet(nn.Module):
    """Conv, BN, ReLU, a residual add, pooling and a Linear head: the operators of the CIFAR ResNets."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = TinyResNet()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class WithSvd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(self.proj(x))


def with_svd() -> nn.Module:
    return WithSvd()


def _reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_cli_export_tflite_has_parity_and_records_the_signature(tmp_path: Path) -> None:
    out = tmp_path / "tiny_tflite"
    r = CliRunner().invoke(
        app, ["export", "test_tflite:tiny_resnet", "-f", "tflite", "-o", str(out), "--input-shape", "3,16,16"]
    )
    assert r.exit_code == 0, r.output
    art = Artifact.load(out)
    assert art.kind == "tflite" and art.files["model"] == "model.tflite" and default_runtime(art) == "litert"
    par = art.lineage[-1]["parity"]
    assert par["passed"] and par["max_rel_diff"] < 1e-4 and par["runtime"] == "litert"
    sig = artifact_signature(art)
    assert [(t.name, t.dtype, t.shape) for t in sig.inputs] == [("input", "float32", ("batch", 3, 16, 16))]
    assert sig.output_names == ["output"] and art.meta["layout"] == "NCHW"
    session = open_session(art, "litert", threads=1)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)  # 3 = batch-1 model x 3
    np.testing.assert_allclose(session.run(x), _reference(tiny_resnet(), x), rtol=1e-4, atol=1e-5)
    d = session.describe()
    assert d["name"] == "litert" and d["delegate_ran"] == "xnnpack" and d["threads"] == 1
    assert {"threads", "delegate"} <= set(runtime_options("litert"))
    plain = open_session(art, "litert", delegate="none").describe()
    assert plain["delegate_ran"] == "none" and plain["delegated_partitions"] == 0


def test_nhwc_export_takes_channels_last(tmp_path: Path) -> None:
    from slimline.tflite_export import export_tflite_artifact

    model = tiny_resnet()
    meta = {"model": "test_tflite:tiny_resnet", "input_shape": [3, 16, 16]}
    art, rec = export_tflite_artifact(model, tmp_path / "nhwc", meta, [], nhwc=True)
    assert rec["layout"] == "NHWC" and rec["parity"]["passed"]
    assert artifact_signature(art).inputs[0].shape == ("batch", 16, 16, 3)
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = open_session(art, "litert").run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, _reference(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(SlimlineError, match="exported for 1x16x16x3"):
        open_session(art, "litert").run(x)  # NCHW into an NHWC model: one line saying the shape it takes


def test_an_unsupported_operator_is_one_error_naming_it(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["export", "test_tflite:with_svd", "-f", "tflite", "-o", str(tmp_path / "svd"), "--input-shape", "x=1x4x4"]
    )
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "svd" in lines[0] and "no LiteRT lowering" in lines[0] and "--format onnx" in lines[0]
    assert not (tmp_path / "svd").exists()  # nothing half-written


def test_converter_failure_raises_export_error() -> None:
    from slimline.onnx_export import classifier_plan
    from slimline.tflite_export import convert_tflite

    with pytest.raises(ExportError, match="NHWC needs a 4-D first input"):
        convert_tflite(nn.Linear(4, 2), classifier_plan((4,)), nhwc=True)


def test_litert_runs_named_inputs_like_pytorch_at_the_exported_shapes(tmp_path: Path) -> None:
    """The runtime contract's three-input model (float features, int64 ids, float state -> two outputs), exported
    at sequence 5: named inputs of any batch give PyTorch's outputs; another sequence is one error saying how to
    re-export (TFLite shapes are fixed)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from slimline.models import load_model
    from slimline.tflite_export import export_tflite_artifact
    from test_runtime_contract import FACTORY, feeds, reference

    torch.manual_seed(0)
    model = load_model(FACTORY)
    torch_art = save_torch(model, tmp_path / "torch", {"model": FACTORY}, [])
    art, rec = export_tflite_artifact(
        model, tmp_path / "tflite", torch_art.meta, [], shapes={"features": [1, 8], "ids": [1, 5], "state": [1, 16]}
    )
    assert rec["parity"]["passed"]
    sig = artifact_signature(Artifact.load(art.path))
    assert [(t.name, t.dtype) for t in sig.inputs] == [("features", "float32"), ("ids", "int64"), ("state", "float32")]
    assert sig.output_names == ["logits", "tokens"]
    session = open_session(Artifact.load(art.path), "litert")
    for batch in (1, 3):
        f = feeds(batch, 5, seed=batch)
        got, want = session.run_named(f), reference(model, f)
        assert set(got) == {"logits", "tokens"}
        for name, ref in want.items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-5, err_msg=name)
    with pytest.raises(SlimlineError, match=r"re-export it with --input-shape ids=1x7"):
        session.run_named(feeds(1, 7))
    with pytest.raises(SlimlineError, match="missing state"):
        session.run_named({k: v for k, v in feeds(1, 5).items() if k != "state"})


@pytest.mark.parametrize("fmt", ["native", "int8_io"])
def test_litert_backend_writes_full_integer_int8(fmt: str, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_quantizer")
    from ai_edge_litert.interpreter import Interpreter

    from slimline.quant.backends import FloatModel, QuantConfig, get_backend

    model = tiny_resnet()
    calib = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    backend = get_backend("litert")
    res = backend.quantize(
        FloatModel((3, 16, 16), tmp_path / "work", torch_model=model),
        calib,
        QuantConfig(format=fmt),
        [],
        tmp_path / "q",
    )
    assert res.kind == "tflite" and res.left_float == []
    assert res.verification["min_cosine"] > 0.98
    path = tmp_path / "q" / res.files["model"]
    it = Interpreter(model_path=str(path))
    io_dtype = np.int8 if fmt == "int8_io" else np.float32
    assert it.get_input_details()[0]["dtype"] == io_dtype and it.get_output_details()[0]["dtype"] == io_dtype
    ops = {d["op_name"] for d in it._get_ops_details()}
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    conv_inputs = [tensors[d["inputs"][0]]["dtype"] for d in it._get_ops_details() if d["op_name"] == "CONV_2D"]
    assert conv_inputs and all(t == np.int8 for t in conv_inputs)  # every convolution runs on int8
    art = Artifact(
        "tflite",
        tmp_path / "q",
        dict(res.files),
        {"input_shape": [3, 16, 16], "num_classes": 5, **res.meta, "precision": "int8"},
    )
    x = calib[:4]
    got = open_session(art, "litert").run(x)  # floats in and out, whatever the model's I/O type
    assert got.dtype == np.float32 and got.shape == (4, 5)
    ref = _reference(model, x)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.95


def test_the_litert_backend_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    from slimline.errors import RecipeError
    from slimline.quant.backends import FloatModel, QuantConfig, get_backend

    backend = get_backend("litert")
    with pytest.raises(RecipeError, match="full-integer"):
        backend.check(QuantConfig(mode="dynamic"))
    src = FloatModel((3, 16, 16), tmp_path, onnx_path=tmp_path / "m.onnx")
    with pytest.raises(RecipeError, match="converts PyTorch models"):
        backend.write(src, np.zeros((1, 3, 16, 16), np.float32), QuantConfig(), [], tmp_path / "q")


def test_importing_slimline_and_listing_runtimes_loads_no_litert() -> None:
    code = (
        "import sys, slimline.runtimes as r, slimline.quant.backends as b, slimline.steps as s; "
        "r.runtime_names(); b.backend_names(); s.step_names(); "
        "print(' '.join(m for m in ('ai_edge_litert', 'litert_torch', 'ai_edge_quantizer', 'tensorflow', 'jax') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
    assert get_runtime("litert").available() == (True, "")


NET_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import numpy as np
import slimline
from slimline.quant.backends import FloatModel, QuantConfig, get_backend
from slimline.runtimes import open_session
from slimline.tflite_export import export_tflite_artifact
from test_tflite import tiny_resnet
out = sys.argv[1]
model = tiny_resnet()
art, _ = export_tflite_artifact(model, out + "/fp32", {"input_shape": [3, 16, 16]}, [])
calib = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
get_backend("litert").quantize(FloatModel((3, 16, 16), __import__("pathlib").Path(out) / "w", torch_model=model),
                               calib, QuantConfig(), [], __import__("pathlib").Path(out) / "q")
open_session(art, "litert", threads=1).run(calib)
time.sleep(1)
"""


def test_export_quantize_and_run_reach_nothing_beyond_loopback(tmp_path: Path) -> None:
    """litert-torch, ai-edge-quantizer and ai-edge-litert traced in a network namespace: no connection attempts."""
    netcheck = pytest.importorskip("netcheck")
    why = netcheck.unavailable()
    if why:
        pytest.skip(f"network check unavailable: {why}")
    import os

    script = tmp_path / "child.py"
    script.write_text(NET_CHILD)
    env = dict(os.environ) | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        "SLIMLINE_PROGRESS": "0",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path),
    }
    cmd = [sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)]
    rc, attempts = netcheck.non_loopback_attempts(cmd, env, timeout=150)
    assert rc == 0, f"the child failed (exit {rc})"
    assert attempts == [], "traffic beyond loopback:\n" + "\n".join(attempts)


class KeywordLSTM(nn.Module):
    """A speech-shaped model: features [batch, time, 13] through an LSTM to 4 keyword scores."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(13, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(feats)[0][:, -1])


@pytest.mark.parametrize("case", ["text_transformer", "speech_lstm"])
def test_text_and_speech_models_export_with_parity(case: str, tmp_path: Path) -> None:
    """A transformer encoder over int64 token ids and an LSTM over audio features, at a fixed sequence length."""
    sys.path.insert(0, str(Path(__file__).parent))
    from slimline.signature import Signature, TensorSpec
    from slimline.tflite_export import export_tflite_artifact
    from test_runtime_contract import TinyTransformer

    torch.manual_seed(0)
    if case == "text_transformer":
        model: nn.Module = TinyTransformer().eval()
        spec, shape = TensorSpec("ids", "int64", ("batch", "sequence")), [1, 12]
        x = np.random.default_rng(3).integers(0, 50, (3, 12)).astype(np.int64)
    else:
        model = KeywordLSTM().eval()
        spec, shape = TensorSpec("feats", "float32", ("batch", "time", 13)), [1, 20, 13]
        x = np.random.default_rng(3).standard_normal((3, 20, 13)).astype(np.float32)
    meta = {"signature": Signature((spec,)).to_dict()}
    art, rec = export_tflite_artifact(model, tmp_path / case, meta, [], shapes={spec.name: shape})
    assert rec["parity"]["passed"]
    sig = artifact_signature(Artifact.load(art.path))
    assert sig.inputs[0].dtype == spec.dtype and sig.inputs[0].shape == ("batch", *shape[1:])
    got = open_session(Artifact.load(art.path), "litert").run_named({spec.name: x})
    np.testing.assert_allclose(next(iter(got.values())), _reference(model, x), rtol=1e-4, atol=1e-5)
