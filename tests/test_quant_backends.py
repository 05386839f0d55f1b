"""Quantization backends, the quantize/qat steps, the accuracy-aware loop and the CLI, on a small CNN
trained for a moment on the 8x8 digits set."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter, load_torch
from slimline.data import load_dataset
from slimline.errors import RecipeError
from slimline.evaluate import evaluate, predict_logits
from slimline.models import load_model
from slimline.quant.accuracy_aware import AccuracyBudgetError, accuracy_aware_quantize
from slimline.quant.backends import FloatModel, QuantConfig, QuantWarning, get_backend
from slimline.quant.backends.base import onnx_layer_nodes
from slimline.quant.backends.ort import float_heavy_nodes
from slimline.quant.fakequant import input_producers, layer_sensitivity
from slimline.train import TrainConfig, fit

SHAPE = (1, 8, 8)


def _sabotage(model: nn.Module, scale: float = 300.0) -> str:
    """Give one channel between the first two convolutions a huge (function-preserving) scale.

    Returns the name of the convolution whose input now has an outlier channel.
    """
    mods = list(model.features.named_children())
    i = next(k for k, (_, m) in enumerate(mods) if isinstance(m, nn.BatchNorm2d))
    j = next(k for k in range(i, len(mods)) if isinstance(mods[k][1], nn.Conv2d))
    bn, conv = mods[i][1], mods[j][1]
    with torch.no_grad():
        c = int(torch.argmax(bn.bias))
        bn.weight[c] *= scale
        bn.bias[c] *= scale
        conv.weight[:, c] /= scale
    return f"features.{mods[j][0]}"


@pytest.fixture(scope="module")
def digits() -> tuple:
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def trained(digits: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """small_cnn_half trained briefly on digits (~95% test top-1), plus a sabotaged copy's weights."""
    train, test = digits
    threads = torch.get_num_threads()
    model = load_model("small_cnn_half", in_channels=1)
    fit(model, train, TrainConfig(epochs=2, lr=0.05, batch_size=64, augment=False, threads=1))
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("digits_model")
    torch.save(model.state_dict(), folder / "clean.pt")
    bad = load_model("small_cnn_half", folder / "clean.pt", in_channels=1)
    victim = _sabotage(bad)
    torch.save(bad.state_dict(), folder / "sabotaged.pt")
    return {
        "clean": folder / "clean.pt",
        "sabotaged": folder / "sabotaged.pt",
        "victim": victim,
        "top1": evaluate(model, test)["top1"],
    }


def _model(path: Path) -> nn.Module:
    return load_model("small_cnn_half", path, in_channels=1)


