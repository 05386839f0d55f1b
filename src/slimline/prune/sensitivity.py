"""Sensitivity analysis: prune one unit at a time at growing ratios, measure, put it back.

Three kinds of unit:

- ``weight``: each Conv/Linear layer, its smallest-magnitude weights zeroed (unstructured L1);
- ``channel``: each Torch-Pruning channel group, its lowest-L1 output channels zeroed with their
  BatchNorm scale and shift (exactly what removing them computes, see :mod:`slimline.prune.channel`);
- ``block``: each removable residual block, bypassed.

One copy of the model is modified in place and restored after each measurement. Weight and
channel scans run through ONNX Runtime when it is installed (the model is exported once with its
weights as overridable inputs, so a measurement only feeds the changed tensors; about twice as
fast as PyTorch eager on CPU); block scans run in PyTorch. The metrics are top-1 (percent),
cross-entropy ``loss`` and ``kl`` divergence from the unpruned model's outputs, on a slice of the
training data. A pretrained model is often 100% right on its own training images, so ``loss`` is
the default for ranking: it still moves when top-1 does not.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimline.data.base import ArrayDataset
from slimline.errors import ModelError
from slimline.progress import make_progress
from slimline.prune.block import BlockBypass, find_blocks
from slimline.prune.channel import _weight_l1, build_graph, make_importance, masked, pruning_group, scan_units
from slimline.prune.common import example_input, match_names, prunable_layers

Kind = Literal["weight", "channel", "block"]
Metric = Literal["loss", "top1", "kl"]
KINDS: tuple[str, ...] = ("weight", "channel", "block")
DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# --------------------------------------------------------------------------- evaluating


def scores(logits: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None) -> dict[str, float]:
    """top1 (percent), mean cross-entropy, and mean KL(reference || model)."""
    out = {
        "top1": 100.0 * float((logits.argmax(1) == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
    }
    if ref is not None:
        out["kl"] = float(
            F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1), log_target=True, reduction="batchmean")
        )
    else:
        out["kl"] = 0.0
    return out


class Evaluator:
    """Runs the (possibly modified) model on fixed inputs; ``changed`` names the parameters touched.

    With ``backend="onnxruntime"`` the model is exported once with its parameters as graph inputs,
    and each call feeds the current values of the ``changed`` parameters.
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, backend: str = "auto", batch_size: int = 256
    ):
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.backend = "torch"
        self.session: Any = None
        self.inputs: set[str] = set()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.params = dict(model.named_parameters())
        if backend in ("auto", "onnxruntime"):
            try:
                self._open_ort()
            except Exception as e:  # noqa: BLE001 - fall back to PyTorch whatever went wrong
                if backend == "onnxruntime":
                    raise ModelError(f"cannot run the sensitivity scan in ONNX Runtime: {e}") from e
                self.session = None
        self.reference: torch.Tensor | None = None
        self.reference = self.logits()
        self.baseline = scores(self.reference, y, self.reference)

    def _open_ort(self) -> None:
        import onnxruntime as ort

        from slimline.onnx_export import choose_opset

        self._tmp = tempfile.TemporaryDirectory(prefix="slimline-sens-")
        path = Path(self._tmp.name) / "model.onnx"
        self.model.eval()
        torch.onnx.export(
            self.model,
            (self.x[:1],),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=choose_opset(),
            keep_initializers_as_inputs=True,
            do_constant_folding=False,
            dynamo=False,
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # kind to a shared CPU
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in sess.get_inputs()}
        self.input_name = sess.get_inputs()[0].name
        with torch.no_grad():
            ref = self.model(self.x[:4]).numpy()
        got = sess.run(None, {self.input_name: self.x[:4].numpy()})[0]
        if not np.allclose(ref, got, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(ref).max()))):
            raise ModelError("ONNX Runtime disagrees with PyTorch on this model")
        self.session, self.backend = sess, "onnxruntime"

    def logits(self, changed: Iterable[str] = ()) -> torch.Tensor:
        changed = list(changed)
        outs = []
        use_ort = self.session is not None and all(c in self.inputs for c in changed)
        feeds = {c: self.params[c].detach().numpy() for c in changed} if use_ort else {}
        for i in range(0, len(self.x), self.batch_size):
            xb = self.x[i : i + self.batch_size]
            if use_ort:
                outs.append(torch.from_numpy(self.session.run(None, {self.input_name: xb.numpy(), **feeds})[0]))
            else:
                with torch.inference_mode():
                    outs.append(self.model.eval()(xb).float())
        return torch.cat(outs)

    def __call__(self, changed: Iterable[str] = ()) -> dict[str, float]:
        return scores(self.logits(changed), self.y, self.reference)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _dead(s: dict[str, float], num_classes: int) -> bool:
    """At (or below) chance: pruning more cannot tell anything new."""
    return s["top1"] <= 100.0 / num_classes + 1e-9


