"""Prune to a plan in ``k`` steps, fine-tuning between steps, optionally distilling from the unpruned model.

All fine-tuning goes through :func:`slimline.train.fit`. With ``kd`` the loss is
:func:`slimline.distill.kd_criterion` with the unpruned model as teacher; if that module is not
available the recovery falls back to plain cross-entropy and says so in the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.data.base import ArrayDataset
from slimline.errors import ModelError
from slimline.evaluate import evaluate
from slimline.prune.allocate import Plan
from slimline.prune.block import remove_blocks
from slimline.prune.channel import prune_channels
from slimline.train import Criterion, TrainConfig, fit, state_hash


@dataclass
class FinetuneConfig:
    epochs: int = 0  # after the last pruning step
    epochs_per_step: int = 0  # between pruning steps
    lr: float = 0.01
    warmup_epochs: float = 0.0
    batch_size: int = 64
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    augment: bool = True
    kd: bool = True
    temperature: float = 4.0
    alpha: float = 0.9
    seed: int = 0
    threads: int | None = None
    teacher_runtime: str = "auto"  # torch | onnxruntime | auto (ONNX Runtime when the teacher exports)
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics after each pruning step
    mixup: float = 0.0  # with kd: blend pairs of inputs (Beta(mixup, mixup)) and match the teacher on them
    cutmix: float = 0.0  # with kd: paste a box of one input into another (area ~ Beta(cutmix, cutmix))
    jitter: float = 0.0  # with kd: random zoom/shift/rotation and brightness/contrast of this strength (0..1)
    ema: float = 0.0  # keep an exponential moving average of the weights (decay per step); the result is the average
    feature_layers: tuple[str, ...] = ()  # with kd: also match these layers' outputs to the teacher's (MSE)
    feature_weight: float = 1.0
    adversarial: float = 0.0  # with kd: step half the batches towards student/teacher disagreement (L-inf size)
    anchor: float = 0.0  # pull the weights towards their values at the start of fine-tuning (L2-SP), not to zero
    recalibrate_samples: int = 2048

    def train_config(self, epochs: int) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,  # type: ignore[arg-type]
            lr=self.lr,
            warmup_epochs=self.warmup_epochs,
            weight_decay=self.weight_decay,
            augment=self.augment,
            seed=self.seed,
            threads=self.threads,
            ema=self.ema,
        )


def recovery_criterion(
    teacher: nn.Module | None, cfg: FinetuneConfig, input_shape: tuple[int, ...] | None = None
) -> tuple[Criterion | None, str]:
    """The fine-tuning loss and its name: KD from ``teacher`` when asked and available, else cross-entropy."""
    if not cfg.kd or teacher is None:
        return None, "cross-entropy"
    try:
        from slimline.distill import kd_criterion
    except ImportError:  # HOOK: knowledge distillation not installed -> plain cross-entropy recovery
        return None, "cross-entropy (slimline.distill not available)"
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    where = "torch"
    if cfg.teacher_runtime in ("auto", "onnxruntime") and not isinstance(teacher, OrtTeacher):
        try:
            teacher = OrtTeacher(teacher, input_shape)
            where = "onnxruntime"
        except Exception:  # noqa: BLE001 - a teacher that does not export runs in PyTorch
            if cfg.teacher_runtime == "onnxruntime":
                raise
    return kd_criterion(teacher, temperature=cfg.temperature, alpha=cfg.alpha), (
        f"kd (T={cfg.temperature}, alpha={cfg.alpha}, teacher in {where})"
    )


class OrtTeacher(nn.Module):
    """The frozen teacher run by ONNX Runtime: same logits, about twice as fast as eager PyTorch on CPU.

    Inputs shaped like the first call's sample are exported once (dynamic batch); the result is
    checked against PyTorch on a random batch before use.
    """

    def __init__(self, teacher: nn.Module, input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self._torch = [teacher]  # a list, so that it is not registered as a submodule
        self._session: Any = None
        self._tmp: Any = None
        if input_shape is not None:
            self._open(input_shape)

    def _open(self, input_shape: tuple[int, ...]) -> None:
        import tempfile

        import numpy as np
        import onnxruntime as ort

        from slimline.onnx_export import export_onnx

        self._tmp = tempfile.TemporaryDirectory(prefix="slimline-teacher-")
        path = export_onnx(self._torch[0].eval(), tuple(input_shape), Path(self._tmp.name) / "teacher.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # kind to a shared CPU
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((4, *input_shape)).astype(np.float32)
        with torch.no_grad():
            ref = self._torch[0](torch.from_numpy(x)).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        if not np.allclose(ref, got, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(ref).max()))):
            raise RuntimeError("ONNX Runtime disagrees with PyTorch on the teacher")
        self._session, self._name = sess, sess.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            self._open(tuple(x.shape[1:]))
        out = self._session.run(None, {self._name: x.detach().contiguous().numpy()})[0]
        return torch.from_numpy(out)


def finetune(
    model: nn.Module,
    train: ArrayDataset,
    cfg: FinetuneConfig,
    epochs: int,
    *,
    teacher: nn.Module | None = None,
    val: ArrayDataset | None = None,
    checkpoint: str | Path | None = None,
    description: str = "fine-tune",
) -> dict[str, Any]:
    """Recover a pruned ``model`` on ``train`` for ``epochs`` (KD from ``teacher`` when ``cfg.kd``); returns the
    record of what it did (losses, best epoch on ``val``), resumable from ``checkpoint``."""
    if epochs <= 0:
        return {}
    if cfg.mixup > 0 or cfg.cutmix > 0 or cfg.jitter > 0 or cfg.adversarial > 0:
        if not cfg.kd or teacher is None:
            raise ModelError(
                "mixup/cutmix/jitter/adversarial recovery matches the teacher on altered inputs: "
                "it needs kd and a teacher"
            )
        cfg = replace(cfg, alpha=1.0)  # blended inputs have no single label: soft targets only
    if cfg.feature_layers or cfg.adversarial > 0:
        if not cfg.kd or teacher is None:
            raise ModelError("feature matching compares the student's layers with the teacher's: it needs kd")
        cfg = replace(cfg, teacher_runtime="torch")  # hooks / input gradients need the teacher in PyTorch
    crit, loss_name = recovery_criterion(teacher, cfg, tuple(train.spec.input_shape))
    matcher = None
    if cfg.feature_layers and crit is not None and teacher is not None:
        crit = matcher = FeatureMatch(
            crit, model, teacher, cfg.feature_layers, cfg.feature_weight, tuple(train.spec.input_shape)
        )
        loss_name += f" + {cfg.feature_weight:g} x feature MSE on {', '.join(cfg.feature_layers)}"
    if cfg.adversarial > 0 and crit is not None and teacher is not None:
        crit = Disagreement(crit, teacher, cfg.adversarial, cfg.temperature, cfg.seed)
        loss_name += f", half the batches stepped towards disagreement (L-inf {cfg.adversarial:g})"
    if (cfg.mixup > 0 or cfg.cutmix > 0) and crit is not None:
        crit = MixedInputs(crit, cfg.mixup, cfg.seed, cutmix=cfg.cutmix)
        loss_name += f", inputs blended by {crit.describe()}"
    if cfg.jitter > 0 and crit is not None:
        crit = Jittered(crit, cfg.jitter, cfg.seed)
        loss_name += f", jittered (strength {cfg.jitter:g})"
    if cfg.anchor > 0 and crit is not None:
        crit = Anchored(crit, model, cfg.anchor)
        loss_name += f" + {cfg.anchor:g}/2 x |w - w_start|^2"
    tc = cfg.train_config(epochs)
    try:
        setup = {"finetune": asdict(cfg), "teacher": state_hash(teacher.state_dict()) if teacher is not None else None}
        res = fit(
            model, train, tc, val=val, criterion=crit, checkpoint=checkpoint, description=description, setup=setup
        )
    finally:
        if matcher is not None:
            matcher.remove()
    out = {"epochs": epochs, "loss": loss_name, "train": asdict(tc), "history": res.history}
    return out | ({"resume": res.resume} if res.resume else {})


class FeatureMatch:
    """Add ``weight * sum_l mean((f_s - f_t)^2) / mean(f_t^2)`` over ``layers`` to a KD criterion.

    Pruning keeps the shapes of the residual stream, so the outputs of the stages of a pruned ResNet
    can be compared one to one with the unpruned model's: with a small training set, whole feature
    maps tell the student far more than ten logits ("few-sample" recovery). Each layer's error is
    normalised by the teacher's mean square, so layers of any scale weigh alike. The wrapped
    criterion must run the teacher in PyTorch (its forward fills the teacher's hooks).
    """

    def __init__(
        self,
        criterion: Criterion,
        student: nn.Module,
        teacher: nn.Module,
        layers: tuple[str, ...] | list[str],
        weight: float,
        input_shape: tuple[int, ...],
    ) -> None:
        self.criterion, self.weight, self.layers = criterion, float(weight), list(layers)
        self._s: dict[str, torch.Tensor] = {}
        self._t: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in self.layers:
            for role, net, store in (("student", student, self._s), ("teacher", teacher, self._t)):
                try:
                    mod = net.get_submodule(name)
                except AttributeError as e:
                    raise ModelError(f"feature matching: the {role} has no layer {name!r}") from e
                self.handles.append(mod.register_forward_hook(self._hook(store, name)))
        x = torch.zeros(2, *input_shape)
        was = student.training
        with torch.no_grad():
            student.eval()(x)
            teacher(x)
        student.train(was)
        for name in self.layers:
            if self._s[name].shape != self._t[name].shape:
                self.remove()
                raise ModelError(
                    f"feature matching: layer {name!r} gives {tuple(self._s[name].shape)} in the student but "
                    f"{tuple(self._t[name].shape)} in the teacher; name layers whose output shape pruning keeps"
                )

    @staticmethod
    def _hook(store: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            store[name] = output

        return hook

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._s.clear()
        self._t.clear()
        loss, logits = self.criterion(model, x, y)
        if len(self._t) < len(self.layers):  # the criterion did not run the teacher (labels only)
            raise ModelError("feature matching needs the teacher to run on every batch (kd with alpha > 0)")
        fm = sum(
            ((self._s[n] - self._t[n].detach()) ** 2).mean() / (self._t[n].detach() ** 2).mean().clamp_min(1e-8)
            for n in self.layers
        )
        return loss + self.weight * fm, logits

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class Disagreement:
    """Wrap a distillation criterion so that half the batches are moved to where student and teacher disagree.

    One signed-gradient step of size ``eps`` (normalised input units) on the inputs increases the KL
    divergence between the teacher's and the student's softened outputs; the criterion then matches
    the teacher on the moved inputs. With a small training set the student soon agrees with the
    teacher on every image it sees; these inputs show it the teacher's function where it still
    differs, next to the real images (as in "adversarial samples supporting the decision boundary",
    Heo et al. 2019). Every other batch is left as it is.
    """

    def __init__(self, criterion: Criterion, teacher: nn.Module, eps: float, temperature: float, seed: int = 0) -> None:
        if eps <= 0:
            raise ValueError(f"adversarial step size must be > 0, got {eps}")
        self.criterion, self.teacher, self.eps, self.t = criterion, teacher, float(eps), float(temperature)
        self.calls = seed

    def move(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        was = model.training
        model.eval()
        x = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                kl = F.kl_div(
                    F.log_softmax(model(x) / self.t, 1),
                    F.log_softmax(self.teacher(x) / self.t, 1),
                    reduction="batchmean",
                    log_target=True,
                )
                (grad,) = torch.autograd.grad(kl, x)
        finally:
            model.train(was)
        return (x + self.eps * grad.sign()).detach()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.criterion(model, self.move(model, x) if self.calls % 2 else x, y)


class Anchored:
    """Add ``strength / 2 * sum |w - w_start|^2`` over the weight matrices and kernels to a criterion.

    Fine-tuning on a small set drifts the weights away from the pretrained solution the pruned model
    started from; anchoring them to it ("L2-SP", Li et al. 2018) keeps the recovery close to that
    solution. Meant to replace weight decay towards zero: use it with ``weight_decay: 0``. The start
    is taken when the criterion is built, before a checkpoint is resumed, so a resumed run keeps it.
    """

    def __init__(self, criterion: Criterion, model: nn.Module, strength: float) -> None:
        self.criterion, self.strength = criterion, float(strength)
        self.pairs = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad and p.dim() > 1]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = self.criterion(model, x, y)
        drift = sum(((p - p0) ** 2).sum() for p, p0 in self.pairs)
        return loss + 0.5 * self.strength * drift, logits


class MixedInputs:
    """Wrap a distillation criterion so that it sees blended inputs.

    Each batch is blended with a shuffled copy of itself: mixup, ``lam * x + (1 - lam) * x[perm]``
    with ``lam ~ Beta(a, a)``, or CutMix, a box of ``x[perm]`` covering a ``1 - lam`` share of the
    image pasted into ``x`` (``lam ~ Beta(cutmix, cutmix)``); with both on, each batch takes one of the
    two at random. The teacher labels exactly the blended images the student sees (soft targets
    only), which multiplies the inputs a small training set offers for matching the teacher
    ("function matching", Beyer et al. 2022). The loss itself is the wrapped criterion's.
    """

    def __init__(self, criterion: Criterion, a: float, seed: int = 0, cutmix: float = 0.0) -> None:
        if a <= 0 and cutmix <= 0:
            raise ValueError("MixedInputs needs mixup > 0 or cutmix > 0")
        self.criterion, self.a, self.cutmix = criterion, float(a), float(cutmix)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def describe(self) -> str:
        parts = [f"mixup (Beta({self.a:g}, {self.a:g}))"] if self.a > 0 else []
        parts += [f"CutMix (Beta({self.cutmix:g}, {self.cutmix:g}))"] if self.cutmix > 0 else []
        return " or ".join(parts)

    def blend(self, x: torch.Tensor) -> torch.Tensor:
        perm = torch.randperm(len(x), generator=self.gen)
        use_cutmix = self.cutmix > 0 and (self.a <= 0 or self.rng.random() < 0.5)
        if not use_cutmix:
            lam = float(self.rng.beta(self.a, self.a))
            return lam * x + (1.0 - lam) * x[perm]
        lam = float(self.rng.beta(self.cutmix, self.cutmix))
        h, w = x.shape[-2:]
        bh, bw = int(round(h * np.sqrt(1.0 - lam))), int(round(w * np.sqrt(1.0 - lam)))
        cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
        y0, y1 = max(0, cy - bh // 2), min(h, cy + (bh + 1) // 2)
        x0, x1 = max(0, cx - bw // 2), min(w, cx + (bw + 1) // 2)
        out = x.clone()
        out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        return out

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.criterion(model, self.blend(x), y)


class Jittered:
    """Wrap a distillation criterion so that it sees geometrically and photometrically jittered inputs.

    Per image: zoom in by up to ``0.3 * strength``, shift by up to ``0.15 * strength`` of the size,
    rotate by up to ``15 * strength`` degrees (bilinear, zero padding), and change brightness and
    contrast by up to ``0.3 * strength`` (in the normalised space). Applied after the blending of
    :class:`MixedInputs` when both are on (this wrapper goes outside). The teacher sees the same
    jittered image as the student ("consistent teaching"), so no label needs to survive the change.
    """

    def __init__(self, criterion: Criterion, strength: float, seed: int = 0) -> None:
        if not 0 < strength <= 1:
            raise ValueError(f"jitter strength must lie in (0, 1], got {strength}")
        self.criterion, self.strength = criterion, float(strength)
        self.gen = torch.Generator().manual_seed(seed + 7)

    def _u(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.gen)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        n, k = len(x), self.strength
        scale = 1.0 - self._u(n, 0.0, 0.3 * k)  # < 1: the grid covers less than the image (zoom in)
        angle = torch.deg2rad(self._u(n, -15.0 * k, 15.0 * k))
        shift = torch.stack([self._u(n, -0.3 * k, 0.3 * k), self._u(n, -0.3 * k, 0.3 * k)], 1)  # in [-1, 1] units
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        contrast = self._u(n, 1.0 - 0.3 * k, 1.0 + 0.3 * k).view(n, 1, 1, 1)
        bright = self._u(n, -0.3 * k, 0.3 * k).view(n, 1, 1, 1)
        return (out - mean) * contrast + mean + bright

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.criterion(model, self.apply(x), y)


def recalibrate_bn(model: nn.Module, data: ArrayDataset, batch_size: int = 128) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``data`` (no labels, no gradients).

    Removing blocks or channels shifts the statistics the following BatchNorms normalise with;
    a forward pass over some training images puts them right (for ResNet-56 with 10 blocks removed
    this alone lifts validation top-1 from 40% to 84%). Returns the number of BatchNorm layers reset.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(data) == 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
    was = model.training
    model.train()
    try:
        with torch.no_grad():
            for x, _ in data.batches(batch_size):
                model(x)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was)
    return len(bns)


def _is_removed(model: nn.Module, name: str) -> bool:
    try:
        return isinstance(model.get_submodule(name), nn.Identity)
    except AttributeError:
        return True


def _exists(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def apply_plan(
    model: nn.Module,
    example: torch.Tensor,
    plan: Plan,
    importance: str = "l1",
    exclude: list[str] | None = None,
    grad_batches: Any = None,
) -> dict[str, Any]:
    """Remove the plan's blocks, then thin its units to their widths (units already thinner stay)."""
    blocks = [b for b in plan.blocks if not _is_removed(model, b)]
    remove_blocks(model, blocks)
    keep = {u: w for u, w in plan.keep.items() if _exists(model, u)}
    pruned = prune_channels(model, example, keep, importance, exclude, grad_batches)
    return {"blocks_removed": blocks, "channels": {u: v for u, v in pruned.items() if v["after"] < v["before"]}}


def run_schedule(
    model: nn.Module,
    example: torch.Tensor,
    plan: Plan,
    *,
    steps: int = 1,
    importance: str = "l1",
    exclude: list[str] | None = None,
    train: ArrayDataset | None = None,
    val: ArrayDataset | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    teacher: nn.Module | None = None,
    grad_batches: Callable[[], Any] | None = None,
    checkpoint: str | Path | None = None,
    on_step: Callable[[int, nn.Module], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Prune ``model`` in place to ``plan`` in ``steps`` equal stages; fine-tune between and after.

    Each stage re-scores channel importance on the current (fine-tuned) weights, then re-estimates
    the BatchNorm statistics on training images (``recalibrate_bn``) before fine-tuning.
    ``on_step(i, model)`` may add figures (sizes, validation accuracy) to each stage's record.
    """
    ft = finetune_cfg or FinetuneConfig()
    history: list[dict[str, Any]] = []
    steps = max(1, int(steps))
    for i in range(1, steps + 1):
        stage = plan.fraction(i, steps)
        rec: dict[str, Any] = {"step": i}
        rec.update(apply_plan(model, example, stage, importance, exclude, grad_batches() if grad_batches else None))
        if val is not None:
            rec["val_top1_pruned"] = evaluate(model, val)["top1"]
        if ft.recalibrate_bn and train is not None:
            recalibrate_bn(model, train.sample(ft.recalibrate_samples, seed=ft.seed + i))
            if val is not None:
                rec["val_top1_recalibrated"] = evaluate(model, val)["top1"]
        if i < steps and ft.epochs_per_step > 0 and train is not None:
            rec["finetune"] = finetune(
                model, train, ft, ft.epochs_per_step, teacher=teacher, val=val, description=f"fine-tune {i}/{steps}"
            )
        if on_step is not None:
            rec.update(on_step(i, model))
        history.append(rec)
    if ft.epochs > 0 and train is not None:
        history.append(
            {
                "step": "final",
                "finetune": finetune(
                    model,
                    train,
                    ft,
                    ft.epochs,
                    teacher=teacher,
                    val=val,
                    checkpoint=checkpoint,
                    description="fine-tune",
                ),
            }
        )
        if on_step is not None:
            history[-1].update(on_step(steps + 1, model))
    return history
