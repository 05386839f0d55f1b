"""Structured (channel) pruning with Torch-Pruning's dependency graph.

A *unit* is one Torch-Pruning group: the output channels of a root Conv/Linear together with every
coupled layer (its BatchNorm, the next layer's input channels, other branches joined by an add or
a concat). Removing channels of a unit keeps the model consistent and makes its weight tensors
genuinely smaller.

Every unit is checked before it is offered for pruning: pruning a few of its channels in a copy
must give exactly the same outputs as zeroing those channels (their weights and BatchNorm scale and
shift) in the original. Groups that Torch-Pruning follows wrongly, such as a residual stream fed
through a channel-padding shortcut (option-A CIFAR ResNets), fail that check and are left alone
with a reason in the record, instead of producing a broken or silently different model.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from slimline.errors import ModelError
from slimline.prune.common import describe_layer, failing_layer, match_names

Importance = Literal["l1", "l2", "bn", "taylor"]
IMPORTANCES: tuple[str, ...] = ("l1", "l2", "bn", "taylor")
ROOT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
_MASKABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)


def _tp() -> Any:
    try:
        import torch_pruning as tp
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ModelError("channel pruning needs torch-pruning: pip install torch-pruning") from e
    return tp


@dataclass
class ChannelUnit:
    """One prunable group, named by its root layer."""

    name: str
    channels: int
    out_layers: dict[str, int] = field(default_factory=dict)  # layer -> channels of it in the group
    in_layers: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UnitScan:
    units: list[ChannelUnit]
    skipped: list[dict[str, str]]  # {"unit": root layer, "reason": ...}
    protected: list[str]
    excluded: list[str]
    first_layer: str | None
    last_layer: str | None

    def unit(self, name: str) -> ChannelUnit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "units": {u.name: u.channels for u in self.units},
            "skipped": self.skipped,
            "protected": self.protected,
            "excluded": self.excluded,
            "first_layer": self.first_layer,
            "last_layer": self.last_layer,
        }


# --------------------------------------------------------------------------- the graph


def execution_order(
    model: nn.Module, example: torch.Tensor, types: tuple[type[nn.Module], ...] = ROOT_TYPES
) -> list[str]:
    """Names of the ``types`` layers in the order the forward pass runs them."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: order.append(n))
        for n, m in model.named_modules()
        if n and isinstance(m, types)
    ]
    try:
        with torch.no_grad():
            try:
                model.eval()(example)
            except Exception as e:  # noqa: BLE001 - any failure of the user's forward
                raise ModelError(
                    f"the model fails on an input of shape {tuple(example.shape)} in "
                    f"{describe_layer(model, failing_layer(model, e))}: {e}"
                ) from e
    finally:
        for h in hooks:
            h.remove()
    return order


def build_graph(model: nn.Module, example: torch.Tensor, exclude_modules: list[nn.Module] | None = None) -> Any:
    """Torch-Pruning's dependency graph of ``model``; a failure names the layer it happened in."""
    tp = _tp()
    model.eval()
    before = {m: set(m._forward_hooks) for m in model.modules()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, ignored_layers=list(exclude_modules or []), verbose=False
            )
        except Exception as e:  # noqa: BLE001 - tracing raises many kinds
            for m, keys in before.items():  # a failed trace leaves Torch-Pruning's hooks behind
                for k in set(m._forward_hooks) - keys:
                    del m._forward_hooks[k]
            where = failing_layer(model, e)
            hint = f"Exclude it (exclude: [{where}]) " if where else "Exclude the layer that fails "
            raise ModelError(
                f"Torch-Pruning cannot trace {describe_layer(model, where)}: {type(e).__name__}: {e}. "
                f"{hint}(its channels then stay as they are), or rewrite it with standard layers"
            ) from e


def _plain(idxs: Any) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in idxs]


def pruning_group(dg: Any, module: nn.Module, idxs: list[int]) -> Any:
    """The group that removing output channels ``idxs`` of ``module`` touches, indices mapped to every layer."""
    return dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, idxs)


def _group_layers(dg: Any, group: Any, names: dict[nn.Module, str]) -> tuple[dict[str, int], dict[str, int]]:
    outs: dict[str, int] = {}
    ins: dict[str, int] = {}
    for dep, idxs in group:
        mod = dep.target.module
        if not isinstance(mod, nn.Module) or mod not in names:
            continue
        if dg.is_out_channel_pruning_fn(dep.handler):
            outs[names[mod]] = len(idxs)
        elif dg.is_in_channel_pruning_fn(dep.handler):
            ins[names[mod]] = len(idxs)
    return outs, ins


def _width(m: nn.Module, side: str) -> int | None:
    if side == "out":
        return getattr(m, "out_channels", None) or getattr(m, "out_features", None) or getattr(m, "num_features", None)
    return getattr(m, "in_channels", None) or getattr(m, "in_features", None) or getattr(m, "num_features", None)


