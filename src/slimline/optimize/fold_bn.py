"""Exact BatchNorm folding into the preceding Conv / Linear layer, keeping the module tree.

``y = BN(conv(x))`` in eval mode is ``conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
``s = gamma / sqrt(var + eps)`` per output channel (computed in float64, stored in the layer's dtype).
The BatchNorm becomes ``nn.Identity`` and the conv gains a bias, so the folded model is still the same
Python class: ``save_torch`` records the new constructor arguments (``bias=True``, ``Identity``) and
``load_torch`` rebuilds it.

Pairs are found with ``torch.fx`` (the BN's input must be the layer's output and nothing else may use
that output; each module must be called once). Models that torch.fx cannot trace fall back to matching
tensors seen by forward hooks on an example input, which is then verified numerically.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import fx, nn

from slimline.errors import ModelError

_BN_FOR: dict[type[nn.Module], tuple[type[nn.Module], ...]] = {
    nn.Conv1d: (nn.BatchNorm1d,),
    nn.Conv2d: (nn.BatchNorm2d,),
    nn.Conv3d: (nn.BatchNorm3d,),
    nn.Linear: (nn.BatchNorm1d,),
}
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class FoldReport:
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (layer path, BatchNorm path)
    skipped: list[dict[str, str]] = field(default_factory=list)  # BatchNorms left alone, with the reason
    modules_before: dict[str, int] = field(default_factory=dict)
    modules_after: dict[str, int] = field(default_factory=dict)
    method: str = "fx"  # how pairs were found: "fx" or "hooks"
    max_abs_diff: float | None = None  # against the unfolded model, on the check input

    def to_dict(self) -> dict[str, Any]:
        return {
            "folded": len(self.pairs),
            "pairs": [{"layer": a, "batchnorm": b} for a, b in self.pairs],
            "skipped": self.skipped,
            "modules_before": self.modules_before,
            "modules_after": self.modules_after,
            "method": self.method,
            "max_abs_diff": self.max_abs_diff,
        }


def module_counts(model: nn.Module) -> dict[str, int]:
    """Leaf modules by type name, plus ``total`` (the leaf count) and ``parameters``."""
    c = Counter(type(m).__name__ for _, m in model.named_modules() if not list(m.children()))
    out = dict(sorted(c.items()))
    out["total"] = sum(c.values())
    out["parameters"] = sum(p.numel() for p in model.parameters())
    return out


def _compatible(layer: nn.Module, bn: nn.Module) -> str | None:
    """None when ``bn`` can be folded into ``layer``, else why not."""
    allowed = _BN_FOR.get(type(layer))
    if allowed is None or not isinstance(bn, allowed):
        return f"{type(bn).__name__} after {type(layer).__name__} is not a foldable pair"
    out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out_features:
        return f"{bn.num_features} BatchNorm channels but the layer has {out_features} outputs"
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return "BatchNorm without running statistics normalises with batch statistics at inference"
    return None


def fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into ``layer`` in place (``layer`` gains a bias if it had none)."""
    weight = cast(torch.Tensor, layer.weight)
    bias = cast(torch.Tensor | None, layer.bias)
    w = weight.detach()
    dtype = w.dtype
    w64 = w.double()
    n = w.shape[0]
    b64 = bias.detach().double() if bias is not None else torch.zeros(n, dtype=torch.float64)
    mean, var = cast(torch.Tensor, bn.running_mean).double(), cast(torch.Tensor, bn.running_var).double()
    bn_weight, bn_bias = cast(torch.Tensor | None, bn.weight), cast(torch.Tensor | None, bn.bias)
    gamma = bn_weight.detach().double() if bn_weight is not None else torch.ones(n, dtype=torch.float64)
    beta = bn_bias.detach().double() if bn_bias is not None else torch.zeros(n, dtype=torch.float64)
    scale = gamma / torch.sqrt(var + cast(float, bn.eps))
    new_w = (w64 * scale.view(-1, *([1] * (w.dim() - 1)))).to(dtype)
    new_b = ((b64 - mean) * scale + beta).to(dtype)
    with torch.no_grad():
        weight.copy_(new_w)
        if bias is None:
            layer.bias = nn.Parameter(new_b, requires_grad=weight.requires_grad)
        else:
            bias.copy_(new_b)


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _pairs_fx(model: nn.Module) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    gm = fx.symbolic_trace(model)
    mods = dict(model.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    pairs: list[tuple[str, str]] = []
    skipped: list[dict[str, str]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), BATCHNORMS):
            continue
        bn_name = str(node.target)
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or type(mods.get(src.target)) not in _BN_FOR:
            skipped.append({"batchnorm": bn_name, "reason": "its input is not the output of a Conv or Linear layer"})
            continue
        layer_name = str(src.target)
        why = _compatible(mods[layer_name], mods[bn_name])
        if why is None and len(src.users) != 1:
            why = f"the output of {layer_name} is also used elsewhere"
        if why is None and (calls[layer_name] != 1 or calls[bn_name] != 1):
            why = "the layer or the BatchNorm is called more than once (shared weights)"
        if why:
            skipped.append({"batchnorm": bn_name, "reason": why})
        else:
            pairs.append((layer_name, bn_name))
    return pairs, skipped


