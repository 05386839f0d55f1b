"""Depth pruning: remove whole residual blocks, replacing each by ``nn.Identity``.

A block is removable when its input and output have the same shape, it runs once per forward
pass, and it has a skip path: with all of its Conv/Linear weights zeroed its output still depends
on its input (a plain conv stack would then output a constant). Only the smallest such modules
count (a ResNet stage made of identity blocks is not itself offered). Fewer layers buy real speed
on every runtime, where thinner layers often do not.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimline.errors import ModelError
from slimline.prune.common import describe_layer, failing_layer, replace_module

_WEIGHTED = (nn.Conv2d, nn.Linear)


@dataclass
class Block:
    name: str
    params: int
    macs: int
    input_shape: tuple[int, ...]  # without the batch dimension
    layers: list[str]  # Conv/Linear/BatchNorm layers inside, full names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has_skip_path(block: nn.Module, x: torch.Tensor) -> bool:
    twin = copy.deepcopy(block).eval()
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, _WEIGHTED):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
        g = torch.Generator().manual_seed(1)
        x2 = x.abs() * torch.rand(x.shape, generator=g) + 0.1
        y1, y2 = twin(x.abs() + 0.1), twin(x2)
    if not isinstance(y1, torch.Tensor):
        return False
    scale = max(float(y1.abs().max()), float(y2.abs().max()), 1e-6)
    return float((y1 - y2).abs().max()) > 1e-4 * scale


def find_blocks(model: nn.Module, example: torch.Tensor, protect: list[str] | None = None) -> list[Block]:
    """The removable residual blocks of ``model`` in forward order (see the module docstring).

    Blocks containing a layer named in ``protect`` (full names) are not offered.
    """
    names = {m: n for n, m in model.named_modules() if n}
    seen: dict[str, dict[str, Any]] = {}
    order: list[str] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        n = names[mod]
        rec = seen.setdefault(n, {"calls": 0})
        rec["calls"] += 1
        if n not in order:
            order.append(n)
        if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            rec["x"] = args[0].detach().clone()
            rec["same"] = tuple(args[0].shape) == tuple(out.shape)
        else:
            rec["same"] = False

    hooks = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            try:
                model.eval()(example)
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"the model fails in {describe_layer(model, failing_layer(model, e))}: {e}") from e
    finally:
        for h in hooks:
            h.remove()
    protected = set(protect or [])
    cands: list[str] = []
    for n in order:
        rec = seen[n]
        mod = model.get_submodule(n)
        if rec["calls"] != 1 or not rec.get("same") or isinstance(mod, _WEIGHTED):
            continue
        if not any(isinstance(m, _WEIGHTED) for m in mod.modules()):
            continue
        if any(p == n or p.startswith(n + ".") for p in protected):
            continue
        if _has_skip_path(mod, rec["x"]):
            cands.append(n)
    minimal = [c for c in cands if not any(o != c and o.startswith(c + ".") for o in cands)]
    blocks = []
    for n in minimal:
        mod = model.get_submodule(n)
        x = seen[n]["x"][:1]
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            mod.eval()(x)
        layers = [
            f"{n}.{sub}"
            for sub, m in mod.named_modules()
            if sub and isinstance(m, (*_WEIGHTED, nn.BatchNorm2d, nn.BatchNorm1d))
        ]
        blocks.append(
            Block(
                n, sum(p.numel() for p in mod.parameters()), int(fc.get_total_flops() // 2), tuple(x.shape[1:]), layers
            )
        )
    return blocks


def remove_blocks(model: nn.Module, names: list[str]) -> list[str]:
    """Replace each named block by ``nn.Identity`` in place; returns the names removed."""
    for n in names:
        try:
            model.get_submodule(n)
        except AttributeError:
            raise ModelError(f"no block {n!r} in this model") from None
        replace_module(model, n, nn.Identity())
    return list(names)


class BlockBypass:
    """Swap a block for ``nn.Identity`` inside a ``with`` and put it back after (for sensitivity scans)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.model, self.name = model, name
        self.old: nn.Module | None = None

    def __enter__(self) -> BlockBypass:
        self.old = replace_module(self.model, self.name, nn.Identity())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.old is not None
        replace_module(self.model, self.name, self.old)
