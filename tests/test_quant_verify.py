"""Quantization never reports a broken model as success: the written model is checked, loaded, run and
compared with fp32; odd real-world ONNX models (opset 11, Constant weights, nothing to quantize) quantize
or fail in one line; ONNX Runtime's temporary files stay out of the current folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from slimline.quant.backends import FloatModel, QuantConfig, get_backend
from slimline.quant.backends.base import QuantizationError, onnx_opset

SHAPE = (3, 16, 16)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def _export(model: nn.Module, path: Path, opset: int = 17, shape: tuple[int, ...] = SHAPE) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(
        model.eval(),
        (torch.randn(1, *shape),),
        str(path),
        opset_version=opset,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    return path


def _calib(n: int = 16, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_quantized_model_is_verified_and_its_fidelity_recorded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = FloatModel(SHAPE, tmp_path / "work", onnx_path=_export(_Net(), tmp_path / "net.onnx"))
    res = get_backend("onnxruntime").quantize(src, _calib(), QuantConfig(), [], tmp_path / "q")
    ver = res.verification
    assert ver["checker"] == ver["loads"] == ver["runs"] == "ok" and ver["runtime"] == "onnxruntime"
    assert ver["samples"] == 8 and 0.9 < ver["min_cosine"] <= ver["mean_cosine"] <= 1.0 + 1e-9
    assert ver["max_abs_diff"] > 0
    assert res.record()["verification"] == ver


@pytest.mark.parametrize("fmt", ["onnx", "native"])
def test_openvino_results_are_verified_on_openvino(fmt: str, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    src = FloatModel(SHAPE, tmp_path / "work", onnx_path=_export(_Net(), tmp_path / "net.onnx"))
    res = get_backend("openvino").quantize(src, _calib(), QuantConfig(format=fmt), [], tmp_path / "q")  # type: ignore[arg-type]
    ver = res.verification
    assert ver["runtime"] == "openvino" and ver["loads"] == ver["runs"] == "ok" and ver["min_cosine"] > 0.9
    assert ("checker" in ver) == (fmt == "onnx")  # the ONNX checker runs on ONNX files only


def _append(proto: onnx.ModelProto, op: str, *inputs: onnx.TensorProto, domain: str = "") -> None:
    """Feed the graph's output through ``op`` (with constant ``inputs``) and make that the output."""
    out = proto.graph.output[0].name
    proto.graph.initializer.extend(inputs)
    proto.graph.node.append(helper.make_node(op, [out, *(i.name for i in inputs)], [out + "_b"], domain=domain))
    proto.graph.output[0].name = out + "_b"


def _garbage(proto: onnx.ModelProto) -> None:
    proto.graph.node.append(helper.make_node("Relu", ["nowhere"], ["dangling"]))


def _unknown_op(proto: onnx.ModelProto) -> None:
    proto.opset_import.append(helper.make_opsetid("slimline.test", 1))
    _append(proto, "Bogus", domain="slimline.test")


def _bad_reshape(proto: onnx.ModelProto) -> None:
    _append(proto, "Reshape", numpy_helper.from_array(np.array([7], np.int64), "seven"))


