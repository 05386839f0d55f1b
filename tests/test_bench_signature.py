"""bench and fuse over a model's signature: several named inputs of any dtype, dynamic spatial dimensions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimline.cli import app

FAST = ["--min-runs", "2", "--min-seconds", "0.05", "--warmup", "1", "--no-peak", "--no-tuned-batch"]
VOCAB = 50  # fewer rows than the default id range (0..100): the ids must come from the table size


def two_input_onnx(path: Path) -> Path:
    """float x [batch, 4], int64 ids [batch, seq] -> y = x + mean(table[ids], axis=1), and emb = table[ids]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((VOCAB, 4)).astype(np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Add", ["x", "pooled"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "sequence", 4]),
        ],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dynamic_conv_onnx(path: Path) -> Path:
    """A tiny conv net exported with dynamic batch, height and width."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    torch.onnx.export(
        net.eval(),
        torch.zeros(1, 3, 32, 32),
        str(path),
        input_names=["images"],
        output_names=["features"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def _bench(args: list[str], tmp_path: Path) -> tuple[int, str, dict | None]:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", *args, *FAST, "--json", str(out), "--workdir", str(tmp_path / "w")])
    doc = json.loads(out.read_text()) if out.exists() else None
    return res.exit_code, res.output, doc


def test_bench_two_input_model_on_onnxruntime_and_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model = two_input_onnx(tmp_path / "two.onnx")
    code, output, doc = _bench(
        [
            str(model),
            "-r",
            "onnxruntime",
            "-r",
            "openvino",
            "-b",
            "1",
            "-b",
            "3",
            "--input-shape",
            "x=1x4",
            "--input-shape",
            "ids=1x6",
        ],
        tmp_path,
    )
    assert code == 0, output
    assert doc is not None and len(doc["results"]) == 4
    for r in doc["results"]:
        assert r["status"] == "ok", r["error"]
        assert r["input_shapes"] == {"x": [1, 4], "ids": [1, 6]}
        assert r["runs"] >= 2
    assert doc["settings"]["input_shapes"] == {"x": [1, 4], "ids": [1, 6]}


def test_bench_dynamic_spatial_dims_need_an_input_shape(tmp_path: Path) -> None:
    model = dynamic_conv_onnx(tmp_path / "conv.onnx")
    code, output, doc = _bench([str(model), "-r", "onnxruntime", "--input-shape", "images=1x3x64x64"], tmp_path)
    assert code == 0, output
    assert doc is not None and doc["results"][0]["status"] == "ok"
    assert doc["results"][0]["input_shapes"] == {"images": [1, 3, 64, 64]}
    chw = [str(model), "-r", "onnxruntime", "-b", "2", "--input-shape", "3,48,40"]
    code, output, doc = _bench(chw, tmp_path / "chw")
    assert code == 0, output  # the older bare C,H,W form names the only input
    assert doc is not None and doc["results"][0]["input_shapes"] == {"images": [1, 3, 48, 40]}
    code, output, doc = _bench([str(model), "-r", "onnxruntime"], tmp_path / "again")
    assert code == 1 and doc is None
    line = " ".join(output.split())
    assert "dynamic dimension 'height'" in line and "--input-shape images=1x3xNxN" in line


def test_bench_exits_1_when_nothing_was_measured(tmp_path: Path) -> None:
    model = two_input_onnx(tmp_path / "two.onnx")
    # torch runs torch artifacts only: the one pair is skipped, so nothing is measured
    code, output, doc = _bench([str(model), "-r", "torch", "--input-shape", "ids=1x6"], tmp_path)
    assert code == 1, output
    flat = " ".join(output.split())
    assert "skipped: two.onnx | torch:" in flat
    assert "nothing was measured" in flat
    assert doc is not None and doc["results"] == [] and len(doc["skipped"]) == 1
    # a combination that fails in its worker: a batch the fixed-batch model cannot take
    fixed = tmp_path / "fixed.onnx"
    import onnx

    proto = onnx.load(str(model))
    for v in [*proto.graph.input, *proto.graph.output]:
        v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(fixed))
    code, output, doc = _bench([str(fixed), "-r", "onnxruntime", "-b", "2"], tmp_path / "fixed")
    assert code == 1, output
    assert doc is not None and doc["results"][0]["status"] == "error"
    assert "no batch axis" in doc["results"][0]["error"]
    assert "nothing was measured" in " ".join(output.split())


def test_fuse_two_input_onnx_checks_parity_per_output(tmp_path: Path) -> None:
    model = two_input_onnx(tmp_path / "two.onnx")
    out = tmp_path / "fused"
    res = CliRunner().invoke(app, ["fuse", str(model), "-o", str(out), "--json", str(tmp_path / "fuse.json")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "fuse.json").read_text())
    parity = rec["parity"]
    assert set(parity) >= {"model", "ort_model"}
    for v in parity.values():
        assert set(v["outputs"]) == {"y", "emb"}
        assert v["max_abs_diff"] < 1e-4 and v["against"].startswith("two/model.onnx")
    assert rec["parity_inputs"] == {"x": [4, 4], "ids": [4, 128]}


def test_fuse_says_why_parity_was_not_checked(tmp_path: Path) -> None:
    model = dynamic_conv_onnx(tmp_path / "conv.onnx")
    args = ["fuse", str(model), "-o", str(tmp_path / "f"), "--ort-level", "none", "--no-simplify"]
    res = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "a.json").read_text())
    assert "parity" not in rec and "dynamic dimension 'height'" in rec["parity_not_checked"]
    assert "parity not checked" in " ".join(res.output.split())
    res = CliRunner().invoke(app, [*args, "--input-shape", "images=1x3x40x40", "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "b.json").read_text())
    assert rec["parity"]["model"]["outputs"] == {"features": 0.0}
    assert rec["parity_inputs"] == {"images": [4, 3, 40, 40]}
