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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimline.errors import ModelError
from slimline.prune.common import ModuleStack, describe_layer, match_names

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


def execution_order(model: nn.Module, example: torch.Tensor, types: tuple[type[nn.Module], ...] = ROOT_TYPES) -> list[str]:
    """Names of the ``types`` layers in the order the forward pass runs them."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: order.append(n))
        for n, m in model.named_modules()
        if n and isinstance(m, types)
    ]
    try:
        with torch.no_grad(), ModuleStack(model) as st:
            try:
                model.eval()(example)
            except Exception as e:  # noqa: BLE001 - any failure of the user's forward
                raise ModelError(
                    f"the model fails on an input of shape {tuple(example.shape)} in "
                    f"{describe_layer(model, st.stack[-1] if st.stack else None)}: {e}"
                ) from e
    finally:
        for h in hooks:
            h.remove()
    return order


def build_graph(model: nn.Module, example: torch.Tensor, exclude_modules: list[nn.Module] | None = None) -> Any:
    """Torch-Pruning's dependency graph of ``model``; a failure names the layer it happened in."""
    tp = _tp()
    model.eval()
    with ModuleStack(model) as st, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, ignored_layers=list(exclude_modules or []), verbose=False
            )
        except Exception as e:  # noqa: BLE001 - tracing raises many kinds
            where = st.stack[-1] if st.stack else None
            hint = f"exclude it with exclude: [{where}] " if where else "exclude the layer that fails "
            raise ModelError(
                f"Torch-Pruning cannot trace {describe_layer(model, where)}: {type(e).__name__}: {e}. "
                f"{hint}(its channels then stay as they are), or rewrite it with standard layers"
            ) from e


def _plain(idxs: Any) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in idxs]


def _group(dg: Any, module: nn.Module, idxs: list[int]) -> Any:
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


def _consistent(model: nn.Module, unit: ChannelUnit) -> bool:
    """Every layer of the unit has exactly the unit's channel count (no index mapping involved)."""
    for name, k in unit.out_layers.items():
        m = model.get_submodule(name)
        n = getattr(m, "out_channels", None) or getattr(m, "out_features", None) or getattr(m, "num_features", None)
        if n != k or k != unit.channels:
            return False
    for name, k in unit.in_layers.items():
        m = model.get_submodule(name)
        n = getattr(m, "in_channels", None) or getattr(m, "in_features", None) or getattr(m, "num_features", None)
        if n != k or k != unit.channels:
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
                group = _group(dg, model.get_submodule(root), list(idxs))
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
