"""ONNX and OpenVINO export: dynamic batch, opset choice, external data, checker, parity, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from slimline import onnx_export
from slimline.artifact import Artifact, save_torch
from slimline.errors import ExportError
from slimline.models import load_model
from slimline.onnx_export import choose_opset, export_onnx_artifact, ort_outputs, parity, torch_outputs

META = {"model": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 10}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = load_model("small_cnn")
    return model, tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def onnx_art(small: tuple[nn.Module, Path]) -> tuple[Artifact, dict]:
    model, d = small
    return export_onnx_artifact(model, d / "onnx", META, [{"step": "baseline"}], seed=1)


def test_onnx_export_dynamic_batch_checker_and_record(small, onnx_art) -> None:
    model, _ = small
    art, rec = onnx_art
    assert art.kind == "onnx" and art.files == {"model": "model.onnx"}
    onnx.checker.check_model(str(art.model_file))
    proto = onnx.load(str(art.model_file))
    assert proto.opset_import[0].version == rec["opset"] == choose_opset()
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    for n in (1, 5):  # one export serves every batch size
        x = np.random.default_rng(n).standard_normal((n, 1, 28, 28)).astype(np.float32)
        got, ref = ort_outputs(art.model_file, x), torch_outputs(model, x)
        assert got.shape == (n, 10)
        assert parity(ref, got)["max_rel_diff"] < 1e-4
    par = rec["parity"]
    assert par["passed"] and par["tolerance"] == 1e-4 and 0 <= par["max_rel_diff"] < 1e-4
    assert par["max_abs_diff"] >= 0 and par["against"] == "PyTorch" and par["batch"] == 4
    assert rec["file_bytes"] == art.size_bytes() > 100_000 and rec["external_data"] is False
    saved = json.loads((art.path / "artifact.json").read_text())
    assert saved["meta"]["input_shape"] == [1, 28, 28] and saved["kind"] == "onnx"


def test_opset_follows_installed_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.11.1")
    assert onnx_export.ort_max_opset() == 16 and choose_opset() == 16
    monkeypatch.setattr(onnxruntime, "__version__", "1.9.0")
    assert choose_opset() == 15
    monkeypatch.setattr(onnxruntime, "__version__", "1.32.0")
    assert choose_opset() == onnx_export.DEFAULT_OPSET


def test_external_data_above_threshold(small) -> None:
    model, d = small
    art, rec = export_onnx_artifact(model, d / "onnx_ext", META, [], external_data_threshold=0)
    assert rec["external_data"] is True
    assert art.files == {"model": "model.onnx", "weights": "model.onnx.data"}
    graph_bytes = (art.path / "model.onnx").stat().st_size
    data_bytes = (art.path / "model.onnx.data").stat().st_size
    assert data_bytes > 100_000 > graph_bytes  # the weights left the protobuf
    onnx.checker.check_model(str(art.model_file))
    x = np.ones((2, 1, 28, 28), np.float32)
    assert parity(torch_outputs(model, x), ort_outputs(art.model_file, x))["max_rel_diff"] < 1e-4
    assert sorted(p.name for p in art.path.iterdir()) == ["artifact.json", "model.onnx", "model.onnx.data"]


class _Svd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x.flatten(1)[:, :4].reshape(-1, 2, 2))[1]


class _WithSvd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Sequential(nn.Flatten(), _Svd())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


def test_unsupported_operator_names_operator_and_module(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as e:
        export_onnx_artifact(_WithSvd(), tmp_path / "bad", {"input_shape": [1, 8, 8]}, [])
    msg = str(e.value)
    assert "aten::linalg_svd" in msg and "'head.1'" in msg and "_Svd" in msg
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_parity_catches_a_broken_export(small, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An exporter that writes slightly wrong weights is caught by the parity check of the step."""
    from slimline.steps.export_onnx import ExportOnnx

    model, _ = small
    real_export = onnx_export.export_onnx

    def broken(m: nn.Module, shape, path, *args, **kwargs):
        import copy

        bad = copy.deepcopy(m)
        with torch.no_grad():
            bad.classifier.bias.add_(0.05)
        return real_export(bad, shape, path, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    src = save_torch(model, tmp_path / "00_baseline", META, [{"step": "baseline"}])

    class Ctx:
        out_dir = tmp_path / "01_export_onnx"
        seed = 0

    with pytest.raises(ExportError, match=r"disagrees with PyTorch: max relative difference .* > tolerance 0.0001"):
        ExportOnnx().apply(src, Ctx())  # type: ignore[arg-type]
    assert not Ctx.out_dir.exists()
    # a loose enough tolerance accepts the same export, and the record says by how much it differs
    out = ExportOnnx(ExportOnnx.Config(rtol=0.5)).apply(src, Ctx())  # type: ignore[arg-type]
    assert out.artifact is not None and 1e-4 < out.record["parity"]["max_rel_diff"] < 0.5


def test_openvino_from_onnx_checked_against_onnxruntime(small, onnx_art) -> None:
    from slimline.openvino_export import export_openvino_artifact, openvino_outputs

    model, d = small
    src, _ = onnx_art
    art, rec = export_openvino_artifact(src, d / "ov_from_onnx", META, [], seed=2)
    assert art.kind == "openvino" and art.files == {"model": "model.xml", "weights": "model.bin"}
    assert (art.path / "model.bin").stat().st_size > 100_000  # fp32 weights, not compressed to fp16
    assert rec["source"] == "onnx" and rec["parity"]["against"] == "ONNX Runtime" and rec["parity"]["passed"]
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)  # dynamic batch
    assert parity(torch_outputs(model, x), openvino_outputs(art.model_file, x))["max_rel_diff"] < 1e-4


