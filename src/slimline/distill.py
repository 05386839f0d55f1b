"""Knowledge distillation as a loss for :func:`slimline.train.fit` (no second training loop).

The loss is Hinton et al. (2015)::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft term's gradients the same size whatever the temperature. Optional
feature ("hint") distillation (Romero et al. 2015, FitNets) adds ``weight * MSE(adapter(f_s), f_t)``
between an intermediate feature map of the student and one of the teacher, through a learned 1x1
convolution so that students of another width can match.

For other steps (e.g. recovering accuracy after pruning)::

    crit = kd_criterion(teacher, temperature=4.0, alpha=0.9)
    fit(student, train_ds, TrainConfig(...), criterion=crit)

or :func:`distill`, which also checks the two models agree on classes, caches the teacher's logits
per sample when the training inputs do not change between epochs, and wires up hints.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimline.data.base import ArrayDataset
from slimline.errors import ModelError, SlimlineError
from slimline.progress import make_progress
from slimline.train import Criterion, TrainConfig, TrainResult, fit, state_hash

__all__ = [
    "DistillResult",
    "FeatureHint",
    "KDCriterion",
    "TeacherCache",
    "check_outputs",
    "distill",
    "kd_criterion",
    "kd_loss",
]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, labels)``, batch mean.

    ``p = softmax(logits / T)``; the KL term is summed over classes and averaged over the batch.
    """
    _check_hparams(temperature, alpha)
    if student_logits.shape != teacher_logits.shape:
        raise ModelError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape: the two models must predict the same classes"
        )
    t = float(temperature)
    s = student_logits.float()
    loss = s.new_zeros(())
    if alpha > 0:
        soft = F.kl_div(
            F.log_softmax(s / t, dim=1),
            F.log_softmax(teacher_logits.detach().float() / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        loss = loss + alpha * t * t * soft
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(s, labels, label_smoothing=label_smoothing)
    return loss


def _check_hparams(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise SlimlineError(f"distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise SlimlineError(f"distillation alpha must lie in [0, 1], got {alpha}")


def _teacher_forward(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Teacher logits in eval mode, without building a graph."""
    teacher.eval()  # every call: a caller may have switched it (or one of its layers) to train mode
    with torch.no_grad():
        return teacher(x).float()


def _probe(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)


def check_outputs(student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...] | list[int]) -> int:
    """Run both models on a zero batch; raise ModelError unless they output the same number of classes."""
    if student is teacher:
        raise ModelError("the student and the teacher are the same module object: distil into a copy")
    shape = tuple(input_shape)
    outs = {}
    for role, m in (("student", student), ("teacher", teacher)):
        try:
            outs[role] = _probe(m, shape)
        except RuntimeError as e:
            raise ModelError(f"the {role} cannot run on inputs of shape {list(shape)}: {str(e).splitlines()[0]}") from e
    s, t = outs["student"], outs["teacher"]
    if s.ndim != 2 or t.ndim != 2 or s.shape[1] != t.shape[1]:
        raise ModelError(
            f"the student outputs {tuple(s.shape[1:])} per sample but the teacher outputs {tuple(t.shape[1:])}: "
            "distillation needs both to predict the same classes (build the student with the teacher's "
            f"num_classes={t.shape[-1]})"
        )
    return int(t.shape[1])


class TeacherCache:
    """Teacher logits per training sample, keyed by the sample's exact input bytes.

    Valid only while each sample reaches the model identically every epoch (augmentation off).
    Keying by content rather than by index needs nothing from the data loader, and a sample not in
    the cache (or changed) is simply computed by the teacher, so a lookup can never return the wrong
    sample's logits.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher
        self._rows: dict[bytes, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def keys(x: torch.Tensor) -> list[bytes]:
        flat = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]

    def fill(self, ds: ArrayDataset, batch_size: int = 256) -> None:
        """Compute the teacher's logits for every sample of ``ds`` once, in a fixed order."""
        with make_progress() as bar:
            task = bar.add_task("teacher logits", total=len(ds), info="")
            for i in range(0, len(ds), batch_size):
                x = ds.normalize(ds.x[i : i + batch_size])
                logits = _teacher_forward(self.teacher, x).numpy()
                for k, row in zip(self.keys(x), logits, strict=True):
                    self._rows[k] = row
                bar.update(task, advance=len(x))

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits for the batch ``x``; samples not cached yet are computed and stored."""
        keys = self.keys(x)
        missing = [i for i, k in enumerate(keys) if k not in self._rows]
        if missing:
            computed = _teacher_forward(self.teacher, x[missing]).numpy()
            for i, row in zip(missing, computed, strict=True):
                self._rows[keys[i]] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.from_numpy(np.stack([self._rows[k] for k in keys]))

    def stats(self) -> dict[str, int]:
        return {"samples": len(self), "hits": self.hits, "misses": self.misses}


def _find_module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        convs = [
            n for n, m in modules.items() if n and isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.ReLU | nn.Sequential)
        ]
        raise ModelError(
            f"the {role} has no layer {name!r}; layers with feature maps include: {', '.join(convs[-12:]) or '(none)'}"
        )
    return modules[name]


class FeatureHint:
    """Match the student's feature map at ``student_layer`` to the teacher's at ``teacher_layer``.

    A learned 1x1 convolution (``adapter``) maps the student's channels to the teacher's; if the
    spatial sizes differ the adapted map is resized (bilinear) to the teacher's. The loss is
    ``weight * mean((adapter(f_s) - f_t)^2)``. Train ``adapter.parameters()`` with the student
    (``fit(..., extra_params=hint.parameters())``) and call :meth:`remove` afterwards.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        student_layer: str,
        teacher_layer: str,
        input_shape: tuple[int, ...] | list[int],
        weight: float = 1.0,
        seed: int = 0,
    ) -> None:
        if weight < 0:
            raise SlimlineError(f"hint weight must be >= 0, got {weight}")
        self.student_layer, self.teacher_layer, self.weight = student_layer, teacher_layer, float(weight)
        self._feats: dict[str, torch.Tensor | None] = {"student": None, "teacher": None}
        s_mod = _find_module(student, student_layer, "student")
        t_mod = _find_module(teacher, teacher_layer, "teacher")
        self._handles = [
            s_mod.register_forward_hook(self._hook("student")),
            t_mod.register_forward_hook(self._hook("teacher")),
        ]
        try:
            _probe(student, tuple(input_shape))
            _probe(teacher, tuple(input_shape))
            fs, ft = self._feats["student"], self._feats["teacher"]
            for role, f, layer in (("student", fs, student_layer), ("teacher", ft, teacher_layer)):
                if f is None or f.ndim != 4:
                    got = "nothing" if f is None else f"shape {tuple(f.shape)}"
                    raise ModelError(f"{role} layer {layer!r} gave {got}; a hint needs an N x C x H x W feature map")
            assert fs is not None and ft is not None
            gen = torch.Generator().manual_seed(seed)
            self.adapter = nn.Conv2d(fs.shape[1], ft.shape[1], kernel_size=1, bias=False)
            bound = 1.0 / fs.shape[1] ** 0.5
            with torch.no_grad():
                self.adapter.weight.uniform_(-bound, bound, generator=gen)
            self.student_channels, self.teacher_channels = int(fs.shape[1]), int(ft.shape[1])
        except BaseException:
            self.remove()
            raise
        self._clear()

    def _hook(self, role: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._feats[role] = output if isinstance(output, torch.Tensor) else None

        return hook

    def _clear(self) -> None:
        self._feats["student"] = self._feats["teacher"] = None

    def parameters(self) -> list[nn.Parameter]:
        return list(self.adapter.parameters())

    def loss(self) -> torch.Tensor:
        """The hint loss for the last student and teacher forward passes (then forgets them)."""
        fs, ft = self._feats["student"], self._feats["teacher"]
        self._clear()
        if fs is None or ft is None:
            raise ModelError("hint distillation saw no feature map: run the student and the teacher first")
        out = self.adapter(fs)
        if out.shape[-2:] != ft.shape[-2:]:
            out = F.interpolate(out, size=ft.shape[-2:], mode="bilinear", align_corners=False)
        return self.weight * F.mse_loss(out.float(), ft.detach().float())

    def remove(self) -> None:
        """Take the forward hooks off both models."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._clear()

    def describe(self) -> dict[str, Any]:
        return {
            "student_layer": self.student_layer,
            "teacher_layer": self.teacher_layer,
            "weight": self.weight,
            "adapter": f"1x1 conv {self.student_channels} -> {self.teacher_channels}",
        }


class KDCriterion:
    """A ``criterion(model, x, y) -> (loss, logits)`` for :func:`slimline.train.fit`.

    The teacher runs in eval mode under ``no_grad`` (or its logits come from ``cache``). With a
    ``hint`` the teacher runs every batch (its feature map is needed), so the cache is not used.
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha: float = 0.9,
        *,
        cache: TeacherCache | None = None,
        hint: FeatureHint | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        _check_hparams(temperature, alpha)
        if cache is not None and cache.teacher is not teacher:
            raise SlimlineError("the logit cache belongs to another teacher")
        self.teacher, self.temperature, self.alpha = teacher, float(temperature), float(alpha)
        self.cache, self.hint, self.label_smoothing = cache, hint, label_smoothing
        self.last: dict[str, float] = {}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if model is self.teacher:
            raise ModelError("the student and the teacher are the same module object: distil into a copy")
        logits = model(x)
        if self.hint is not None:
            teacher_logits = _teacher_forward(self.teacher, x)
        elif self.cache is not None:
            teacher_logits = self.cache.lookup(x)
        elif self.alpha > 0:
            teacher_logits = _teacher_forward(self.teacher, x)
        else:  # labels only: the teacher is not needed
            teacher_logits = logits.detach()
        if teacher_logits.shape != logits.shape:
            raise ModelError(
                f"the student outputs {logits.shape[-1]} classes but the teacher {teacher_logits.shape[-1]}: "
                "distillation needs both to predict the same classes"
            )
        loss = kd_loss(logits, teacher_logits, y, self.temperature, self.alpha, self.label_smoothing)
        self.last = {"kd": float(loss.detach())}
        if self.hint is not None:
            h = self.hint.loss()
            self.last["hint"] = float(h.detach())
            loss = loss + h
        return loss, logits

    def extra_params(self) -> list[nn.Parameter]:
        """Parameters to train beside the student (the hint adapter): pass as ``fit(extra_params=...)``."""
        return self.hint.parameters() if self.hint is not None else []

    def close(self) -> None:
        if self.hint is not None:
            self.hint.remove()


def kd_criterion(
    teacher: nn.Module,
    temperature: float = 4.0,
    alpha: float = 0.9,
    *,
    cache: TeacherCache | None = None,
    hint: FeatureHint | None = None,
    label_smoothing: float = 0.0,
) -> KDCriterion:
    """The distillation loss as a ``fit`` criterion (see :class:`KDCriterion`)."""
    return KDCriterion(teacher, temperature, alpha, cache=cache, hint=hint, label_smoothing=label_smoothing)


@dataclass
class DistillResult:
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    resume: dict[str, Any] | None = None  # see TrainResult.resume
    temperature: float = 4.0
    alpha: float = 0.9
    cache: dict[str, int] | None = None  # samples / hits / misses when teacher logits were cached
    hint: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _augments(train: ArrayDataset, cfg: TrainConfig) -> bool:
    return bool(cfg.augment) and train.spec.augment != "none"


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train: ArrayDataset,
    cfg: TrainConfig,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    val: ArrayDataset | None = None,
    checkpoint: str | Path | None = None,
    cache: bool | Literal["auto"] = "auto",
    hint_layers: tuple[str, str] | None = None,
    hint_weight: float = 1.0,
    description: str = "distill",
    stop_after_epoch: int | None = None,
) -> DistillResult:
    """Train ``student`` in place from ``teacher`` with :func:`slimline.train.fit`.

    ``cache="auto"`` caches the teacher's logits per sample when augmentation is off and no hint
    is used (the teacher then runs once over the data instead of every epoch). ``hint_layers`` is
    ``(student_layer, teacher_layer)`` for feature distillation through a learned 1x1 adapter.
    """
    _check_hparams(temperature, alpha)
    input_shape = train.spec.input_shape
    check_outputs(student, teacher, input_shape)
    augmenting = _augments(train, cfg)
    if cache is True and augmenting:
        raise SlimlineError(
            "cached teacher logits need the same inputs every epoch: turn augmentation off or the cache off"
        )
    if cache is True and hint_layers is not None:
        raise SlimlineError("hint distillation needs the teacher's feature maps every batch: turn the cache off")
    use_cache = cache is True or (cache == "auto" and not augmenting and hint_layers is None and alpha > 0)
    hint = None
    if hint_layers is not None:
        hint = FeatureHint(student, teacher, hint_layers[0], hint_layers[1], input_shape, hint_weight, cfg.seed)
    logit_cache = None
    if use_cache:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        logit_cache = TeacherCache(teacher)
        logit_cache.fill(train)
    crit: Criterion = kd_criterion(
        teacher, temperature, alpha, cache=logit_cache, hint=hint, label_smoothing=cfg.label_smoothing
    )
    try:
        res: TrainResult = fit(
            student,
            train,
            cfg,
            val=val,
            criterion=crit,
            checkpoint=checkpoint,
            extra_params=hint.parameters() if hint is not None else None,
            description=description,
            stop_after_epoch=stop_after_epoch,
            setup={
                "temperature": float(temperature),
                "alpha": float(alpha),
                "hint_layers": list(hint_layers) if hint_layers else None,
                "hint_weight": float(hint_weight),
                "teacher": state_hash(teacher.state_dict()),
            },
        )
    finally:
        if hint is not None:
            hint.remove()
    return DistillResult(
        epochs=res.epochs,
        history=res.history,
        resumed_from=res.resumed_from,
        resume=res.resume,
        temperature=float(temperature),
        alpha=float(alpha),
        cache=logit_cache.stats() if logit_cache is not None else None,
        hint=hint.describe() if hint is not None else None,
    )
