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
    resumed_model.load_state_dict(init)  # a rerun of the step starts from the same input model
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
    resumed.load_state_dict(init)
    fit(resumed, train, cfg, checkpoint=ckpt)
    for (k, va), vb in zip(avg.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)  # the average survives the checkpoint
    again = build_model("small_cnn_half")
    again.load_state_dict(init)
    with pytest.raises(SlimlineError, match="has no weight average"):
        fit(again, train, cfg, checkpoint=_without_ema(ckpt, tmp_path))


def _without_ema(ckpt: Path, tmp_path: Path) -> Path:
    state = torch.load(ckpt, weights_only=True)
    state.pop("ema")
    state["epoch"] = 1
    out = tmp_path / "plain.pt"
    torch.save(state, out)
    return out


def test_checkpoint_of_another_configuration_is_discarded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run stopped with config A and rerun with B restarts (same weights as a fresh B run); rerun with A resumes."""
    import dataclasses

    train, _ = _digits()
    cfg_b = dataclasses.replace(CFG, lr=0.3)
    torch.manual_seed(0)
    init = build_model("small_cnn_half").state_dict()

    def model() -> torch.nn.Module:
        m = build_model("small_cnn_half")
        m.load_state_dict(init)
        return m

    fresh_b = model()
    fit(fresh_b, train, cfg_b)
    ckpt = tmp_path / "ckpt.pt"
    fit(model(), train, CFG, checkpoint=ckpt, stop_after_epoch=1)  # config A, killed after epoch 1
    capsys.readouterr()
    with_b = model()
    res = fit(with_b, train, cfg_b, checkpoint=ckpt)
    out = " ".join(capsys.readouterr().err.split())
    assert "made with another configuration (changed: lr); starting this step afresh" in out
    assert res.resumed_from is None and res.resume is not None and "changed: lr" in res.resume["discarded"]
    for (k, va), vb in zip(fresh_b.state_dict().items(), with_b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    # the same configuration resumes: stopped again with A, rerun with A
    fit(model(), train, CFG, checkpoint=ckpt, stop_after_epoch=1)
    res = fit(model(), train, CFG, checkpoint=ckpt)
    assert res.resumed_from == 1 and res.resume == {"from_epoch": 1}
    # other weights in, or other data, also restart the step
    fit(model(), train, CFG, checkpoint=ckpt, stop_after_epoch=1)
    res = fit(build_model("small_cnn_half"), train, CFG, checkpoint=ckpt, stop_after_epoch=1)
    assert res.resume is not None and "input model" in res.resume["discarded"]
    res = fit(model(), train.take(400), CFG, checkpoint=ckpt)
    assert res.resume is not None and "data" in res.resume["discarded"]


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