def _pairs_hooks(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """Match a BatchNorm whose input tensor is exactly some layer's output tensor (same object)."""
    produced: dict[int, str] = {}
    seen: list[tuple[str, int]] = []
    keep: list[torch.Tensor] = []  # keep tensors alive so that ids stay unique
    calls: Counter[str] = Counter()
    handles = []
    for name, m in model.named_modules():
        if type(m) in _BN_FOR or isinstance(m, BATCHNORMS):

            def hook(mod: nn.Module, inp: tuple[Any, ...], out: Any, name: str = name) -> None:
                calls[name] += 1
                if isinstance(mod, BATCHNORMS) and inp and isinstance(inp[0], torch.Tensor):
                    seen.append((name, id(inp[0])))
                    keep.append(inp[0])
                if isinstance(out, torch.Tensor):
                    produced[id(out)] = name
                    keep.append(out)

            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    mods = dict(model.named_modules())
    pairs: list[tuple[str, str]] = []
    skipped: list[dict[str, str]] = []
    for bn_name, tid in seen:
        layer_name = produced.get(tid)
        if not layer_name:
            skipped.append({"batchnorm": bn_name, "reason": "its input is not the output of a Conv or Linear layer"})
            continue
        why = _compatible(mods[layer_name], mods[bn_name])
        if why is None and (calls[layer_name] != 1 or calls[bn_name] != 1):
            why = "the layer or the BatchNorm is called more than once (shared weights)"
        if why:
            skipped.append({"batchnorm": bn_name, "reason": why})
        else:
            pairs.append((layer_name, bn_name))
    return pairs, skipped


def fold_batchnorm(
    model: nn.Module,
    example: torch.Tensor | None = None,
    tolerance: float | None = None,
) -> tuple[nn.Module, FoldReport]:
    """Fold every foldable BatchNorm of ``model`` (in place, eval mode); returns the model and a report.

    With ``example`` the folded model is compared with the original on it (``report.max_abs_diff``);
    with ``tolerance`` too, a larger difference raises ``ModelError``.
    """
    model.eval()
    report = FoldReport(modules_before=module_counts(model))
    reference = None
    if example is not None:
        with torch.no_grad():
            reference = model(example).detach().clone()
    try:
        pairs, skipped = _pairs_fx(model)
    except Exception as e:  # noqa: BLE001 - torch.fx raises many kinds on untraceable code
        if example is None:
            raise ModelError(
                f"torch.fx cannot trace {type(model).__name__} "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}) "
                "and no example input was given to find Conv+BatchNorm pairs by running it"
            ) from e
        pairs, skipped = _pairs_hooks(model, example)
        report.method = "hooks"
        if tolerance is None:  # hooks cannot see other users of a layer's output: always verify
            tolerance = 1e-4 * max(1.0, float(reference.abs().max())) if reference is not None else None
    mods = dict(model.named_modules())
    for layer_name, bn_name in pairs:
        fold_pair(mods[layer_name], mods[bn_name])
        set_module(model, bn_name, nn.Identity())
    report.pairs, report.skipped = pairs, skipped
    report.modules_after = module_counts(model)
    if reference is not None:
        with torch.no_grad():
            got = model(example)
        report.max_abs_diff = float((got.double() - reference.double()).abs().max())
        if tolerance is not None and not report.max_abs_diff <= tolerance:
            raise ModelError(
                f"BatchNorm folding changed the outputs by up to {report.max_abs_diff:.3g} (> {tolerance:g}); "
                "a folded BatchNorm was not applied to that layer's output alone. Report this model's structure"
            )
    return model, report