# --------------------------------------------------------------------------- scans


def sensitivity(
    model: nn.Module,
    data: ArrayDataset,
    kind: Kind = "weight",
    ratios: Iterable[float] = DEFAULT_RATIOS,
    samples: int | None = 256,
    layers: list[str] | None = None,
    protect: list[str] | None = None,
    exclude: list[str] | None = None,
    protect_first_last: bool = True,
    backend: str = "auto",
    batch_size: int = 256,
    early_stop: bool = True,
    seed: int = 0,
    description: str | None = None,
    adaptive_tol: float | None = None,
    metric: str = "loss",
) -> dict[str, Any]:
    """Per-unit curves of top1/loss/kl against the pruning ratio (or one point per block).

    ``layers`` restricts the scan to units whose name matches (names or globs); ``samples`` is the
    size of the seeded slice of ``data`` used. ``early_stop`` stops a unit's curve once top-1 is at
    chance (the remaining points repeat that measurement, marked ``"repeated": true``). With
    ``adaptive_tol`` only the points where ``metric`` still moves by more than that are measured
    (bisection from the largest ratio); the rest are interpolated and marked ``"interpolated": true``.
    The model is left as it was. Returns a JSON-ready dict.
    """
    if kind not in KINDS:
        raise ModelError(f"unknown sensitivity kind {kind!r}; choose one of {', '.join(KINDS)}")
    ratios = sorted({round(float(r), 6) for r in ratios})
    if not ratios or ratios[0] <= 0 or ratios[-1] >= 1:
        raise ModelError(f"sensitivity ratios must lie strictly between 0 and 1, got {ratios}")
    t0 = time.perf_counter()
    ds = data.sample(samples, seed=seed)
    x = torch.from_numpy(ds.inputs())
    y = torch.from_numpy(ds.y)
    model.eval()
    num_classes = int(data.spec.num_classes)
    example = example_input(tuple(x.shape[1:]), batch=2, seed=seed)
    ev = Evaluator(model, x, y, "torch" if kind == "block" else backend, batch_size)
    result: dict[str, Any] = {
        "kind": kind,
        "ratios": ratios if kind != "block" else [],
        "samples": len(ds),
        "data": data.spec.name,
        "backend": ev.backend,
        "baseline": ev.baseline,
        "units": {},
        "skipped": [],
        "adaptive_tol": adaptive_tol,
    }
    try:
        if kind == "weight":
            _scan_weights(
                model, ev, ratios, layers, exclude, num_classes, early_stop, adaptive_tol, metric, result, description
            )
        elif kind == "channel":
            _scan_channels(
                model,
                ev,
                example,
                ratios,
                layers,
                protect,
                exclude,
                protect_first_last,
                num_classes,
                early_stop,
                adaptive_tol,
                metric,
                result,
                description,
            )
        else:
            _scan_blocks(model, ev, example, layers, protect, result, description)
    finally:
        ev.close()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["measurements"] = sum(
        sum(1 for p in e["curve"] if not p.get("interpolated") and not p.get("repeated")) if "curve" in e else 1
        for e in result["units"].values()
    )
    return result


