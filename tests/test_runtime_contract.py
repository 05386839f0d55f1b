"""The runtime contract: every registered runtime runs named inputs of any dtype (float features, int64 token ids,
float state) with dynamic batch and sequence axes, and gives PyTorch's outputs, on the torch artifact and on its
ONNX and OpenVINO exports; each artifact records the signature it was made with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimline.artifact import Artifact, save_torch
from slimline.errors import SlimlineError
from slimline.models import load_model, trusted_factories
from slimline.onnx_export import export_onnx_artifact, ort_run
from slimline.runtimes import get_runtime, open_session, runtime_names
from slimline.signature import Signature, TensorSpec, artifact_signature

FACTORY = "test_runtime_contract:three_input_model"
VOCAB = 120
SIGNATURE = Signature(
    (
        TensorSpec("features", "float32", ("batch", 8)),
        TensorSpec("ids", "int64", ("batch", "sequence")),
        TensorSpec("state", "float32", ("batch", 16)),
    ),
    (TensorSpec("logits", "float32", ("batch", 4)), TensorSpec("tokens", "float32", ("batch", "sequence", 16))),
)
SHAPES = [(1, 5), (3, 7)]  # (batch, sequence): neither is the export's example shape


class ThreeInputs(nn.Module):
    """Features [batch, 8], token ids [batch, sequence] (Embedding), state [batch, 16] -> logits, per-token states."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.feat = nn.Linear(8, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, features: torch.Tensor, ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens = torch.tanh(self.emb(ids) + (self.feat(features) + self.mix(state))[:, None, :])
        return self.head(tokens.mean(1)), tokens


def three_input_model() -> nn.Module:
    model = ThreeInputs()
    model.slimline_signature = SIGNATURE  # type: ignore[assignment]
    return model


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "features": rng.standard_normal((batch, 8)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64),
        "state": rng.standard_normal((batch, 16)).astype(np.float32),
    }


def reference(model: nn.Module, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        logits, tokens = model(*(torch.from_numpy(f[n]) for n in ("features", "ids", "state")))
    return {"logits": logits.numpy(), "tokens": tokens.numpy()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, dict[str, Artifact]]:
    d = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    model = load_model(FACTORY)
    arts = {"torch": save_torch(model, d / "torch", {"model": FACTORY}, [{"step": "baseline"}])}
    arts["onnx"], _ = export_onnx_artifact(model, d / "onnx", arts["torch"].meta, [])
    ok, _ = get_runtime("openvino").available() if "openvino" in runtime_names() else (False, "")
    if ok:
        from slimline.openvino_export import export_openvino_artifact

        arts["openvino"], _ = export_openvino_artifact(model, d / "openvino", arts["torch"].meta, [])
    if "litert" in runtime_names() and get_runtime("litert").available()[0]:  # .tflite: shapes fixed at export
        from slimline.tflite_export import export_tflite_artifact

        arts["tflite"], _ = export_tflite_artifact(model, d / "tflite", arts["torch"].meta, [], shapes={"ids": [1, 5]})
    return model, arts


def _contract_cases() -> list[tuple[str, str]]:
    return [(rt, kind) for rt in runtime_names() for kind in ("torch", "onnx", "openvino", "tflite")]


@pytest.mark.parametrize(("runtime", "kind"), _contract_cases())
def test_every_runtime_runs_named_inputs_like_pytorch(runtime: str, kind: str, artifacts) -> None:
    cls = get_runtime(runtime)
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"runtime {runtime} is not usable here: {why}")
    if kind not in cls.kinds:
        pytest.skip(f"runtime {runtime} does not run {kind} artifacts")
    model, arts = artifacts
    if kind not in arts:
        pytest.skip(f"no {kind} artifact here (its exporter is not installed)")
    with trusted_factories(FACTORY):
        session = open_session(arts[kind], runtime)
    fixed = artifact_signature(arts[kind]).inputs[1].shape[1]  # an int where the format fixes shapes at export
    shapes = SHAPES if not isinstance(fixed, int) else [(b, fixed) for b, _ in SHAPES]
    for batch, seq in SHAPES:  # a fixed-shape format refuses another sequence length in one line naming the fix
        if isinstance(fixed, int) and seq != fixed:
            with pytest.raises(SlimlineError, match=r"input 'ids'.*re-export"):
                session.run_named(feeds(batch, seq, seed=batch))
    for batch, seq in shapes:
        f = feeds(batch, seq, seed=batch)
        got, want = session.run_named(f), reference(model, f)
        assert set(got) == {"logits", "tokens"}, f"{runtime} on {kind}: outputs {sorted(got)}"
        for name, ref in want.items():
            assert got[name].shape == ref.shape, f"{runtime} on {kind}: {name} {got[name].shape} != {ref.shape}"
            np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-5, err_msg=f"{runtime} on {kind}: {name}")


