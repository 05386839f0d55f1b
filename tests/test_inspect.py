"""``slimline inspect``: signature with named dynamic axes, operators, opset, params, MACs and runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from slimline.bench.macs import onnx_graph_macs
from slimline.cli import app
from slimline.errors import ModelError, SlimlineError
from slimline.inspect import inspect_model
from slimline.signature import parse_input_shapes

runner = CliRunner()


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def three_input_model(path: Path) -> Path:
    """x [batch, 8] float @ W [8, 16] + mean over sequence of emb[ids [batch, sequence] int64] + state [batch, 16]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W")
    emb = numpy_helper.from_array(rng.standard_normal((100, 16)).astype(np.float32), "emb")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
        helper.make_node("Add", ["xw", "m"], ["s"]),
        helper.make_node("Add", ["s", "state"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "three_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 16]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [w, emb],
    )
    return _save(graph, path)


def conv_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "B")
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "height", "width"])],
        [w, b],
    )
    return _save(graph, path)


def test_inspect_three_input_model(tmp_path: Path) -> None:
    path = three_input_model(tmp_path / "three.onnx")
    info = inspect_model(str(path))
    assert [(v["name"], v["dtype"], v["shape"]) for v in info["inputs"]] == [
        ("x", "float32", ["batch", 8]),
        ("ids", "int64", ["batch", "sequence"]),
        ("state", "float32", ["batch", 16]),
    ]
    assert info["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 16]}]
    assert info["opset"] == {"ai.onnx": 17}
    assert info["params"] == 8 * 16 + 100 * 16
    assert info["operators"] == {"Add": 2, "MatMul": 1, "Gather": 1, "ReduceMean": 1}
    assert info["macs"] == 8 * 16  # the MatMul at batch 1; Gather does no multiply-accumulate
    assert info["assumed_dims"] == {"batch": 1, "sequence": 1}
    assert info["runtimes"]["onnxruntime"]["loads"] is True

    # a shape given for one input fixes its named dims in the others too
    info4 = inspect_model(str(path), input_shapes=parse_input_shapes(["x=4x8"]))
    assert info4["macs"] == 4 * 8 * 16
    assert info4["macs_shapes"] == {"x": [4, 8], "ids": [4, 1], "state": [4, 16]}
    assert info4["assumed_dims"] == {"sequence": 1}


def test_inspect_cli_conv_model(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "conv.onnx")
    out = tmp_path / "info.json"
    res = runner.invoke(app, ["inspect", str(path), "--input-shape", "x=1x3x16x16", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "x: float32 [N, 3, height, width]" in res.output
    assert "y: float32 [N, 8, height, width]" in res.output
    assert "opset: ai.onnx 17" in res.output
    assert "params: 224" in res.output
    assert f"MACs: {8 * 16 * 16 * 3 * 3 * 3:,}" in res.output
    assert "onnxruntime: loads" in res.output
    info = json.loads(out.read_text())
    assert info["macs"] == 8 * 16 * 16 * 27
    assert info["assumed_dims"] == {}
    assert info["operators"] == {"Conv": 1, "Relu": 1}
    assert info["runtimes"]["onnxruntime"]["loads"] is True
    if info["runtimes"]["openvino"]["why"].startswith("not usable"):
        return
    assert info["runtimes"]["openvino"]["loads"] is True

    # default: every dynamic dim at 1, each one named
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert f"MACs: {8 * 27:,}" in res.output
    assert "assumed dims: N=1, height=1, width=1" in res.output


def test_onnx_macs_recurrent(tmp_path: Path) -> None:
    """LSTM: seq x batch x (W + R elements), i.e. 4 gates x (input*hidden + hidden*hidden) per step."""
    rng = np.random.default_rng(0)
    hidden, inp, seq = 20, 10, 5
    w = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, inp)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden)],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["sequence", "batch", inp])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["sequence", 1, "batch", hidden])],
        [w, r],
    )
    path = _save(graph, tmp_path / "lstm.onnx")
    counted = onnx_graph_macs(path, {"x": (seq, 1, inp)})
    assert counted.macs == seq * 4 * (inp * hidden + hidden * hidden)


def test_inspect_refuses_bad_shapes(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "conv.onnx")
    with pytest.raises(ModelError, match="inputs are x"):
        inspect_model(str(path), input_shapes={"image": (1, 3, 8, 8)})
    with pytest.raises(ModelError, match="4 dims"):
        inspect_model(str(path), input_shapes={"x": (3, 8, 8)})
    with pytest.raises(SlimlineError, match="NAME=1x3x224x224"):
        parse_input_shapes(["x=1xAx3"])


def test_inspect_torch_artifacts_build_only_zoo_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.artifact import save_torch
    from slimline.models import load_model

    zoo = save_torch(load_model("small_cnn"), tmp_path / "zoo", {"input_shape": [1, 28, 28]}, [])
    info = inspect_model(str(zoo.path))
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]
    assert info["outputs"][0]["shape"] == ["batch", 10]
    assert info["params"] > 0 and info["macs"] > 0
    assert info["runtimes"]["torch"]["loads"] is True

    # a factory named in a folder is never imported
    (tmp_path / "evil_mod.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\ndef make(): pass\n")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "artifact.json").write_text(
        json.dumps({"kind": "torch", "files": {"model": "weights.pt", "architecture": "model.json"}, "meta": {}})
    )
    (folder / "model.json").write_text(json.dumps({"source": {"factory": "evil_mod:make"}, "layers": {}}))
    res = runner.invoke(app, ["inspect", str(folder)])
    assert res.exit_code == 0, res.output
    assert "architecture from factory evil_mod:make not built: pass --model evil_mod:make to inspect it" in res.output
    assert not (tmp_path / "ran").exists()