def _consistent(model: nn.Module, unit: ChannelUnit) -> bool:
    """Every layer of the unit has exactly the unit's channel count (no index mapping involved)."""
    for side, layers in (("out", unit.out_layers), ("in", unit.in_layers)):
        for name, k in layers.items():
            if _width(model.get_submodule(name), side) != k or k != unit.channels:
                return False
    return True


# --------------------------------------------------------------------------- masking


@contextlib.contextmanager
def masked(model: nn.Module, dg: Any, plan: dict[str, list[int]]) -> Iterator[None]:
    """Zero the given output channels of each unit (root layer -> channel indices) and restore after.

    Zeroing a channel's weights, bias, and its BatchNorm scale and shift makes it exactly zero
    downstream, which is what removing it does; the graph maps the indices to every coupled layer.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for root, idxs in plan.items():
                if not idxs:
                    continue
                group = pruning_group(dg, model.get_submodule(root), list(idxs))
                for dep, didxs in group:
                    mod = dep.target.module
                    if not isinstance(mod, _MASKABLE) or not dg.is_out_channel_pruning_fn(dep.handler):
                        continue
                    rows = torch.tensor(_plain(didxs), dtype=torch.long)
                    for p in (getattr(mod, "weight", None), getattr(mod, "bias", None)):
                        if p is not None:
                            saved.append((p.data, rows, p.data[rows].clone()))
                            p.data[rows] = 0
        yield
    finally:
        with torch.no_grad():
            for data, rows, old in reversed(saved):
                data[rows] = old


# --------------------------------------------------------------------------- checking


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(x)
    if isinstance(out, tuple | list):
        out = out[0]
    return out


def _same(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    if a.shape != b.shape:
        return False
    scale = max(float(a.abs().max()), 1e-6)
    return float((a - b).abs().max()) <= rtol * scale + 1e-6


def _prune_plan(model: nn.Module, dg: Any, plan: dict[str, list[int]]) -> None:
    for root, idxs in plan.items():
        if not idxs:
            continue
        group = pruning_group(dg, model.get_submodule(root), list(idxs))
        if not dg.check_pruning_group(group):
            raise ModelError(f"cannot remove {len(idxs)} channels from {root!r}: a coupled layer would be left empty")
        group.prune()


def check_pruning(
    model: nn.Module, dg: Any, example: torch.Tensor, plan: dict[str, list[int]], exclude: list[str] | None = None
) -> str | None:
    """None when pruning ``plan`` in a copy gives the outputs of zeroing it in ``model``; else why not."""
    with masked(model, dg, plan):
        ref = _outputs(model, example)
    twin = copy.deepcopy(model)
    try:
        twin_dg = build_graph(twin, example, [twin.get_submodule(n) for n in exclude or []])
        _prune_plan(twin, twin_dg, plan)
    except Exception as e:  # noqa: BLE001
        return f"Torch-Pruning cannot prune it ({type(e).__name__}: {e})"
    try:
        got = _outputs(twin, example)
    except Exception as e:  # noqa: BLE001
        where = failing_layer(twin, e)
        return f"the pruned model fails in {describe_layer(twin, where)} ({type(e).__name__}: {e})"
    if ref.shape != got.shape:
        return f"pruning it changes the model's output shape {tuple(ref.shape)} -> {tuple(got.shape)}"
    if not _same(ref, got):
        return (
            "pruning it changes the outputs beyond removing the channels: an operation Torch-Pruning "
            "cannot follow (e.g. a channel-padding shortcut) or a normalisation across channels"
        )
    return None


# --------------------------------------------------------------------------- finding units


def _module_names(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules() if n}


def scan_units(
    model: nn.Module,
    example: torch.Tensor,
    protect: list[str] | None = None,
    exclude: list[str] | None = None,
    protect_first_last: bool = True,
    verify: bool = True,
) -> UnitScan:
    """The channel units of ``model`` that can be pruned safely.

    ``protect``: layers whose output channels stay (the first layer and the classifier too unless
    ``protect_first_last`` is False). ``exclude``: layers left entirely alone and not traced by
    Torch-Pruning (for layers it cannot trace). ``verify`` checks each unit as described in the
    module docstring. Names may be globs (``layer3.*``).
    """
    all_names = [n for n, _ in model.named_modules() if n]
    excluded = match_names(all_names, exclude, "layer to exclude")
    order = execution_order(model, example)
    first, last = (order[0], order[-1]) if order else (None, None)
    protected = match_names(all_names, protect, "layer to protect")
    if protect_first_last:
        protected = [n for n in (first, last) if n] + [n for n in protected if n not in (first, last)]
    excl_mods = [model.get_submodule(n) for n in excluded]
    dg = build_graph(model, example, excl_mods)
    names = _module_names(model)
    excl_set = {n for e in excluded for n in all_names if n == e or n.startswith(e + ".")}
    prot_set = {n for p in protected for n in all_names if n == p or n.startswith(p + ".")}
    units: list[ChannelUnit] = []
    skipped: list[dict[str, str]] = []
    for group in dg.get_all_groups(root_module_types=ROOT_TYPES):
        root = group[0][0].target.module
        rname = names.get(root, "?")
        outs, ins = _group_layers(dg, group, names)
        touched_ex = sorted((set(outs) | set(ins)) & excl_set)
        hit_prot = sorted(set(outs) & prot_set)
        n = int(dg.get_out_channels(root) or 0)
        # name the unit by its earliest-running layer among those pruned alike (the stem, not the last block)
        same = [lay for lay in order if outs.get(lay) == n and _width(model.get_submodule(lay), "out") == n]
        if same and same[0] != rname:
            rname = same[0]
        if hit_prot:
            skipped.append({"unit": rname, "reason": f"protected: {', '.join(hit_prot[:3])}"})
        elif touched_ex:
            skipped.append({"unit": rname, "reason": f"touches excluded layer {touched_ex[0]}"})
        elif n < 2:
            skipped.append({"unit": rname, "reason": "a single channel"})
        else:
            units.append(ChannelUnit(rname, n, outs, ins))
    if verify and units:
        bad: dict[str, str] = {}
        for u in units:
            if not _consistent(model, u):
                why = check_pruning(model, dg, example, {u.name: [u.channels // 2]}, excluded)
                if why:
                    bad[u.name] = why
        rest = [u for u in units if u.name not in bad]
        if rest and check_pruning(model, dg, example, {u.name: [u.channels // 2] for u in rest}, excluded):
            for u in rest:
                why = check_pruning(model, dg, example, {u.name: [u.channels // 2]}, excluded)
                if why:
                    bad[u.name] = why
        skipped += [{"unit": k, "reason": v} for k, v in bad.items()]
        units = [u for u in units if u.name not in bad]
    return UnitScan(units, skipped, protected, excluded, first, last)


# --------------------------------------------------------------------------- pruning


def make_importance(kind: str) -> Any:
    tp = _tp()
    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    if kind == "bn":
        return tp.importance.BNScaleImportance(normalizer=None)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance(normalizer=None)
    raise ModelError(f"unknown importance {kind!r}; choose one of {', '.join(IMPORTANCES)}")


def accumulate_gradients(model: nn.Module, batches: Any, max_batches: int = 4) -> int:
    """Sum the cross-entropy gradients of a few batches into ``.grad`` (for Taylor importance)."""
    model.zero_grad(set_to_none=True)
    model.eval()
    n = 0
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()
        n += 1
        if n >= max_batches:
            break
    if n == 0:
        raise ModelError("Taylor importance needs training data to compute gradients")
    return n


def _weight_l1(module: nn.Module) -> torch.Tensor:
    return cast(torch.Tensor, module.weight).detach().abs().flatten(1).sum(1)


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    keep: dict[str, int],
    importance: str = "l1",
    exclude: list[str] | None = None,
    grad_batches: Any = None,
    verify: bool = True,
) -> dict[str, dict[str, int]]:
    """Keep ``keep[unit]`` output channels of each unit (root layer name), in place.

    The least important channels by ``importance`` (group L1/L2 norm of every coupled weight,
    BatchNorm scale, or first-order Taylor on ``grad_batches``) are removed with Torch-Pruning.
    With ``verify`` the pruned model is checked against the masked one (see :func:`check_pruning`).
    Returns ``{unit: {"before": n, "after": k}}``.
    """
    excluded = match_names([n for n, _ in model.named_modules() if n], exclude, "layer to exclude")
    dg = build_graph(model, example, [model.get_submodule(n) for n in excluded])
    scorer = make_importance(importance)
    if importance == "taylor":
        accumulate_gradients(model, grad_batches)
    plan: dict[str, list[int]] = {}
    report: dict[str, dict[str, int]] = {}
    try:
        for name, k in keep.items():
            try:
                m = model.get_submodule(name)
            except AttributeError:
                raise ModelError(f"no layer {name!r} to prune in this model") from None
            n = int(dg.get_out_channels(m))
            k = max(1, min(int(k), n))
            report[name] = {"before": n, "after": k}
            if k >= n:
                continue
            imp = scorer(pruning_group(dg, m, list(range(n))))
            if imp is None or len(imp) != n or not torch.isfinite(imp).all():
                imp = _weight_l1(m)
            order = torch.argsort(imp.float().cpu(), stable=True)
            plan[name] = sorted(order[: n - k].tolist())
    finally:
        if importance == "taylor":
            model.zero_grad(set_to_none=True)
    ref = None
    if verify and plan:
        with masked(model, dg, plan):
            ref = _outputs(model, example)
    _prune_plan(model, dg, plan)
    try:
        got = _outputs(model, example)
    except Exception as e:  # noqa: BLE001
        where = failing_layer(model, e)
        raise ModelError(
            f"the pruned model fails in {describe_layer(model, where)} ({e}); "
            f"exclude that layer (exclude: [{where}]) or protect the layers that feed it"
        ) from e
    if ref is not None and not _same(ref, got):
        raise ModelError(
            "the pruned model does not compute what the original computes without the removed channels: "
            "Torch-Pruning followed some operation wrongly; run the unit scan (verify) and protect the units it flags"
        )
    return report