def _divide_by_zero(proto: onnx.ModelProto) -> None:
    _append(proto, "Div", numpy_helper.from_array(np.zeros(1, np.float32), "zero"))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (_garbage, "fails the ONNX checker: .*; try per_channel: false"),
        (_unknown_op, "fails to load in ONNX Runtime: .*; try per_channel: false"),
        (_bad_reshape, "loads in ONNX Runtime but fails to run on the calibration inputs: .*; try per_channel: false"),
        (_divide_by_zero, "outputs NaN or infinity \\(output 0\\) in ONNX Runtime where the fp32 model does not"),
    ],
)
def test_a_broken_written_model_is_a_one_line_error_naming_the_stage(
    corrupt, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from slimline.quant.backends.ort import OrtBackend

    original = OrtBackend.write

    def broken(self, src, calib, cfg, keep, out_dir):  # type: ignore[no-untyped-def]
        res = original(self, src, calib, cfg, keep, out_dir)
        proto = onnx.load(str(out_dir / "model.onnx"))
        corrupt(proto)
        onnx.save(proto, str(out_dir / "model.onnx"))
        return res

    monkeypatch.setattr(OrtBackend, "write", broken)
    torch.manual_seed(0)
    src = FloatModel(SHAPE, tmp_path / "work", onnx_path=_export(_Net(), tmp_path / "net.onnx"))
    with pytest.raises(QuantizationError, match=f"^the int8 model written by onnxruntime {message}") as err:
        get_backend("onnxruntime").quantize(src, _calib(), QuantConfig(), [], tmp_path / "q")
    assert "\n" not in str(err.value)


def test_per_channel_on_an_opset_11_export_upgrades_the_opset(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fp32 = _export(_Net(), tmp_path / "net11.onnx", opset=11)
    assert onnx_opset(onnx.load(str(fp32))) == 11
    src = FloatModel(SHAPE, tmp_path / "work", onnx_path=fp32)
    res = get_backend("onnxruntime").quantize(src, _calib(), QuantConfig(per_channel=True), [], tmp_path / "q")
    q = tmp_path / "q" / "model.onnx"
    onnx.checker.check_model(str(q))
    assert onnx_opset(onnx.load(str(q))) >= 13 and res.details["onnx_preparation"]["opset"].startswith("11 -> 13")
    assert res.details["per_channel"] is True and "per_channel_fallback" not in res.details
    proto = onnx.load(str(q))
    axes = [a.i for n in proto.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert axes  # per-channel weights
    assert _run(q, _calib(2)).shape == (2, 10)


def test_per_channel_falls_back_to_per_tensor_when_the_opset_cannot_be_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnx import version_converter

    def fail(model, version):  # type: ignore[no-untyped-def]
        raise RuntimeError("no adapter for Foo")

    monkeypatch.setattr(version_converter, "convert_version", fail)
    torch.manual_seed(0)
    src = FloatModel(SHAPE, tmp_path / "work", onnx_path=_export(_Net(), tmp_path / "net11.onnx", opset=11))
    with pytest.warns(UserWarning, match="quantizing weights per-tensor"):
        res = get_backend("onnxruntime").quantize(src, _calib(), QuantConfig(per_channel=True), [], tmp_path / "q")
    assert "no adapter for Foo" in res.details["per_channel_fallback"] and res.details["per_channel"] is False
    assert _run(tmp_path / "q" / "model.onnx", _calib(2)).shape == (2, 10)


def _constant_weight_conv(path: Path) -> Path:
    """A Paddle-style Conv whose (large) weight comes from a Constant node, not an initializer."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32) * 0.1
    b = np.zeros(64, np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(b, "b")),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_constant_node_weights_get_int8_weights(tmp_path: Path) -> None:
    fp32 = _constant_weight_conv(tmp_path / "paddle.onnx")
    src = FloatModel((32, 8, 8), tmp_path / "work", onnx_path=fp32)
    res = get_backend("onnxruntime").quantize(
        src, _calib(16, (32, 8, 8)), QuantConfig(compact_names=False), [], tmp_path / "q"
    )
    q = tmp_path / "q" / "model.onnx"
    assert q.stat().st_size < 0.4 * fp32.stat().st_size
    assert res.details["onnx_preparation"]["constants_to_initializers"] == 2
    proto = onnx.load(str(q))
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: i for i in proto.graph.initializer}
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    dq = producers[conv.input[1]]
    assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8


def test_dynamic_mode_with_nothing_to_quantize_says_so(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "plain.onnx"))
    src = FloatModel((4,), tmp_path / "work", onnx_path=tmp_path / "plain.onnx")
    with pytest.raises(
        QuantizationError,
        match=r"dynamic quantization found nothing to quantize in plain.onnx "
        r"\(.*this model has only (Relu|Add) \(1\).*\); use mode: static",
    ):
        get_backend("onnxruntime").quantize(src, _calib(4, (4,)), QuantConfig(mode="dynamic"), [], tmp_path / "q")


def test_temporary_files_stay_out_of_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's symbolic shape inference saves ``sym_shape_infer_temp.onnx`` (+ .data) into the current
    folder when it gives up; simulate that and check that nothing lands in the user's folder."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def gives_up(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        onnx.save_model(model, "sym_shape_infer_temp.onnx", save_as_external_data=True)
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(gives_up))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    torch.manual_seed(0)
    src = FloatModel(SHAPE, tmp_path / "work", onnx_path=_export(_Net(), tmp_path / "net.onnx"))
    get_backend("onnxruntime").quantize(src, _calib(), QuantConfig(), [], tmp_path / "q")
    src2 = FloatModel(SHAPE, tmp_path / "work2", onnx_path=tmp_path / "net.onnx")
    get_backend("onnxruntime").quantize(src2, _calib(), QuantConfig(mode="dynamic"), [], tmp_path / "q2")
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "work" / "cwd" / "sym_shape_infer_temp.onnx").exists()  # it went to the work folder


class _Detector(nn.Module):
    """YOLO-like head: (N, 4 box + 5 class scores, anchors), no class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x))).flatten(2)  # (N, 9, 36)


def test_cli_quantize_of_a_detector_reports_fidelity_instead_of_top1(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from slimline.cli import app

    torch.manual_seed(0)
    det = _export(_Detector(), tmp_path / "det.onnx", shape=(1, 8, 8))
    assert _run(det, _calib(2, (1, 8, 8))).shape == (2, 9, 36)
    out = tmp_path / "q.json"
    r = CliRunner().invoke(
        app,
        [
            "quantize",
            "-m",
            str(det),
            "-d",
            "digits",
            "--calibration-size",
            "32",
            "--test-limit",
            "20",
            "-o",
            str(tmp_path / "run"),
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "no top-1" in r.output and "Traceback" not in r.output
    s = json.loads(out.read_text())
    assert "int8" not in s and s["fidelity"]["n"] == 20 and 0.9 < s["fidelity"]["min_cosine"] <= 1.0 + 1e-9
    assert s["verification"]["runs"] == "ok"


def test_a_model_wrong_at_batch_above_one_is_refused() -> None:
    """Verification also runs the samples as one batch: outputs that differ from the same samples run one at a
    time (seen with OpenVINO on an int8 transformer) refuse the model; a model that cannot take a batch passes."""
    import numpy as np

    from slimline.quant.backends.base import QuantizationError, _check_batched

    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    singles = [[x[i : i + 1] * 2] for i in range(4)]
    assert _check_batched(lambda b: [b * 2], x, singles, "m") == pytest.approx(1.0)
    with pytest.raises(QuantizationError, match="batch of 4 than for the same samples one at a time"):
        _check_batched(lambda b: [b[::-1] * 2], x, singles, "m")

    def fixed(b: np.ndarray) -> list[np.ndarray]:
        if len(b) != 1:
            raise RuntimeError("expected batch 1")
        return [b * 2]

    assert _check_batched(fixed, x, singles, "m").startswith("not run: expected batch 1")
