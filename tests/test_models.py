from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import RESNET20, RESNET56

from slimline.data import load_dataset
from slimline.errors import ModelError
from slimline.evaluate import evaluate
from slimline.models import build_model, count_macs, count_params, load_model, load_onnx, read_state_dict


def test_cifar_resnet56_pretrained_accuracy(cifar_dir: Path) -> None:
    model = load_model("cifar_resnet56", RESNET56)
    metrics = evaluate(model, load_dataset("cifar10-sample", "test"))
    assert metrics["n"] == 1000
    assert metrics["top1"] >= 91.5  # 92.6% measured on these 1,000 images


def test_cifar_resnet20_loads_strictly_and_counts(cifar_dir: Path) -> None:
    model = load_model("cifar_resnet20", RESNET20)
    assert count_params(model) == 269_722  # the published ResNet-20 size (0.27M)
    assert count_macs(model, (3, 32, 32)) == 40_551_040
    metrics = evaluate(model, load_dataset("cifar10-sample", "test", limit=200))
    assert metrics["top1"] > 85


def test_resnet18_keys_match_torchvision_layout() -> None:
    sd = build_model("resnet18").state_dict()
    # a few torchvision key names and shapes
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.0.bn1.running_mean"].shape == (64,)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["fc.weight"].shape == (1000, 512)
    assert len(sd) == 122
    sd50 = build_model("resnet50").state_dict()
    assert sd50["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert count_params(build_model("resnet50")) == 25_557_032


def test_user_factory_path_gives_same_accuracy(
    cifar_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            from slimline.models.cifar_resnet import CifarResNet
            def resnet56():
                return CifarResNet(56)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    ds = load_dataset("cifar10-sample", "test", limit=300)
    user = load_model("my_models:resnet56", RESNET56)
    zoo = load_model("cifar_resnet56", RESNET56)
    assert user.slimline_source == {"factory": "my_models:resnet56", "kwargs": {}}
    assert evaluate(user, ds)["top1"] == evaluate(zoo, ds)["top1"]


def test_checkpoint_dict_and_module_prefix(tmp_path: Path) -> None:
    model = build_model("small_cnn")
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = read_state_dict(tmp_path / "ckpt.pt")
    assert set(loaded) == set(model.state_dict())
    fresh = load_model("small_cnn", tmp_path / "ckpt.pt")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(fresh(x), model.eval()(x))


def test_mismatched_weights_name_offending_keys(tmp_path: Path) -> None:
    torch.save(build_model("small_cnn_half").state_dict(), tmp_path / "half.pt")
    with pytest.raises(
        ModelError, match=r"shape mismatches \(e\.g\. features\.0\.weight: file \(15, 1, 3, 3\) vs model \(32"
    ):
        load_model("small_cnn", tmp_path / "half.pt")
    sd = build_model("small_cnn").state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["classifier.bias"]
    torch.save(sd, tmp_path / "keys.pt")
    with pytest.raises(
        ModelError, match=r"1 missing \(e\.g\. classifier\.bias\).*1 unexpected \(e\.g\. extra\.weight\)"
    ):
        load_model("small_cnn", tmp_path / "keys.pt")


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    torch.save(build_model("small_cnn"), tmp_path / "whole_model.pt")  # a pickled module, not a state_dict
    with pytest.raises(ModelError, match="weights_only=True"):
        load_model("small_cnn", tmp_path / "whole_model.pt")


def test_bad_model_names() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet9000'.*cifar_resnet56"):
        load_model("resnet9000")
    with pytest.raises(ModelError, match="cannot import 'no_such_pkg.mod'"):
        load_model("no_such_pkg.mod:factory")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("small_cnn", "/nonexistent/weights.pt")


def test_onnx_file_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(good), dynamo=False)
    assert load_onnx(good).graph.node[0].op_type == "Gemm"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ModelError, match="is not a valid ONNX model"):
        load_onnx(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")


def test_small_cnn_student_is_quarter_macs() -> None:
    t = count_macs(build_model("small_cnn"), (1, 28, 28))
    s = count_macs(build_model("small_cnn_half"), (1, 28, 28))
    assert s <= t / 4 + 1
    out = build_model("small_cnn")(torch.from_numpy(np.zeros((3, 1, 28, 28), np.float32)))
    assert out.shape == (3, 10)
