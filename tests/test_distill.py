"""Knowledge distillation: the loss against hand-computed values, gradients, the logit cache,
feature hints, resuming, and the ``distill`` step and command on tiny models and sklearn digits."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimline.data import ArrayDataset, DataSpec, load_dataset
from slimline.distill import FeatureHint, TeacherCache, check_outputs, distill, kd_criterion, kd_loss
from slimline.errors import ModelError, SlimlineError
from slimline.train import TrainConfig, fit

# ---------------------------------------------------------------- fixtures


class TinyNet(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, pool, linear: enough to have a BN and a feature map for hints."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


def tiny(width: int = 8, num_classes: int = 10, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(width, num_classes)


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_dataset("digits", "train").take(256)


@pytest.fixture(scope="module")
def teacher(digits: ArrayDataset) -> TinyNet:
    """A tiny teacher trained briefly on digits (so its logits carry information)."""
    t = tiny(16, seed=1)
    fit(t, digits, TrainConfig(epochs=2, batch_size=64, lr=0.1, augment=False, seed=1))
    return t.eval()


CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False, seed=3)

# ---------------------------------------------------------------- the loss


S = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
T_ = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
Y = torch.tensor([2, 0])


def _log_softmax(v: list[float], temp: float = 1.0) -> list[float]:
    z = [q / temp for q in v]
    m = max(z)
    lse = m + math.log(sum(math.exp(q - m) for q in z))
    return [q - lse for q in z]


def test_kd_loss_equals_hand_computed_value() -> None:
    temp, alpha = 2.0, 0.7
    # by hand, in plain Python: KL(p_t || p_s) summed over classes, averaged over the batch
    kl = ce = 0.0
    for s, t, y in zip(S.tolist(), T_.tolist(), Y.tolist(), strict=True):
        lt, ls = _log_softmax(t, temp), _log_softmax(s, temp)
        kl += sum(math.exp(a) * (a - b) for a, b in zip(lt, ls, strict=True))
        ce += -_log_softmax(s)[y]
    kl, ce = kl / 2, ce / 2
    expected = alpha * temp**2 * kl + (1 - alpha) * ce
    assert expected == pytest.approx(1.1548319517945418, abs=1e-12)  # the same figure, worked out once
    got = kd_loss(S, T_, Y, temperature=temp, alpha=alpha)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # the two ends: alpha=0 is plain cross-entropy, alpha=1 is T^2 * KL
    assert float(kd_loss(S, T_, Y, temp, 0.0)) == pytest.approx(ce, rel=1e-6)
    assert float(kd_loss(S, T_, Y, temp, 1.0)) == pytest.approx(temp**2 * kl, rel=1e-6)
    # identical logits: no soft loss at any temperature
    assert float(kd_loss(S, S, Y, 3.0, 1.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temp", [1.0, 4.0, 10.0])
def test_t_squared_scaling(temp: float) -> None:
    s = S.clone().requires_grad_(True)
    loss = kd_loss(s, T_, Y, temperature=temp, alpha=1.0)
    s64, t64 = S.double(), T_.double()  # the reference in double precision
    kl = F.kl_div(F.log_softmax(s64 / temp, 1), F.softmax(t64 / temp, 1), reduction="batchmean")
    assert float(loss.detach()) == pytest.approx(temp**2 * float(kl), rel=1e-5)
    loss.backward()
    # d/ds of T^2 * KL(softmax(t/T) || softmax(s/T)) = T * (softmax(s/T) - softmax(t/T)) / batch
    expected = temp * (F.softmax(S / temp, 1) - F.softmax(T_ / temp, 1)) / len(S)
    assert s.grad is not None
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_t_squared_keeps_gradients_the_same_size_at_high_temperature() -> None:
    """Hinton et al.'s reason for T^2: for large T the gradient tends to (s - t) / (C * batch)."""
    s0 = S - S.mean(1, keepdim=True)
    t0 = T_ - T_.mean(1, keepdim=True)
    norms = []
    for temp in (20.0, 40.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t0, Y, temperature=temp, alpha=1.0).backward()
        assert s.grad is not None
        norms.append(float(s.grad.norm()))
    limit = float(((s0 - t0) / (3 * len(S))).norm())
    assert norms[0] == pytest.approx(limit, rel=0.02)
    assert norms[1] == pytest.approx(limit, rel=0.01)


