"""The one training loop behind train, fine-tune, distillation and QAT.

Deterministic for a seed; checkpoints are written atomically after every epoch and a run resumes
from the last one. A ``criterion(model, x, y) -> (loss, logits)`` hook lets distillation and
QAT change the loss without a second loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimline.data.base import ArrayDataset
from slimline.errors import SlimlineError
from slimline.evaluate import evaluate
from slimline.fileio import torch_save
from slimline.progress import console, make_progress

Criterion = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    augment: bool = True
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int | None = None
    ema: float = 0.0  # > 0: keep an exponential moving average of weights and buffers; the model ends as it


@dataclass
class TrainResult:
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    resume: dict[str, Any] | None = None  # {"from_epoch": n} or {"discarded": why}; None: no checkpoint found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cross_entropy(label_smoothing: float = 0.0) -> Criterion:
    def crit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return crit


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


def make_schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(
    model: nn.Module,
    train: ArrayDataset,
    cfg: TrainConfig,
    *,
    val: ArrayDataset | None = None,
    criterion: Criterion | None = None,
    checkpoint: str | Path | None = None,
    extra_params: list[nn.Parameter] | None = None,
    description: str = "train",
    stop_after_epoch: int | None = None,
    setup: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place. With ``checkpoint``, save after each epoch and resume from it.

    ``stop_after_epoch`` ends the run early after that epoch (used to test resuming).
    ``extra_params`` (e.g. a distillation adapter) are optimised with the model and saved in the
    checkpoint beside it, so a resumed run continues with their trained values.
    ``setup``: what else decides the result besides ``cfg``, the model and the data (the loss's
    settings, a teacher's identity), as JSON-able values. A checkpoint carries a fingerprint of all
    of these; one made with anything different is discarded (with a console line) instead of resumed.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    crit = criterion or cross_entropy(cfg.label_smoothing)
    extra = list(extra_params or [])
    params = [p for p in model.parameters() if p.requires_grad] + extra
    opt = make_optimizer(params, cfg)
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    sched = make_schedule(opt, cfg, steps_per_epoch)
    ema = _Ema(model, cfg.ema) if cfg.ema > 0 else None
    result = TrainResult(epochs=cfg.epochs)
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    fingerprint = run_fingerprint(model, train, cfg, extra, setup) if ckpt is not None else {}
    state: dict[str, Any] | None = None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        changed = fingerprint_changes(state.get("fingerprint"), fingerprint)
        if changed:
            why = f"made with another configuration (changed: {', '.join(changed)})"
            console.print(f"checkpoint {ckpt} was {why}; starting this step afresh", highlight=False)
            result.resume = {"discarded": f"checkpoint {why}"}
            ckpt.unlink()
            state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        saved_extra = state.get("extra_params", [])
        if saved_extra:
            if len(saved_extra) != len(extra):
                raise SlimlineError(
                    f"checkpoint {ckpt} holds {len(saved_extra)} extra parameters but this run trains {len(extra)}: "
                    "it comes from a different setup; delete it to start over"
                )
            with torch.no_grad():
                for p, v in zip(extra, saved_extra, strict=True):
                    p.copy_(v)
        if ema is not None:
            if "ema" not in state:
                raise SlimlineError(
                    f"checkpoint {ckpt} has no weight average but this run keeps one; delete it to start over"
                )
            ema.load_state_dict(state["ema"])
        start = int(state["epoch"])
        result.history = list(state.get("history", []))
        result.resumed_from = start
        result.resume = {"from_epoch": start}
    with make_progress() as bar:
        task = bar.add_task(description, total=cfg.epochs * steps_per_epoch, completed=start * steps_per_epoch, info="")
        for epoch in range(start, cfg.epochs):
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            batches = train.batches(
                cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed * 1000 + epoch, drop_last=True
            )
            for x, y in batches:
                opt.zero_grad(set_to_none=True)
                loss, logits = crit(model, x, y)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model)
                total_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(
                    task,
                    advance=1,
                    info=f"epoch {epoch + 1}/{cfg.epochs} loss {total_loss / seen:.3f} acc {100 * correct / seen:.1f}%",
                )
            row = {"epoch": epoch + 1, "loss": total_loss / max(1, seen), "train_top1": 100 * correct / max(1, seen)}
            if val is not None:
                row["val_top1"] = evaluate(ema.model if ema is not None else model, val)["top1"]
                bar.update(task, info=f"epoch {epoch + 1}/{cfg.epochs} val {row['val_top1']:.2f}%")
            result.history.append(row)
            if ckpt is not None:
                torch_save(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch + 1,
                        "history": result.history,
                        "extra_params": [p.detach().clone() for p in extra],
                        "fingerprint": fingerprint,
                        **({"ema": ema.state_dict()} if ema is not None else {}),
                    },
                    ckpt,
                )
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    return result


def state_hash(tensors: Any) -> str:
    """A hash of a state_dict's (or a list of tensors') names, shapes, dtypes and values."""
    items = tensors.items() if isinstance(tensors, dict) else enumerate(tensors)
    h = hashlib.blake2b(digest_size=16)
    for k, v in items:
        h.update(str(k).encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            if t.is_quantized:
                t = t.int_repr()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            try:
                h.update(t.contiguous().numpy().tobytes())
            except TypeError:  # dtypes numpy lacks (bfloat16, ...)
                h.update(t.float().contiguous().numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def data_identity(ds: ArrayDataset) -> dict[str, Any]:
    """Name, split, size and a hash of the labels and every 97th image: enough to tell datasets apart."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(ds.y).tobytes())
    h.update(np.ascontiguousarray(ds.x[::97]).tobytes())
    ident = {"name": ds.spec.name, "split": ds.split, "size": len(ds), "hash": h.hexdigest()}
    if ds.spec.preprocess is not None:  # the same images under another scale/mean/std are other inputs
        ident["preprocess"] = ds.spec.preprocess.to_dict()
    return ident


def run_fingerprint(
    model: nn.Module,
    train: ArrayDataset,
    cfg: TrainConfig,
    extra: list[nn.Parameter] | None = None,
    setup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a training run depends on: its settings (``cfg`` and ``setup``), the starting weights and the data."""
    config = {k: v for k, v in asdict(cfg).items() if k != "threads"}  # threads change speed, not what is learnt
    return {
        "config": json.loads(json.dumps(config, default=str)),
        "setup": json.loads(json.dumps(setup or {}, default=str)),
        "model": state_hash(model.state_dict()),
        "extra_params": state_hash(list(extra or [])),
        "data": data_identity(train),
    }


def fingerprint_changes(saved: Any, now: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's (setting names, 'input model', 'data')."""
    if not isinstance(saved, dict):
        return ["the checkpoint has no fingerprint"]
    changed: list[str] = []
    for part in ("config", "setup"):
        old, new = saved.get(part) or {}, now.get(part) or {}
        changed += [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if saved.get("model") != now.get("model") or saved.get("extra_params") != now.get("extra_params"):
        changed.append("input model")
    if saved.get("data") != now.get("data"):
        changed.append("data")
    return changed


class _Ema:
    """An exponential moving average of a model's weights and buffers (BatchNorm statistics included).

    ``decay`` per optimizer step; the first steps use ``min(decay, (1 + t) / (10 + t))`` so the
    average is not dominated by the starting weights on short runs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        if not 0 < decay < 1:
            raise SlimlineError(f"ema decay must lie in (0, 1), got {decay}")
        self.decay, self.steps = float(decay), 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        mine = self.model.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                mine[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                mine[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.model.load_state_dict(state["model"])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.model.state_dict())
