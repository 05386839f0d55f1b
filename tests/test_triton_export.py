"""export --format triton: a model repository whose config.pbtxt Triton's own schema (tritonclient's ModelConfig
protobuf) parses, with the signature (batch axis left out), dynamic batching and instances; the model file copied
beside it; a model without a leading batch axis gets max_batch_size 0 and no batching."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

pytest.importorskip("tritonclient.grpc")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from slimline.artifact import Artifact  # noqa: E402
from slimline.errors import ExportError  # noqa: E402
from slimline.onnx_export import export_onnx_artifact  # noqa: E402
from slimline.signature import Signature, TensorSpec  # noqa: E402
from slimline.triton_export import export_triton, model_config, parse_config  # noqa: E402


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    dest = tmp_path_factory.mktemp("onnx") / "tiny"
    art, _ = export_onnx_artifact(model, dest, {"input_shape": [3, 8, 8], "num_classes": 5}, [])
    return art


def test_repository_layout_and_config_parse_with_tritons_schema(onnx_artifact: Artifact, tmp_path: Path) -> None:
    rec = export_triton(onnx_artifact, tmp_path / "repo", "tiny", max_batch=16, instances=2)
    root = tmp_path / "repo" / "tiny"
    assert (root / "1" / "model.onnx").read_bytes() == onnx_artifact.model_file.read_bytes()
    cfg = text_format.Parse((root / "config.pbtxt").read_text(), pb.ModelConfig())
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("tiny", "onnxruntime_onnx", 16)
    assert [(i.name, pb.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("input", "TYPE_FP32", [3, 8, 8])
    ]
    assert [list(o.dims) for o in cfg.output] == [[5]]
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 5000
    assert (cfg.instance_group[0].count, cfg.instance_group[0].kind) == (2, pb.ModelInstanceGroup.KIND_CPU)
    assert rec["files"] == ["tiny/1/model.onnx", "tiny/config.pbtxt"]
    export_triton(onnx_artifact, tmp_path / "repo", "tiny", max_batch=4)  # replaces the model in place
    assert "max_batch_size: 4" in (root / "config.pbtxt").read_text()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["tiny"]  # no temporary folders left


def test_unbatched_signature_and_dynamic_dims() -> None:
    sig = Signature((TensorSpec("ids", "int64", (1, "sequence")),), (TensorSpec("out", "float32", (1, "sequence")),))
    cfg = model_config(sig, "m", "onnxruntime_onnx")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, -1] and cfg.input[0].data_type == pb.TYPE_INT64
    sig2 = Signature((TensorSpec("ids", "int64", ("batch", "sequence")),), (TensorSpec("o", "float32", ("batch", 2)),))
    assert list(model_config(sig2, "m", "onnxruntime_onnx").input[0].dims) == [-1]


def test_refusals_are_one_line(onnx_artifact: Artifact, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="Triton has no type"):
        model_config(Signature((TensorSpec("s", "str", ("batch",)),)), "m", "onnxruntime_onnx")
    with pytest.raises(ExportError, match="Triton's ModelConfig schema"):
        parse_config('name: "m"\nmax_batch_size: "lots"\n')
    torch_art = Artifact("torch", onnx_artifact.path, {"model": "model.pt"}, {}, [])
    with pytest.raises(ExportError, match="export it to onnx first"):
        export_triton(torch_art, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_cli_writes_a_repository_from_an_artifact(onnx_artifact: Artifact, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    r = CliRunner().invoke(
        app,
        [
            "export",
            str(onnx_artifact.path),
            "-f",
            "triton",
            "-o",
            str(tmp_path / "mr"),
            "--max-batch",
            "8",
            "--instances",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = parse_config((tmp_path / "mr" / "tiny" / "config.pbtxt").read_text())
    assert (cfg.max_batch_size, cfg.instance_group[0].count) == (8, 3)
    r = CliRunner().invoke(app, ["export", str(onnx_artifact.path), "-f", "tensorrt", "-o", str(tmp_path / "x")])
    assert r.exit_code == 1 and "onnx, openvino, tflite or triton" in r.output