def _curve(
    ratios: list[float],
    measure: Callable[[float], dict[str, Any]],
    base: dict[str, float],
    num_classes: int,
    early_stop: bool,
    adaptive_tol: float | None,
    metric: str,
    extra: Callable[[float], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One unit's curve. With ``adaptive_tol`` the largest ratio is measured first and an interval is
    split (bisection) only while its ends differ by more than ``adaptive_tol`` in ``metric``; the
    points in between are interpolated and marked ``"interpolated": true``."""
    extra = extra or (lambda r: {})
    if adaptive_tol is None:
        curve: list[dict[str, Any]] = []
        for r in ratios:
            if early_stop and curve and _dead(curve[-1], num_classes):
                curve.append({**curve[-1], "ratio": r, **extra(r), "repeated": True})
            else:
                curve.append({"ratio": r, **extra(r), **measure(r)})
        return curve
    pts: dict[int, dict[str, Any]] = {}
    last = len(ratios) - 1
    pts[last] = {"ratio": ratios[last], **extra(ratios[last]), **measure(ratios[last])}
    stack = [(-1, last)]
    while stack:
        i, j = stack.pop()
        vi = base[metric] if i < 0 else pts[i][metric]
        if j - i <= 1 or abs(pts[j][metric] - vi) <= adaptive_tol:
            continue
        m = (i + j) // 2
        pts[m] = {"ratio": ratios[m], **extra(ratios[m]), **measure(ratios[m])}
        stack += [(i, m), (m, j)]
    known = sorted(pts)
    xs = [0.0] + [ratios[i] for i in known]
    out = []
    for i, r in enumerate(ratios):
        if i in pts:
            out.append(pts[i])
        else:
            vals = {k: float(np.interp(r, xs, [base[k]] + [pts[n][k] for n in known])) for k in ("top1", "loss", "kl")}
            out.append({"ratio": r, **extra(r), **vals, "interpolated": True})
    return out


def _select(names: list[str], layers: list[str] | None) -> list[str]:
    if not layers:
        return names
    chosen = set(match_names(names, layers, "unit"))
    return [n for n in names if n in chosen]


def _scan_weights(
    model: nn.Module,
    ev: Evaluator,
    ratios: list[float],
    layers: list[str] | None,
    exclude: list[str] | None,
    num_classes: int,
    early_stop: bool,
    adaptive_tol: float | None,
    metric: str,
    result: dict[str, Any],
    description: str | None,
) -> None:
    names = _select(prunable_layers(model), layers)
    skip = set(match_names(prunable_layers(model), exclude, "layer to exclude")) if exclude else set()
    names = [n for n in names if n not in skip]
    with make_progress() as bar:
        task = bar.add_task(description or "sensitivity (weights)", total=len(names) * len(ratios), info="")
        for name in names:
            w = cast(torch.Tensor, model.get_submodule(name).weight)
            orig = w.data.clone()
            order = torch.argsort(orig.abs().flatten(), stable=True)

            def measure(
                r: float, name: str = name, w: torch.Tensor = w, orig: torch.Tensor = orig, order: torch.Tensor = order
            ) -> dict:
                flat = orig.flatten().clone()
                flat[order[: int(round(r * orig.numel()))]] = 0
                w.data.copy_(flat.view_as(orig))
                bar.update(task, advance=1, info=name)
                return ev([f"{name}.weight"])

            try:
                curve = _curve(ratios, measure, ev.baseline, num_classes, early_stop, adaptive_tol, metric)
            finally:
                w.data.copy_(orig)
            bar.update(task, completed=(names.index(name) + 1) * len(ratios))
            result["units"][name] = {"weights": int(orig.numel()), "curve": curve}


def _scan_channels(
    model: nn.Module,
    ev: Evaluator,
    example: torch.Tensor,
    ratios: list[float],
    layers: list[str] | None,
    protect: list[str] | None,
    exclude: list[str] | None,
    protect_first_last: bool,
    num_classes: int,
    early_stop: bool,
    adaptive_tol: float | None,
    metric: str,
    result: dict[str, Any],
    description: str | None,
) -> None:
    scan = scan_units(model, example, protect, exclude, protect_first_last)
    result["skipped"] = scan.skipped
    dg = build_graph(model, example, [model.get_submodule(n) for n in scan.excluded])
    units = [u for u in scan.units if u.name in set(_select([u.name for u in scan.units], layers))]
    scorer = make_importance("l1")
    with make_progress() as bar:
        task = bar.add_task(description or "sensitivity (channels)", total=len(units) * len(ratios), info="")
        for u in units:
            m = model.get_submodule(u.name)
            imp = scorer(pruning_group(dg, m, list(range(u.channels))))
            if imp is None or len(imp) != u.channels:
                imp = _weight_l1(m)
            order = torch.argsort(imp.float(), stable=True).tolist()
            changed = [f"{lay}.{p}" for lay in u.out_layers for p in ("weight", "bias") if f"{lay}.{p}" in ev.params]

            def removed(r: float, n: int = u.channels) -> dict[str, Any]:
                return {"channels_removed": min(n - 1, max(1, int(round(r * n))))}

            def measure(r: float, u: Any = u, order: list[int] = order, changed: list[str] = changed) -> dict:
                with masked(model, dg, {u.name: sorted(order[: removed(r, u.channels)["channels_removed"]])}):
                    out = ev(changed)
                bar.update(task, advance=1, info=u.name)
                return out

            curve = _curve(ratios, measure, ev.baseline, num_classes, early_stop, adaptive_tol, metric, removed)
            bar.update(task, completed=(units.index(u) + 1) * len(ratios))
            result["units"][u.name] = {"channels": u.channels, "curve": curve}


def _scan_blocks(
    model: nn.Module,
    ev: Evaluator,
    example: torch.Tensor,
    layers: list[str] | None,
    protect: list[str] | None,
    result: dict[str, Any],
    description: str | None,
) -> None:
    blocks = find_blocks(model, example, protect)
    if not blocks:
        raise ModelError("the model has no removable residual block (same input and output shape, with a skip path)")
    chosen = set(_select([b.name for b in blocks], layers))
    blocks = [b for b in blocks if b.name in chosen]
    with make_progress() as bar:
        task = bar.add_task(description or "sensitivity (blocks)", total=len(blocks), info="")
        for b in blocks:
            with BlockBypass(model, b.name):
                s = ev()
            result["units"][b.name] = {"params": b.params, "macs": b.macs, **s}
            bar.update(task, advance=1, info=b.name)


# --------------------------------------------------------------------------- reading curves


def drop_at(entry: dict[str, Any], ratio: float, metric: str, baseline: dict[str, float]) -> float:
    """The metric's worsening at ``ratio`` (interpolated, made non-decreasing; 0 at ratio 0).

    ``top1`` drops in points, ``loss`` and ``kl`` rise; either way a larger number is worse.
    """
    curve = entry.get("curve")
    if curve is None:  # a block: one point
        return _worse(entry[metric], baseline[metric], metric)
    xs = [0.0] + [c["ratio"] for c in curve]
    ys = [0.0] + [_worse(c[metric], baseline[metric], metric) for c in curve]
    ys = list(np.maximum.accumulate(np.maximum(ys, 0.0)))
    if ratio >= xs[-1]:
        # beyond the last measured ratio: extend linearly to "everything removed" at 1.0
        return float(ys[-1] + (ys[-1] - ys[-2]) * (ratio - xs[-1]) / max(xs[-1] - xs[-2], 1e-9))
    return float(np.interp(ratio, xs, ys))


def _worse(value: float, base: float, metric: str) -> float:
    return base - value if metric == "top1" else value - base


# --------------------------------------------------------------------------- plotting


def plot_sensitivity(result: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG: curves of top-1 and loss against the ratio (or bars per block)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimline.fileio import atomic_path

    units = result["units"]
    base = result["baseline"]
    title = title or f"{result['kind']} sensitivity ({result['samples']} samples of {result.get('data', 'data')})"
    if result["kind"] == "block":
        names = list(units)
        fig, axes = plt.subplots(1, 2, figsize=(11, max(3.0, 0.28 * len(names) + 1.5)), sharey=True)
        yy = np.arange(len(names))
        axes[0].barh(yy, [units[n]["top1"] for n in names], color="tab:blue")
        axes[0].axvline(base["top1"], color="k", lw=0.8, ls="--", label="unpruned")
        low = min([units[n]["top1"] for n in names] + [base["top1"]])
        axes[0].set_xlim(max(0.0, low - 0.1 * (100 - low) - 1), 100.5)
        axes[0].set_xlabel("top-1 % with the block removed")
        axes[1].barh(yy, [units[n]["loss"] - base["loss"] for n in names], color="tab:red")
        axes[1].set_xlabel("loss increase with the block removed")
        axes[0].set_yticks(yy, names, fontsize=7)
        axes[0].invert_yaxis()
        axes[0].legend(fontsize=7)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        cmap = plt.get_cmap("viridis")
        names = list(units)
        for i, n in enumerate(names):
            c = units[n]["curve"]
            rs = [0.0] + [p["ratio"] for p in c]
            color = cmap(i / max(1, len(names) - 1))
            label = n if len(names) <= 12 else None
            axes[0].plot(rs, [base["top1"]] + [p["top1"] for p in c], color=color, lw=1, label=label)
            axes[1].plot(rs, [base["loss"]] + [p["loss"] for p in c], color=color, lw=1, label=label)
        axes[0].set_ylabel("top-1 %")
        axes[1].set_ylabel("cross-entropy loss")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("fraction pruned" + (" (weights)" if result["kind"] == "weight" else " (channels)"))
            ax.grid(alpha=0.3)
        if len(names) <= 12:
            axes[0].legend(fontsize=7)
        elif names:
            sm = plt.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, len(names) - 1))
            fig.colorbar(sm, ax=axes, label="layer index (forward order: early = dark)")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