def test_bad_hyperparameters_are_errors() -> None:
    with pytest.raises(SlimlineError, match="temperature"):
        kd_loss(S, T_, Y, temperature=0.0)
    with pytest.raises(SlimlineError, match="alpha"):
        kd_criterion(tiny(), alpha=1.5)


# ---------------------------------------------------------------- the criterion


def test_gradient_flows_to_student_not_teacher() -> None:
    student, teacher = tiny(8, seed=0), tiny(16, seed=1)
    teacher.train()  # the criterion must put it in eval mode itself
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    crit = kd_criterion(teacher, temperature=4.0, alpha=0.9)
    student.train()
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    loss, logits = crit(student, x, y)
    assert logits.shape == (6, 10) and loss.requires_grad
    loss.backward()
    for name, p in student.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched too
    # the soft term really uses the teacher: another teacher gives another loss
    other, _ = kd_criterion(tiny(16, seed=2), 4.0, 0.9)(student, x, y)
    assert abs(float(other.detach()) - float(loss.detach())) > 1e-4


def test_class_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"same classes.*num_classes=10"):
        check_outputs(tiny(8, num_classes=5), tiny(8, num_classes=10), (1, 8, 8))
    crit = kd_criterion(tiny(8, num_classes=10))
    with pytest.raises(ModelError, match="5 classes but the teacher 10"):
        crit(tiny(8, num_classes=5), torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    t = tiny()
    with pytest.raises(ModelError, match="same module"):
        check_outputs(t, t, (1, 8, 8))


def test_logit_cache_returns_the_teachers_logits(digits: ArrayDataset, teacher: TinyNet) -> None:
    cache = TeacherCache(teacher)
    cache.fill(digits)
    assert len(cache) == len(np.unique(digits.x.reshape(len(digits), -1), axis=0))
    x, _ = next(digits.batches(50, shuffle=True, seed=7))
    with torch.no_grad():
        direct = teacher(x)
    assert torch.allclose(cache.lookup(x), direct, atol=1e-5)
    assert cache.stats()["hits"] == 50 and cache.stats()["misses"] == 0
    changed = x + 0.5  # not in the cache: computed, never another sample's logits
    with torch.no_grad():
        assert torch.allclose(cache.lookup(changed), teacher(changed), atol=1e-5)
    assert cache.stats()["misses"] == 50


def test_cached_and_uncached_distillation_agree(digits: ArrayDataset, teacher: TinyNet) -> None:
    a, b = tiny(8, seed=0), tiny(8, seed=0)
    ra = distill(a, teacher, digits, CFG, cache=True)
    rb = distill(b, teacher, digits, CFG, cache=False)
    assert ra.cache is not None and ra.cache["misses"] == 0 and ra.cache["hits"] == 2 * (len(digits) // 64) * 64
    assert rb.cache is None
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va.float(), vb.float(), atol=1e-4), k
    # auto: on without augmentation, off with it; forcing it on with augmentation is an error
    one = TrainConfig(epochs=1, batch_size=64)
    assert distill(tiny(8), teacher, digits.take(128), one, cache="auto").cache
    augmenting = ArrayDataset(digits.x[:128], digits.y[:128], _augmenting_spec(digits))
    assert distill(tiny(8), teacher, augmenting, one, cache="auto").cache is None
    with pytest.raises(SlimlineError, match="augmentation"):
        distill(tiny(8), teacher, augmenting, one, cache=True)


def _augmenting_spec(ds: ArrayDataset) -> DataSpec:
    return replace(ds.spec, augment="crop", pad=1)


def test_distillation_beats_nothing_and_moves_toward_teacher(digits: ArrayDataset, teacher: TinyNet) -> None:
    """After KD with alpha=1 (no labels at all) the student agrees with the teacher far more than before."""
    student = tiny(8, seed=5)
    x = torch.from_numpy(digits.inputs())
    with torch.no_grad():
        t_pred = teacher(x).argmax(1)
        before = float((student.eval()(x).argmax(1) == t_pred).float().mean())
    distill(student, teacher, digits, TrainConfig(epochs=4, batch_size=32, lr=0.05, augment=False, seed=0), alpha=1.0)
    with torch.no_grad():
        after = float((student(x).argmax(1) == t_pred).float().mean())
    assert after > before + 0.3


# ---------------------------------------------------------------- feature hints


def test_feature_hint_adapter_and_gradients() -> None:
    student, teacher = tiny(4, seed=0), tiny(16, seed=1)
    hint = FeatureHint(student, teacher, "body.5", "body.5", (1, 8, 8), weight=2.0)
    assert hint.adapter.weight.shape == (32, 8, 1, 1)
    crit = kd_criterion(teacher, 4.0, 0.9, hint=hint)
    loss, _ = crit(student.train(), torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    assert crit.last["hint"] > 0
    assert float(loss.detach()) == pytest.approx(crit.last["kd"] + crit.last["hint"], rel=1e-5)
    loss.backward()
    assert hint.adapter.weight.grad is not None and float(hint.adapter.weight.grad.abs().sum()) > 0
    assert student.body[0].weight.grad is not None and float(student.body[0].weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())
    crit.close()
    assert not student.body[5]._forward_hooks and not teacher.body[5]._forward_hooks
    with pytest.raises(ModelError, match="no layer 'body.99'.*body.5"):
        FeatureHint(student, teacher, "body.99", "body.5", (1, 8, 8))
    with pytest.raises(ModelError, match="N x C x H x W"):
        FeatureHint(student, teacher, "head", "body.5", (1, 8, 8))
    assert not student.head._forward_hooks  # a failed construction leaves no hooks behind


def test_hint_distillation_trains_the_adapter(digits: ArrayDataset, teacher: TinyNet) -> None:
    student = tiny(4, seed=0)
    res = distill(student, teacher, digits, CFG, hint_layers=("body.5", "body.5"), hint_weight=1.0)
    assert res.hint is not None and res.hint["adapter"] == "1x1 conv 8 -> 32"
    assert res.cache is None  # the teacher must run every batch for its feature map
    assert not student.body[5]._forward_hooks and not teacher.body[5]._forward_hooks
    assert res.history[-1]["loss"] < res.history[0]["loss"]


# ---------------------------------------------------------------- resuming


@pytest.mark.parametrize("hint", [False, True], ids=["cached-logits", "hint-adapter"])
def test_resume_gives_the_same_result_as_not_stopping(
    digits: ArrayDataset, teacher: TinyNet, tmp_path: Path, hint: bool
) -> None:
    layers = ("body.5", "body.5") if hint else None
    full = tiny(4, seed=0)
    r_full = distill(full, teacher, digits, CFG, hint_layers=layers, checkpoint=tmp_path / "full.pt")

    ckpt = tmp_path / "stopped.pt"
    first = tiny(4, seed=0)
    r1 = distill(first, teacher, digits, CFG, hint_layers=layers, checkpoint=ckpt, stop_after_epoch=1)
    assert len(r1.history) == 1 and ckpt.exists()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and len(saved["extra_params"]) == (1 if hint else 0)

    resumed = tiny(4, seed=0)  # a rerun of the same step starts from the same weights (else it starts afresh)
    r2 = distill(resumed, teacher, digits, CFG, hint_layers=layers, checkpoint=ckpt)
    assert r2.resumed_from == 1 and r_full.resumed_from is None
    assert r2.history == r_full.history
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # and stopping really stopped: one epoch differs from two
    assert not torch.equal(first.head.weight, full.head.weight)


def test_resume_restores_the_adapter(digits: ArrayDataset, teacher: TinyNet, tmp_path: Path) -> None:
    """fit keeps extra_params in its checkpoint; without that a resumed hint run would restart the adapter."""
    ckpt = tmp_path / "c.pt"
    s1 = tiny(4, seed=0)
    h1 = FeatureHint(s1, teacher, "body.5", "body.5", (1, 8, 8), seed=0)
    crit1 = kd_criterion(teacher, hint=h1)
    cfg1 = TrainConfig(**{**CFG.__dict__, "epochs": 1})  # the checkpoint outlives the run: resuming just loads
    fit(s1, digits, cfg1, criterion=crit1, extra_params=h1.parameters(), checkpoint=ckpt)
    trained = h1.adapter.weight.detach().clone()
    h1.remove()
    s2 = tiny(4, seed=0)
    h2 = FeatureHint(s2, teacher, "body.5", "body.5", (1, 8, 8), seed=0)
    assert not torch.equal(h2.adapter.weight, trained)
    fit(s2, digits, cfg1, criterion=kd_criterion(teacher, hint=h2), extra_params=h2.parameters(), checkpoint=ckpt)
    assert torch.equal(h2.adapter.weight, trained)
    h2.remove()


# ---------------------------------------------------------------- the step and the command


def _recipe(tmp_path: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "kd",
        "model": {"name": "small_cnn"},
        "data": {"name": "digits", "train_limit": 260, "test_limit": 60, "val_size": 60},
        "seed": 0,
        "steps": steps,
        "output_dir": str(tmp_path / "run"),
    }


def test_distill_step_fresh_student_from_baseline_teacher(tmp_path: Path) -> None:
    from slimline.api import run
    from slimline.artifact import Artifact, load_torch
    from slimline.models import count_macs

    steps = [
        {"distill": {"student": {"name": "small_cnn_half"}, "epochs": 1, "teacher": {"name": "00_baseline"}}},
        {"evaluate": {}},
    ]
    res = run(_recipe(tmp_path, steps))
    rec = res["stages"][1]["record"]
    assert rec["teacher"]["artifact"] == "00_baseline" and rec["student"]["model"] == "small_cnn_half"
    assert rec["student"]["macs"] * 3.5 < rec["teacher"]["macs"]
    assert rec["val"]["n"] == 60 and 0 <= rec["val"]["top1"] <= 100 and len(rec["history"]) == 1
    assert rec["distill"]["temperature"] == 4.0 and rec["distill"]["alpha"] == 0.9
    assert rec["distill"]["cache"]["misses"] == 0  # digits are never augmented: auto caches the teacher's logits
    art = Artifact.load(tmp_path / "run" / "01_distill")
    assert art.meta["model"] == "small_cnn_half" and not (art.path / "checkpoint.pt").exists()
    model = load_torch(art)
    assert count_macs(model, (1, 8, 8)) == rec["student"]["macs"]
    assert res["stages"][2]["record"]["metrics"]["n"] == 60


def test_distill_step_defaults_student_is_current_teacher_is_baseline(tmp_path: Path) -> None:
    from slimline.api import run

    res = run(_recipe(tmp_path, [{"distill": {"epochs": 1, "augment": False}}]))
    rec = res["stages"][1]["record"]
    assert rec["teacher"]["artifact"] == "00_baseline" and rec["student"]["artifact"] == "00_baseline"
    assert rec["distill"]["cache"]["misses"] == 0 and rec["distill"]["cache"]["samples"] > 0


def test_distill_step_class_mismatch(tmp_path: Path) -> None:
    from slimline.api import run

    steps = [{"distill": {"student": {"name": "small_cnn_half", "kwargs": {"num_classes": 7}}, "epochs": 1}}]
    with pytest.raises(ModelError, match="same classes"):
        run(_recipe(tmp_path, steps))


def test_distill_step_unknown_option_is_a_recipe_error(tmp_path: Path) -> None:
    from slimline.api import run
    from slimline.errors import RecipeError

    with pytest.raises(RecipeError, match="temprature: unknown field"):
        run(_recipe(tmp_path, [{"distill": {"temprature": 3}}]))


def test_distill_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    out, js = tmp_path / "cli", tmp_path / "r.json"
    base = ["distill", "-t", "small_cnn", "-s", "small_cnn_half", "-d", "digits"]
    args = [*base, "--epochs", "1", "--limit", "200", "--val-size", "60", "--no-augment", "-T", "3", "--alpha", "0.5"]
    args += ["-o", str(out), "--json", str(js)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    data = json.loads(js.read_text())
    rec = data["stages"][1]["record"]
    assert rec["distill"]["temperature"] == 3.0 and rec["distill"]["alpha"] == 0.5 and rec["val"]["n"] == 60
    assert "top1_agreement" in data["stages"][2]["record"]["metrics"]
    assert (out / "01_distill" / "artifact.json").exists() and not (out / "01_distill" / "checkpoint.pt").exists()
    bad = CliRunner().invoke(app, [*base, "--cache", "x"])
    assert bad.exit_code == 1 and "--cache must be auto, on or off" in bad.output
