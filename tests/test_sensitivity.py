"""Sensitivity scans: the model is restored, ONNX Runtime and PyTorch give the same curves, block
scores equal a hand-made removal, curves are read monotonically, and the plot is a PNG."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimline.data import load_dataset
from slimline.errors import ModelError
from slimline.prune.sensitivity import drop_at, plot_sensitivity, scores, sensitivity


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class DigitsNet(nn.Module):
    """For 1x8x8 digits: stem, two residual blocks, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(F.relu(self.bn(self.stem(x)))).mean((2, 3)))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared, busy machine two spinning threads are often slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").take(300)


@pytest.fixture(scope="module")
def trained() -> DigitsNet:
    """Random weights with non-trivial BatchNorm statistics (no training: the scans only need a fixed model)."""
    torch.manual_seed(0)
    m = DigitsNet()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_scores_match_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    s = scores(logits, y, logits)
    assert s["top1"] == pytest.approx(200 / 3)
    assert s["loss"] == pytest.approx(float(F.cross_entropy(logits, y)))
    assert s["kl"] == pytest.approx(0.0, abs=1e-7)


def test_weight_scan_restores_the_model_and_measures_true_sparsity(trained: DigitsNet, digits) -> None:
    before = _state(trained)
    res = sensitivity(trained, digits, "weight", [0.5, 0.95], samples=128, backend="torch", early_stop=False)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    assert set(res["units"]) == {"stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "fc"}
    # the point at 0.5 of blocks.0.conv1 equals evaluating a copy with exactly half its weights zeroed
    twin = copy.deepcopy(trained)
    w = twin.blocks[0].conv1.weight.data
    order = torch.argsort(w.abs().flatten(), stable=True)
    w.view(-1)[order[: round(0.5 * w.numel())]] = 0
    x, y = torch.from_numpy(digits.sample(128).inputs()), torch.from_numpy(digits.sample(128).y)
    with torch.no_grad():
        ref = trained(x)
        expect = scores(twin(x), y, ref)
    got = res["units"]["blocks.0.conv1"]["curve"][0]
    assert got["ratio"] == 0.5
    for k in ("top1", "loss", "kl"):
        assert got[k] == pytest.approx(expect[k], rel=1e-5, abs=1e-6)
    assert res["baseline"]["kl"] == 0.0
    json.dumps(res)  # JSON-ready


def test_channel_scan_onnxruntime_equals_torch(trained: DigitsNet, digits) -> None:
    kwargs = dict(ratios=[0.25, 0.75], samples=96, protect_first_last=True, early_stop=False)
    a = sensitivity(trained, digits, "channel", backend="torch", **kwargs)
    b = sensitivity(trained, digits, "channel", backend="onnxruntime", **kwargs)
    assert a["backend"] == "torch" and b["backend"] == "onnxruntime"
    assert set(a["units"]) == {"blocks.0.conv1", "blocks.1.conv1"}  # the stream is the protected stem's
    for name, entry in a["units"].items():
        for pa, pb in zip(entry["curve"], b["units"][name]["curve"], strict=True):
            assert pa["channels_removed"] == pb["channels_removed"] == round(pa["ratio"] * 16)
            assert pa["loss"] == pytest.approx(pb["loss"], rel=1e-3, abs=1e-4)
            assert pa["top1"] == pytest.approx(pb["top1"], abs=1.1)  # at most one sample flips on rounding


def test_block_scan_equals_removing_the_block(trained: DigitsNet, digits) -> None:
    res = sensitivity(trained, digits, "block", samples=100)
    assert set(res["units"]) == {"blocks.0", "blocks.1"}
    twin = copy.deepcopy(trained)
    twin.blocks[1] = nn.Identity()
    ds = digits.sample(100)
    x, y = torch.from_numpy(ds.inputs()), torch.from_numpy(ds.y)
    with torch.no_grad():
        expect = scores(twin(x), y, trained(x))
    assert res["units"]["blocks.1"]["loss"] == pytest.approx(expect["loss"], rel=1e-5)
    assert res["units"]["blocks.1"]["params"] == 2 * 16 * 16 * 9 + 4 * 16
    assert isinstance(trained.blocks[1], Block)  # put back


def test_layer_subset_and_bad_input(trained: DigitsNet, digits) -> None:
    res = sensitivity(trained, digits, "weight", [0.5], samples=32, layers=["blocks.1.*"], backend="torch")
    assert set(res["units"]) == {"blocks.1.conv1", "blocks.1.conv2"}
    with pytest.raises(ModelError, match="no unit matches"):
        sensitivity(trained, digits, "weight", [0.5], samples=32, layers=["nothing*"])
    with pytest.raises(ModelError, match="strictly between"):
        sensitivity(trained, digits, "weight", [0.0, 0.5], samples=32)
    with pytest.raises(ModelError, match="unknown sensitivity kind"):
        sensitivity(trained, digits, "filter", samples=32)  # type: ignore[arg-type]


def test_drop_at_is_interpolated_and_monotone() -> None:
    base = {"top1": 90.0, "loss": 0.5}
    entry = {
        "curve": [
            {"ratio": 0.2, "loss": 0.6, "top1": 88.0},
            {"ratio": 0.4, "loss": 0.55, "top1": 89.0},
            {"ratio": 0.6, "loss": 0.9, "top1": 70.0},
        ]
    }
    assert drop_at(entry, 0.0, "loss", base) == 0.0
    assert drop_at(entry, 0.1, "loss", base) == pytest.approx(0.05)
    assert drop_at(entry, 0.4, "loss", base) == pytest.approx(0.1)  # the dip at 0.4 is ironed out
    assert drop_at(entry, 0.5, "loss", base) == pytest.approx(0.25)
    assert drop_at(entry, 0.8, "loss", base) == pytest.approx(0.4 + 0.3)  # extended linearly past the last point
    assert drop_at(entry, 0.2, "top1", base) == pytest.approx(2.0)
    assert drop_at({"loss": 0.8, "top1": 85.0}, 1.0, "loss", base) == pytest.approx(0.3)  # a block


def test_plot_writes_png(tmp_path: Path) -> None:
    res = {
        "kind": "channel",
        "samples": 10,
        "baseline": {"top1": 90.0, "loss": 0.3},
        "units": {
            f"l{i}": {"curve": [{"ratio": r, "top1": 90 - 50 * r * i / 20, "loss": 0.3 + r * i} for r in (0.5, 0.9)]}
            for i in range(20)
        },
    }
    p = plot_sensitivity(res, tmp_path / "s.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res_b = {
        "kind": "block",
        "samples": 10,
        "baseline": {"top1": 90.0, "loss": 0.3},
        "units": {"b1": {"top1": 80.0, "loss": 0.5}, "b2": {"top1": 85.0, "loss": 0.4}},
    }
    assert plot_sensitivity(res_b, tmp_path / "b.png").stat().st_size > 1000
    assert np.isfinite(res["units"]["l3"]["curve"][0]["loss"])


def test_adaptive_scan_measures_less_and_agrees_where_it_measures(trained: DigitsNet, digits) -> None:
    ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    kw = dict(samples=64, backend="torch", early_stop=False, layers=["blocks.0.conv1", "fc"])
    full = sensitivity(trained, digits, "weight", ratios, **kw)
    assert full["measurements"] == 2 * 9
    lazy = sensitivity(trained, digits, "weight", ratios, adaptive_tol=1e9, **kw)  # nothing moves "enough"
    assert lazy["measurements"] == 2
    for name, entry in lazy["units"].items():
        pts = entry["curve"]
        assert [p.get("interpolated", False) for p in pts] == [True] * 8 + [False]
        assert pts[-1]["loss"] == pytest.approx(full["units"][name]["curve"][-1]["loss"], rel=1e-6)
        # interpolated linearly between the baseline (ratio 0) and the measured end point
        mid = pts[4]
        expect = full["baseline"]["loss"] + (pts[-1]["loss"] - full["baseline"]["loss"]) * 0.5 / 0.9
        assert mid["loss"] == pytest.approx(expect, rel=1e-6)
    exact = sensitivity(trained, digits, "weight", ratios, adaptive_tol=1e-12, **kw)  # bisects down to every point
    for name, entry in exact["units"].items():
        for a, b in zip(entry["curve"], full["units"][name]["curve"], strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and not a.get("interpolated")