def test_openvino_from_torch_checked_against_pytorch(small) -> None:
    from slimline.openvino_export import export_openvino_artifact

    model, d = small
    art, rec = export_openvino_artifact(model, d / "ov_from_torch", META, [])
    assert rec["source"] == "torch" and rec["parity"]["against"] == "PyTorch"
    assert rec["parity"]["max_rel_diff"] < 1e-4 and rec["file_bytes"] == art.size_bytes()


def test_recipe_exports_then_evaluates_the_same(tmp_path: Path) -> None:
    """export_onnx -> export_openvino -> evaluate through the pipeline, on a slice of Fashion-MNIST."""
    pytest.importorskip("openvino")
    from slimline.api import run

    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not installed")
    results = run(
        {
            "name": "export",
            "model": "small_cnn",
            "data": {"name": "fashion-mnist", "train_limit": 200, "test_limit": 100},
            "steps": [{"export_onnx": {}}, {"export_openvino": {}}, {"evaluate": {}}],
            "output_dir": str(tmp_path / "run"),
        }
    )
    onnx_rec, ov_rec, ev = (s["record"] for s in results["stages"][1:])
    assert onnx_rec["parity"]["passed"] and ov_rec["parity"]["against"] == "ONNX Runtime"
    assert Artifact.load(tmp_path / "run" / "02_export_openvino").kind == "openvino"
    assert ev["metrics"]["runtime"] == "openvino" and ev["metrics"]["top1_agreement"] == 100.0


def test_cli_export(tmp_path: Path) -> None:
    from slimline.cli import app

    out, j = tmp_path / "cli_onnx", tmp_path / "export.json"
    r = CliRunner().invoke(app, ["export", "small_cnn", "--format", "onnx", "-o", str(out), "--json", str(j)])
    assert r.exit_code == 0, r.output
    doc = json.loads(j.read_text())
    assert doc["format"] == "onnx" and doc["parity"]["max_rel_diff"] < 1e-4 and doc["files"] == {"model": "model.onnx"}
    lineage = Artifact.load(out).lineage
    assert [s["step"] for s in lineage] == ["baseline", "export_onnx"]
    bad = CliRunner().invoke(app, ["export", "small_cnn", "--format", "coreml", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "--format must be onnx, openvino, tflite or triton" in bad.output


@pytest.mark.slow
def test_cifar_resnet56_exports_keep_top1(request: pytest.FixtureRequest) -> None:
    """ONNX and OpenVINO exports of pretrained cifar_resnet56 give PyTorch's top-1 on 1,000 CIFAR-10 images.

    About 2 minutes on a busy 2-core machine: runs with ``-m slow`` or SLIMLINE_SLOW=1 only.
    """
    import os

    if "slow" not in (request.config.getoption("-m") or "") and os.environ.get("SLIMLINE_SLOW") != "1":
        pytest.skip("slow: run with -m slow or SLIMLINE_SLOW=1")
    from conftest import RESNET56

    if not RESNET56.exists():
        pytest.skip("pretrained cifar_resnet56 weights not found")
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "export_parity" / "parity.py"), "--weights", str(RESNET56)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["n"] == 1000
    assert doc["top1"]["torch"] == doc["top1"]["onnxruntime"] == doc["top1"]["openvino"]
    assert doc["top1_agreement"]["onnxruntime"] == doc["top1_agreement"]["openvino"] == 100.0
    assert doc["checks"] and all(doc["checks"].values())


def test_openvino_export_of_an_onnx_file_with_named_input_shapes(tmp_path: Path) -> None:
    """An ONNX file's own outputs stay in the plan when --input-shape NAME=... fixes its dynamic dims (two outputs
    used to end in an unexpected zip() error); an input name the file lacks is one line naming its inputs."""
    from onnx import TensorProto, helper

    from slimline.cli import app

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, "h", "w"])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3, "h", "w"]) for n in ("boxes", "scores")]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["boxes"]), helper.make_node("Sigmoid", ["images"], ["scores"])],
        "g",
        [x],
        outs,
    )
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ok = CliRunner().invoke(
        app, ["export", str(path), "-f", "openvino", "--input-shape", "images=1x3x32x32", "-o", str(tmp_path / "ov")]
    )
    assert ok.exit_code == 0, ok.output
    sig = json.loads((tmp_path / "ov" / "artifact.json").read_text())["meta"]["signature"]
    assert [o["name"] for o in sig["outputs"]] == ["boxes", "scores"]
    bad = CliRunner().invoke(
        app, ["export", str(path), "-f", "openvino", "--input-shape", "imgs=1x3x32x32", "-o", str(tmp_path / "ov2")]
    )
    assert bad.exit_code == 1 and "does not have; its inputs: images" in bad.output
    assert not (tmp_path / "ov2").exists()
