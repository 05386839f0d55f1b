from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimline.data import load_dataset
from slimline.errors import SlimlineError
from slimline.evaluate import accuracy_metrics, evaluate, fidelity, wilson_interval
from slimline.models import build_model
from slimline.train import TrainConfig, fit

CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False, seed=3)


def _digits():
    return load_dataset("digits", "train").split_off(300, seed=0)


def test_training_learns_and_is_deterministic() -> None:
    train, val = _digits()
    a, b = build_model("small_cnn_half"), build_model("small_cnn_half")
    b.load_state_dict(a.state_dict())
    fit(a, train, CFG)
    fit(b, train, CFG)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    assert evaluate(a, val)["top1"] > 60  # 10 classes: chance is 10%


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    train, _ = _digits()
    torch.manual_seed(0)
    init = build_model("small_cnn_half").state_dict()
    full, part = build_model("small_cnn_half"), build_model("small_cnn_half")
    full.load_state_dict(init)
    part.load_state_dict(init)
    fit(full, train, CFG)
    ckpt = tmp_path / "ckpt.pt"
    first = fit(part, train, CFG, checkpoint=ckpt, stop_after_epoch=1)
    assert ckpt.exists() and len(first.history) == 1
    resumed_model = build_model("small_cnn_half")
    resumed = fit(resumed_model, train, CFG, checkpoint=ckpt)
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    for (k, va), vb in zip(full.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_weight_average_ends_as_the_model_and_resumes(tmp_path: Path) -> None:
    import dataclasses

    train, _ = _digits()
    cfg = dataclasses.replace(CFG, ema=0.9)
    torch.manual_seed(0)
    init = build_model("small_cnn_half").state_dict()
    plain, avg, part = (build_model("small_cnn_half") for _ in range(3))
    for m in (plain, avg, part):
        m.load_state_dict(init)
    fit(plain, train, CFG)
    fit(avg, train, cfg)
    # same steps, but the result is the running average, not the last weights
    pairs = zip(plain.state_dict().values(), avg.state_dict().values(), strict=True)
    assert any(not torch.allclose(a.float(), b.float()) for a, b in pairs)
    ckpt = tmp_path / "ckpt.pt"
    fit(part, train, cfg, checkpoint=ckpt, stop_after_epoch=1)
    resumed = build_model("small_cnn_half")
    fit(resumed, train, cfg, checkpoint=ckpt)
    for (k, va), vb in zip(avg.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)  # the average survives the checkpoint
    with pytest.raises(SlimlineError, match="has no weight average"):
        fit(build_model("small_cnn_half"), train, cfg, checkpoint=_without_ema(ckpt, tmp_path))


def _without_ema(ckpt: Path, tmp_path: Path) -> Path:
    state = torch.load(ckpt, weights_only=True)
    state.pop("ema")
    state["epoch"] = 1
    out = tmp_path / "plain.pt"
    torch.save(state, out)
    return out


def test_accuracy_metrics_and_interval() -> None:
    import numpy as np

    logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    labels = np.array([0, 1, 2, 3, 1])
    m = accuracy_metrics(logits, labels)
    assert m["top1"] == 80.0 and m["n"] == 5 and m["top5"] == 100.0
    lo, hi = wilson_interval(0.926, 1000)
    assert 0.90 < lo < 0.91 and 0.94 < hi < 0.95  # about +/-1.6 points on 1,000 images
    f = fidelity(logits, logits)
    assert f["top1_agreement"] == 100.0 and abs(f["logit_cosine"] - 1) < 1e-6