@pytest.mark.parametrize("kind", ["torch", "onnx", "openvino"])
def test_every_artifact_records_the_signature(kind: str, artifacts) -> None:
    _, arts = artifacts
    if kind not in arts:
        pytest.skip(f"no {kind} artifact here (its exporter is not installed)")
    saved = Artifact.load(arts[kind].path)
    assert "signature" in saved.meta
    sig = artifact_signature(saved)
    assert [(t.name, t.dtype) for t in sig.inputs] == [("features", "float32"), ("ids", "int64"), ("state", "float32")]
    assert [t.dynamic for t in sig.inputs] == [{0: "batch"}, {0: "batch", 1: "sequence"}, {0: "batch"}]
    assert sig.output_names == ["logits", "tokens"]
    assert [t.dynamic for t in sig.outputs] == [{0: "batch"}, {0: "batch", 1: "sequence"}]


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 50, width: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(width, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(ids)))


def test_transformer_encoder_with_int64_ids_exports_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    sig = Signature((TensorSpec("ids", "int64", ("batch", "sequence")),))
    art, rec = export_onnx_artifact(model, tmp_path / "onnx", {"signature": sig.to_dict()}, [])
    assert rec["parity"]["passed"] and torch.backends.mha.get_fastpath_enabled()  # the fast path is back on
    saved = artifact_signature(Artifact.load(art.path))
    assert saved.inputs[0].dtype == "int64" and saved.inputs[0].dynamic == {0: "batch", 1: "sequence"}
    assert saved.outputs[0].dynamic == {0: "batch", 1: "sequence"}  # found by running the model
    for batch, seq in SHAPES:
        ids = np.random.default_rng(seq).integers(0, 50, (batch, seq)).astype(np.int64)
        with torch.inference_mode():
            want = model(torch.from_numpy(ids)).numpy()
        np.testing.assert_allclose(ort_run(art.model_file, {"ids": ids})[0], want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    d = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    model = load_model("small_cnn")
    meta = {"model": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 10}
    arts = {"torch": save_torch(model, d / "torch", meta, [])}
    arts["onnx"], _ = export_onnx_artifact(model, d / "onnx", meta, [])
    if "litert" in runtime_names() and get_runtime("litert").available()[0]:  # .tflite: fixed shapes, batch 1
        from slimline.tflite_export import export_tflite_artifact

        arts["tflite"], _ = export_tflite_artifact(model, d / "tflite", meta, [])
    return arts


@pytest.mark.parametrize(("runtime", "kind"), [(rt, k) for rt in runtime_names() for k in ("torch", "onnx", "tflite")])
def test_classifier_run_and_run_named_agree(runtime: str, kind: str, classifier: dict[str, Artifact]) -> None:
    cls = get_runtime(runtime)
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"runtime {runtime} is not usable here: {why}")
    if kind not in cls.kinds:
        pytest.skip(f"runtime {runtime} does not run {kind} artifacts")
    if kind not in classifier:
        pytest.skip(f"no {kind} artifact here (its exporter is not installed)")
    art = classifier[kind]
    assert artifact_signature(art) == Signature.classifier([1, 28, 28], 10)
    session = open_session(art, runtime)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    named = session.run_named({"input": x})
    assert list(named) == ["output"]
    np.testing.assert_allclose(named["output"], session.run(x), rtol=1e-5, atol=1e-6)


def embedding_bag_model() -> nn.Module:
    """A factory for the CLI test: int64 token ids [batch, sequence] -> 3 scores."""
    return nn.Sequential(nn.Embedding(30, 8), nn.Linear(8, 3))


def test_cli_exports_a_model_taking_int64_ids(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    out = tmp_path / "ids_onnx"
    args = [
        "export",
        "test_runtime_contract:embedding_bag_model",
        "-o",
        str(out),
        "--input-shape",
        "ids=1x6",
        "--input-dtype",
        "ids=int64",
        "--dynamic",
        "ids=0:batch,1:sequence",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    sig = artifact_signature(Artifact.load(out))
    assert sig.inputs == (TensorSpec("ids", "int64", ("batch", "sequence")),)
    ids = np.random.default_rng(0).integers(0, 30, (2, 9)).astype(np.int64)
    assert ort_run(out / "model.onnx", {"ids": ids})[0].shape == (2, 9, 3)
    bad = CliRunner().invoke(app, [*args[:6], "--input-dtype", "mask=bool"])
    assert bad.exit_code == 1 and "input 'mask' has no --input-shape mask=" in bad.output