def _ort(path: Path, optimized: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_module_names_map_to_onnx_nodes(tmp_path: Path) -> None:
    model = load_model("small_cnn_half", in_channels=1)
    src = FloatModel(SHAPE, tmp_path, torch_model=model)
    mapping = onnx_layer_nodes(model, src.onnx(), SHAPE)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sorted(mapping) == sorted(convs)
    assert mapping["features.0"] == "/features/features.0/Conv"
    assert mapping["classifier"] == "/classifier/Gemm"
    # each conv's producer (through ReLU/MaxPool) is the conv before it
    prod = input_producers(model)
    assert prod["features.0"] == [] and all(len(prod[c]) == 1 for c in convs[1:])


def test_onnxruntime_static_qdq_runs_in_int8(trained: dict, digits: tuple, tmp_path: Path) -> None:
    train, test = digits
    src = FloatModel(SHAPE, tmp_path / "work", torch_model=_model(trained["clean"]))
    res = get_backend("onnxruntime").quantize(src, train.sample(200).inputs(), QuantConfig(), [], tmp_path / "q")
    qfile = tmp_path / "q" / "model.onnx"
    assert res.kind == "onnx" and res.files == {"model": "model.onnx"}
    assert res.details["activation_type"] == "uint8" and res.details["weight_type"] == "int8"
    assert res.left_float == [] and res.details["quantized_ops"] == {"Conv": 4, "Gemm": 1}
    # int8 weights: the file shrinks by well over 3x
    assert src.onnx().stat().st_size / qfile.stat().st_size > 3.0
    # ONNX Runtime fuses the QDQ pattern into integer kernels
    got = evaluate(_ort(qfile, tmp_path / "opt.onnx"), test)
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == 4 and ops["Conv"] == 0
    assert got["top1"] >= trained["top1"] - 2.0
    # the saved file has short tensor names and no node names; the same model with the names kept
    # (compact_names off) gives the very same outputs and is bigger by what the names took
    comp = res.details["compact_names"]
    assert comp["renamed"] and comp["bytes_after"] == qfile.stat().st_size < comp["bytes_before"]
    qproto = onnx.load(str(qfile))
    assert all(n.name == "" for n in qproto.graph.node)
    assert [v.name for v in qproto.graph.input] == [v.name for v in onnx.load(str(src.onnx())).graph.input]
    named = get_backend("onnxruntime").quantize(
        src, train.sample(200).inputs(), QuantConfig(compact_names=False), [], tmp_path / "named"
    )
    assert "compact_names" not in named.details
    assert (tmp_path / "named" / "model.onnx").stat().st_size == comp["bytes_before"]
    x = test.inputs()[:32]
    np.testing.assert_array_equal(_ort(qfile)(x), _ort(tmp_path / "named" / "model.onnx")(x))


def test_onnxruntime_keeps_named_layers_float_and_rejects_unknown_names(
    trained: dict, digits: tuple, tmp_path: Path
) -> None:
    src = FloatModel(SHAPE, tmp_path / "work", torch_model=_model(trained["clean"]))
    calib = digits[0].sample(64).inputs()
    backend = get_backend("onnxruntime")
    cfg = QuantConfig(exclude=["features.4"], compact_names=False)  # keep node names to look them up
    res = backend.quantize(src, calib, cfg, ["classifier"], tmp_path / "q")
    assert res.excluded == ["/features/features.4/Conv", "/classifier/Gemm"]
    still_float = {n["name"] for n in float_heavy_nodes(onnx.load(str(tmp_path / "q" / "model.onnx")))}
    assert still_float == set(res.excluded)
    res = backend.quantize(src, calib, QuantConfig(exclude=["features.4"]), ["classifier"], tmp_path / "q3")
    assert len(float_heavy_nodes(onnx.load(str(tmp_path / "q3" / "model.onnx")))) == 2  # the same, names compacted
    with pytest.raises(RecipeError, match="features.99"):
        backend.quantize(src, calib, QuantConfig(exclude=["features.99"]), [], tmp_path / "q2")


class _Einsum(nn.Module):
    """A layer written with einsum, which ONNX Runtime's quantizer does not handle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.w = nn.Parameter(torch.randn(8 * 64, 10) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bk,kc->bc", torch.relu(self.conv(x)).flatten(1), self.w)


def test_operator_the_backend_cannot_quantize_stays_float_with_a_warning(tmp_path: Path) -> None:
    src = FloatModel(SHAPE, tmp_path / "work", torch_model=_Einsum().eval())
    calib = np.random.default_rng(0).standard_normal((32, *SHAPE)).astype(np.float32)
    with pytest.warns(QuantWarning, match=r"left in float.*Einsum"):
        res = get_backend("onnxruntime").quantize(src, calib, QuantConfig(), [], tmp_path / "q")
    assert [n["op"] for n in res.left_float] == ["Einsum"]
    assert res.details["quantized_ops"] == {"Conv": 1}


def test_dynamic_quantization_warns_on_convolution_heavy_models(trained: dict, tmp_path: Path) -> None:
    src = FloatModel(SHAPE, tmp_path / "work", torch_model=_model(trained["clean"]))
    with pytest.warns(QuantWarning, match="convolution-heavy.*slower than fp32.*static"):
        res = get_backend("onnxruntime").quantize(
            src, np.zeros((1, *SHAPE), np.float32), QuantConfig(mode="dynamic"), [], tmp_path / "q"
        )
    assert res.details["mode"] == "dynamic" and res.details["conv_weight_share"] > 0.9


@pytest.mark.parametrize("backend,method", [("onnxruntime", "mse"), ("openvino", "entropy"), ("torch", "percentile")])
def test_unsupported_calibration_names_the_valid_ones(backend: str, method: str) -> None:
    with pytest.raises(RecipeError, match=f"no '{method}' calibration; use one of minmax"):
        get_backend(backend).check(QuantConfig(calibration=method))


def test_openvino_nncf_quantizes_and_ignores_named_layers(trained: dict, digits: tuple, tmp_path: Path) -> None:
    from slimline.evaluate import evaluate_artifact

    train, test = digits
    src = FloatModel(SHAPE, tmp_path / "work", torch_model=_model(trained["clean"]))
    res = get_backend("openvino").quantize(
        src, train.sample(100).inputs(), QuantConfig(), ["features.4"], tmp_path / "q"
    )
    assert res.files == {"model": "model.xml", "weights": "model.bin"}
    assert len(res.excluded) == 1 and res.excluded[0].startswith("/features/features.4/Conv")
    assert res.details["quantized_ops"] == 4 and res.left_float == []
    art = Artifact("openvino", tmp_path / "q", res.files, {})
    got = evaluate_artifact(art, test)
    assert got["runtime"] == "openvino" and got["top1"] >= trained["top1"] - 2.0


def test_openvino_onnx_format_writes_qdq_that_openvino_runs_in_int8(
    trained: dict, digits: tuple, tmp_path: Path
) -> None:
    from slimline.evaluate import evaluate_artifact
    from slimline.runtimes import default_runtime
    from slimline.runtimes.openvino import import_openvino

    train, test = digits
    src = FloatModel(SHAPE, tmp_path / "work", torch_model=_model(trained["clean"]))
    cfg = QuantConfig(format="onnx")
    res = get_backend("openvino").quantize(src, train.sample(100).inputs(), cfg, ["features.4"], tmp_path / "q")
    assert res.kind == "onnx" and res.files == {"model": "model.onnx"} and res.meta["runtime"] == "openvino"
    assert len(res.excluded) == 1 and res.excluded[0].startswith("/features/features.4/Conv")
    proto = onnx.load(str(tmp_path / "q" / "model.onnx"))
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert res.details["quantized_ops"]["Conv"] == 3  # four convolutions, one kept float on request
    assert res.left_float == []  # int8 activations reach convolutions through MaxPool, the classifier via Flatten
    art = Artifact("onnx", tmp_path / "q", res.files, res.meta)
    assert default_runtime(art) == "openvino"
    got = evaluate_artifact(art, test)
    assert got["runtime"] == "openvino" and got["top1"] >= trained["top1"] - 2.0
    # OpenVINO executes the quantized convolutions in u8/i8, the excluded one in f32. Its CPU plugin's default
    # precision is bf16 on CPUs with AVX-512 BF16 or AMX (the product pins f32), so the check pins it too.
    ov = import_openvino()
    compiled = ov.Core().compile_model(str(tmp_path / "q" / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runtime_model = compiled.get_runtime_model()
    precisions = collections.Counter(
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in runtime_model.get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    )
    assert precisions["u8"] + precisions["i8"] == 3 and precisions["f32"] == 1
    with pytest.raises(RecipeError, match="writes native models, not format 'onnx'"):
        get_backend("onnxruntime").check(cfg)


def test_torch_fx_backend_saves_an_artifact_the_torch_runtime_loads(
    trained: dict, digits: tuple, tmp_path: Path
) -> None:
    from slimline.quant.backends.torch_fx import pt2e_status

    train, test = digits
    model = _model(trained["clean"])
    res = get_backend("torch").quantize(
        FloatModel(SHAPE, tmp_path / "w", torch_model=model),
        train.sample(100).inputs(),
        QuantConfig(),
        ["classifier"],
        tmp_path / "q",
    )
    with ArtifactWriter(tmp_path / "art", "torch", {"input_shape": list(SHAPE), **res.meta}, []) as w:
        for role, f in res.files.items():
            (w.add(role, f)).write_bytes((tmp_path / "q" / f).read_bytes())
    from slimline.runtimes import open_session

    assert open_session(Artifact.load(tmp_path / "art"), "torch").describe()["precision"] == "int8"
    loaded = load_torch(Artifact.load(tmp_path / "art"))
    kinds = {type(m).__module__ for n, m in loaded.named_modules() if n.startswith("features.")}
    assert any("quantized" in k for k in kinds)  # int8 modules, not the float ones
    assert type(loaded.get_submodule("classifier")) is nn.Linear  # kept float on request
    assert evaluate(loaded, test)["top1"] >= trained["top1"] - 2.0
    ok, why = pt2e_status()
    assert ok or "torchao" in why
    assert res.details["pt2e_available"] is ok


def test_sensitivity_ranks_the_sabotaged_layer_first(trained: dict, digits: tuple) -> None:
    model = _model(trained["sabotaged"])
    calib = digits[0].sample(128)
    report = layer_sensitivity(model, calib)
    assert report.folded_batchnorm
    assert report.ranking()[0] == trained["victim"]
    first = min(report.layers, key=lambda r: r.rank)
    others = [r.model_sqnr_db for r in report.layers if r.rank > 1]
    # its input looks fine by energy (the outlier channel dominates) but its output is ruined
    assert first.output_sqnr_db < 10 and first.model_sqnr_db < min(others) - 20
    assert len(report.layers) == 5 and all(r.weight_sqnr_db > 30 for r in report.layers)


def test_accuracy_aware_loop_returns_layers_in_ranked_order_until_the_budget_is_met() -> None:
    costs = {"a": 3.0, "b": 1.5, "c": 0.2, "d": 0.1}  # points each quantized layer costs

    def quantize(keep: list[str]) -> list[str]:
        return keep

    def score(keep: list[str]) -> float:
        return 90.0 - sum(v for k, v in costs.items() if k not in keep)

    res = accuracy_aware_quantize(quantize, score, 90.0, ["a", "b", "c", "d"], max_drop=1.0, verbose=False)
    assert res.kept_float == ["a", "b"] and res.drop == pytest.approx(0.3)
    assert [h["kept_float"] for h in res.history] == [[], ["a"], ["a", "b"]]
    with pytest.raises(AccuracyBudgetError, match="every layer but one"):
        accuracy_aware_quantize(quantize, lambda k: 80.0, 90.0, ["a", "b", "c"], max_drop=1.0, verbose=False)


def test_quantize_step_accuracy_aware_on_a_small_model(trained: dict, tmp_path: Path) -> None:
    from slimline.api import run

    recipe = {
        "name": "aa",
        "model": {"name": "small_cnn_half", "weights": str(trained["sabotaged"]), "kwargs": {"in_channels": 1}},
        "data": {"name": "digits", "val_size": 300},
        "steps": [{"quantize": {"accuracy_aware": True, "max_drop": 1.0, "calibration_size": 200}}, {"evaluate": {}}],
        "output_dir": str(tmp_path / "run"),
    }
    results = run(recipe)
    q = results["stages"][1]["record"]
    aa = q["accuracy_aware"]
    assert aa["kept_float"][0] == trained["victim"]  # the most sensitive layer went back first
    assert aa["final_drop"] <= 1.0 and aa["history"][0]["drop"] > 1.0
    assert trained["victim"] in aa["float_layers"] and len(aa["float_layers"]) >= 2  # with its producer
    art = Artifact.load(tmp_path / "run" / "01_quantize")
    assert art.kind == "onnx" and art.meta["quantization"]["precision"] == "int8"
    from slimline.runtimes import open_session

    assert open_session(art, "onnxruntime").describe()["precision"] == "int8"
    report = json.loads((art.path / "quantization.json").read_text())
    assert report["sensitivity"]["layers"][0]["name"] == trained["victim"]
    assert report["calibration"] == {"samples": 200, "source": "training split"}
    ev = results["stages"][2]["record"]["metrics"]
    assert ev["top1"] >= trained["top1"] - 3.0 and ev["runtime"] == "onnxruntime"


def test_accuracy_aware_quantize_of_an_exported_onnx_ranks_with_its_pytorch_source(
    trained: dict, tmp_path: Path
) -> None:
    """After export_onnx (as in the demo), the ranking runs on the PyTorch stage the ONNX came from."""
    from slimline.api import run

    recipe = {
        "name": "aa-onnx",
        "model": {"name": "small_cnn_half", "weights": str(trained["sabotaged"]), "kwargs": {"in_channels": 1}},
        "data": {"name": "digits", "val_size": 300},
        "steps": [
            {"export_onnx": {}},
            {"quantize": {"accuracy_aware": True, "max_drop": 1.0, "calibration_size": 200}},
        ],
        "output_dir": str(tmp_path / "run"),
    }
    q = run(recipe)["stages"][2]["record"]
    assert q["accuracy_aware"]["kept_float"][0] == trained["victim"]
    assert q["accuracy_aware"]["final_drop"] <= 1.0
    onnx_only = {
        **recipe,
        "model": str(tmp_path / "run" / "01_export_onnx" / "model.onnx"),
        "steps": recipe["steps"][1:],
        "output_dir": str(tmp_path / "run2"),
    }
    with pytest.raises(RecipeError, match="exported from"):
        run(onnx_only)


def test_openvino_onnx_format_in_a_recipe_is_scored_and_evaluated_on_openvino(trained: dict, tmp_path: Path) -> None:
    from slimline.api import run

    recipe = {
        "name": "ov-qdq",
        "model": {"name": "small_cnn_half", "weights": str(trained["sabotaged"]), "kwargs": {"in_channels": 1}},
        "data": {"name": "digits", "val_size": 300},
        "steps": [
            {"export_onnx": {}},
            {
                "quantize": {
                    "backend": "openvino",
                    "format": "onnx",
                    "accuracy_aware": True,
                    "max_drop": 1.0,
                    "calibration_size": 200,
                }
            },
            {"evaluate": {"split": "test"}},
        ],
        "output_dir": str(tmp_path / "run"),
    }
    stages = run(recipe)["stages"]
    q, ev = stages[2]["record"], stages[3]["record"]
    assert q["kind"] == "onnx" and q["compression"] > 2.5
    assert q["accuracy_aware"]["kept_float"][0] == trained["victim"] and q["accuracy_aware"]["final_drop"] <= 1.0
    art = Artifact.load(tmp_path / "run" / "02_quantize")
    assert art.meta["runtime"] == "openvino" and art.kind == "onnx"
    assert ev["metrics"]["runtime"] == "openvino"  # the evaluate step ran it on its named runtime


def test_qat_step_exports_qdq_onnx_that_onnxruntime_runs_in_int8(trained: dict, digits: tuple, tmp_path: Path) -> None:
    from slimline.api import run

    recipe = {
        "name": "qat",
        "model": {"name": "small_cnn_half", "weights": str(trained["clean"]), "kwargs": {"in_channels": 1}},
        "data": {"name": "digits", "val_size": 200, "train_limit": 600},
        "steps": [{"qat": {"epochs": 1, "batch_size": 32, "calibration_size": 100}}],
        "output_dir": str(tmp_path / "run"),
    }
    results = run(recipe)
    rec = results["stages"][1]["record"]
    assert rec["onnxruntime"]["runs"] and rec["onnxruntime"]["top1_agreement_with_torch"] >= 95.0
    art = Artifact.load(tmp_path / "run" / "01_qat")
    proto = onnx.load(str(art.model_file))
    int8_inits = [i for i in proto.graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert len(int8_inits) == 5  # every Conv/Linear weight stored as int8
    opt = tmp_path / "opt.onnx"
    logits = predict_logits(_ort(art.model_file, opt), digits[1])
    ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    assert ops["QLinearConv"] == 4 and ops["Conv"] == 0
    assert float((logits.argmax(1) == digits[1].y).mean()) * 100 >= trained["top1"] - 3.0


def test_cli_quant_numerics_prints_and_writes_the_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    out = tmp_path / "n.json"
    r = CliRunner().invoke(app, ["quant-numerics", "--channels", "4", "--per-channel", "1024", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 16 and {r["observer"] for r in rows} == {"minmax", "percentile", "entropy", "mse"}


def test_cli_quantize_reports_accuracy_size_and_warnings(trained: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    out = tmp_path / "q.json"
    r = CliRunner().invoke(
        app,
        [
            "quantize",
            "-m",
            "small_cnn_half",
            "--weights",
            str(trained["clean"]),
            "-d",
            "digits",
            "--calibration-size",
            "64",
            "-o",
            str(tmp_path / "run"),
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(out.read_text())
    assert s["backend"] == "onnxruntime" and s["artifact"] == "02_quantize"
    assert s["sizes"]["compression"] > 3.0 and abs(s["drop"]) < 3.0
    assert s["float"]["n"] == s["int8"]["n"] == 360 and s["int8"]["runtime"] == "onnxruntime"
    r = CliRunner().invoke(
        app,
        [
            "quantize",
            "-m",
            "small_cnn_half",
            "-d",
            "digits",
            "-b",
            "openvino",
            "--calibration",
            "entropy",
            "-o",
            str(tmp_path / "bad"),
        ],
    )
    assert r.exit_code == 1 and "no 'entropy' calibration" in r.output


def test_outlier_resnet_keeps_the_float_function_and_widens_weight_ranges(cifar_dir: Path) -> None:
    from conftest import RESNET20
    from slimline.quant.demo_models import outlier_resnet

    plain = load_model("cifar_resnet20", RESNET20)
    odd = outlier_resnet(20, str(RESNET20), magnitude=20.0)
    x = load_dataset("cifar10-sample", "test", limit=32).inputs()
    with torch.no_grad():
        a, b = plain(torch.from_numpy(x)), odd(torch.from_numpy(x))
    assert torch.allclose(a, b, atol=1e-4)  # nothing reaches the output through the planted weights

    def wmax(m: nn.Module) -> float:
        return float(m.weight.detach().abs().max())

    convs = [n for n, m in odd.named_modules() if isinstance(m, nn.Conv2d)]
    widened = [n for n in convs if wmax(odd.get_submodule(n)) > 10 * wmax(plain.get_submodule(n))]
    assert len(widened) >= 3 and all(n.endswith("conv2") for n in widened)
