"""Allocate pruning across units to reach a global target, spending it where it hurts least.

The cost model counts parameters and MACs of every Conv/Linear/BatchNorm layer as a function of
the kept channels of each unit and of the removed blocks, exactly as ``count_params`` and
``count_macs`` would after pruning (it is checked against them). The allocator starts from the full
model and repeatedly takes the cheapest step, where a step is removing one notch of ``round_to``
channels from a unit or removing a whole block, and cheapest means the least increase of the
sensitivity metric per unit of progress towards the targets still unmet. Targets are fractions
removed: ``params``, ``macs``, ``latency`` (or ``speedup``, converted to a latency fraction); with
a :class:`~slimline.prune.latency.LatencyModel` the latency of each step comes from measurements.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from slimline.errors import ModelError
from slimline.prune.block import Block
from slimline.prune.channel import ChannelUnit
from slimline.prune.sensitivity import drop_at

TARGET_KEYS = ("params", "macs", "latency", "speedup")


class CostFn(Protocol):
    def __call__(self, keep: dict[str, int], removed: set[str]) -> dict[str, float]: ...


@dataclass
class _Layer:
    name: str
    kind: str  # conv | linear | bn
    cin: int
    cout: int
    groups: int
    kernel: int
    bias: bool
    positions: int  # output positions per sample (H*W for a conv)


class CostModel:
    """Parameters and MACs of ``model`` after keeping ``keep[unit]`` channels and removing blocks."""

    def __init__(self, model: nn.Module, example: torch.Tensor, units: list[ChannelUnit], blocks: list[Block]):
        from slimline.models import count_macs, count_params

        self.layers: dict[str, _Layer] = {}
        positions: dict[str, int] = {}
        names = {m: n for n, m in model.named_modules() if n}

        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                per_sample = out.numel() // max(1, out.shape[0])
                ch = out.shape[1] if isinstance(mod, nn.Conv2d) else out.shape[-1]
                positions[names[mod]] = per_sample // max(1, ch)

        hooks = [m.register_forward_hook(hook) for m in names if isinstance(m, nn.Conv2d | nn.Linear)]
        try:
            with torch.no_grad():
                model.eval()(example[:1])
        finally:
            for h in hooks:
                h.remove()
        for n, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                k = int(math.prod(m.kernel_size))
                self.layers[n] = _Layer(
                    n, "conv", m.in_channels, m.out_channels, m.groups, k, m.bias is not None, positions.get(n, 0)
                )
            elif isinstance(m, nn.Linear):
                self.layers[n] = _Layer(
                    n, "linear", m.in_features, m.out_features, 1, 1, m.bias is not None, positions.get(n, 1)
                )
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and m.affine:
                self.layers[n] = _Layer(n, "bn", m.num_features, m.num_features, 1, 1, True, 0)
        self.units = {u.name: u for u in units}
        self.out_of: dict[str, list[tuple[str, float]]] = {}
        self.in_of: dict[str, list[tuple[str, float]]] = {}
        for u in units:
            for lay, k in u.out_layers.items():
                self.out_of.setdefault(lay, []).append((u.name, k / u.channels))
            for lay, k in u.in_layers.items():
                if self.layers.get(lay) is not None and self.layers[lay].kind != "bn":
                    self.in_of.setdefault(lay, []).append((u.name, k / u.channels))
        self.block_layers = {b.name: set(b.layers) for b in blocks}
        self.blocks = {b.name: b for b in blocks}
        full = self._modelled({}, set())
        self.other_params = count_params(model) - full["params"]
        self.other_macs = count_macs(model, tuple(example.shape[1:])) - full["macs"]
        self.block_other = {b.name: b.params - self._block_params(b.name) for b in blocks}

    def _block_params(self, name: str) -> int:
        return int(
            sum(self._layer_cost(self.layers[n], {}, "params") for n in self.block_layers[name] if n in self.layers)
        )

    def _removed(self, lay: str, keep: dict[str, int], table: dict[str, list[tuple[str, float]]]) -> float:
        r = 0.0
        for unit, scale in table.get(lay, ()):
            if unit in keep:
                r += (self.units[unit].channels - keep[unit]) * scale
        return r

    def _layer_cost(self, L: _Layer, keep: dict[str, int], what: str) -> float:
        cout = L.cout - self._removed(L.name, keep, self.out_of)
        if L.kind == "bn":
            return 2 * cout if what == "params" else 0.0
        cin = L.cin - self._removed(L.name, keep, self.in_of)
        if L.groups > 1 and L.groups == L.cin == L.cout:  # depthwise: groups follow the channels
            per_out: float = L.kernel
        else:
            per_out = cin / L.groups * L.kernel
        if what == "params":
            return cout * per_out + (cout if L.bias else 0)
        return cout * per_out * L.positions

    def _modelled(self, keep: dict[str, int], removed: set[str]) -> dict[str, float]:
        gone = set().union(*(self.block_layers[b] for b in removed)) if removed else set()
        p = m = 0.0
        for L in self.layers.values():
            if L.name in gone:
                continue
            p += self._layer_cost(L, keep, "params")
            m += self._layer_cost(L, keep, "macs")
        return {"params": p, "macs": m}

    def __call__(self, keep: dict[str, int], removed: set[str]) -> dict[str, float]:
        c = self._modelled(keep, removed)
        c["params"] += self.other_params - sum(self.block_other[b] for b in removed)
        c["macs"] += self.other_macs - sum(self._other_block_macs(b) for b in removed)
        return c

    def _other_block_macs(self, name: str) -> float:
        b = self.blocks[name]
        modelled = sum(
            self._layer_cost(self.layers[n], {}, "macs") for n in self.block_layers[name] if n in self.layers
        )
        return max(0.0, b.macs - modelled)


# --------------------------------------------------------------------------- widths


def allowed_widths(n: int, round_to: int | None, max_ratio: float) -> list[int]:
    """Kept-channel counts a unit of ``n`` channels may take, widest first (multiples of ``round_to``)."""
    step = max(1, int(round_to or 1))
    floor = max(step, math.ceil(n * (1.0 - max_ratio) / step) * step)
    widths = [n] + [w for w in range((n // step) * step, floor - 1, -step) if 0 < w < n]
    return sorted(set(widths), reverse=True)


def round_width(n: int, keep: float, round_to: int | None) -> int:
    """``keep`` channels rounded to the nearest multiple of ``round_to`` (at least one multiple, at most n)."""
    step = max(1, int(round_to or 1))
    if n <= step:
        return n
    k = int(round(keep / step)) * step
    return int(min(n, max(step, k)))


# --------------------------------------------------------------------------- allocation


@dataclass
class Plan:
    keep: dict[str, int]  # unit -> kept channels (only units that change)
    blocks: list[str]  # blocks to remove, least sensitive first
    channels: dict[str, int] = field(default_factory=dict)  # unit -> original channels
    predicted: dict[str, float] = field(default_factory=dict)  # fractions removed, per target key
    predicted_drop: float = 0.0  # sum of the sensitivity increases of the chosen steps
    steps: int = 0
    round_to: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fraction(self, i: int, k: int) -> Plan:
        """The ``i``-th of ``k`` equal stages towards this plan (widths interpolated, blocks in order)."""
        if i >= k:
            return self
        keep = {}
        for u, w in self.keep.items():
            n = self.channels.get(u, w)
            keep[u] = max(w, round_width(n, n - (n - w) * i / k, self.round_to))
        nb = math.ceil(len(self.blocks) * i / k)
        keep = {u: w for u, w in keep.items() if w < self.channels.get(u, w)}
        return Plan(keep, self.blocks[:nb], dict(self.channels), round_to=self.round_to)


def normalise_targets(targets: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in targets.items():
        if k not in TARGET_KEYS:
            raise ModelError(f"unknown pruning target {k!r}; use {', '.join(TARGET_KEYS)}")
        if k == "speedup":
            if v <= 1:
                raise ModelError(f"a speedup target must be above 1, got {v}")
            out["latency"] = max(out.get("latency", 0.0), 1.0 - 1.0 / v)
        else:
            if not 0 < v < 1:
                raise ModelError(f"target {k} is the fraction to remove and must lie in (0, 1), got {v}")
            out[k] = max(out.get(k, 0.0), v)
    if not out:
        raise ModelError("give at least one target, e.g. {params: 0.5} or {macs: 0.45} or {speedup: 1.6}")
    return out


def _unit_drop(
    sens: dict[str, Any] | None, unit: str, ratio: float, metric: str, fallback: dict[str, Any] | None
) -> float:
    if ratio <= 0:
        return 0.0
    if sens is not None and unit in sens["units"]:
        return drop_at(sens["units"][unit], ratio, metric, sens["baseline"])
    if fallback is not None:  # a unit the scan did not cover: the mean of the others
        vals = [drop_at(e, ratio, metric, fallback["baseline"]) for e in fallback["units"].values()]
        return float(sum(vals) / len(vals)) if vals else ratio
    return ratio  # no sensitivity at all: every unit alike


def allocate(
    cost: CostFn,
    units: list[ChannelUnit],
    blocks: list[Block],
    targets: dict[str, float],
    *,
    channel_sens: dict[str, Any] | None = None,
    block_sens: dict[str, Any] | None = None,
    metric: str = "loss",
    round_to: int | None = 8,
    max_ratio: float = 0.8,
    use_channels: bool = True,
    use_blocks: bool = False,
    n_blocks: int | None = None,
    max_blocks: int | None = None,
) -> Plan:
    """Greedy allocation of channel widths (and removed blocks) to meet every target.

    ``cost(keep, removed)`` returns absolute ``params``/``macs``/``latency``; ``n_blocks`` forces that
    many blocks out first (least sensitive); otherwise, with ``use_blocks``, removing a block is one of
    the steps the greedy search weighs against thinning units.
    """
    tg = normalise_targets(targets)
    base = cost({}, set())
    for k in tg:
        if k not in base:
            raise ModelError(f"target {k!r} needs a measured {k} model (set latency options)")
    chans = {u.name: u.channels for u in units}
    widths = {u.name: allowed_widths(u.channels, round_to, max_ratio) for u in units} if use_channels else {}
    inside: dict[str, str] = {}  # unit -> block containing all its layers
    for b in blocks:
        lay = set(b.layers)
        for unit in units:
            if set(unit.out_layers) <= lay and set(unit.in_layers) <= lay:
                inside[unit.name] = b.name
    block_drop = {}
    if blocks:
        if block_sens is None and (use_blocks or n_blocks):
            raise ModelError("removing blocks needs a block sensitivity scan to choose them")
        for b in blocks:
            e = (block_sens or {}).get("units", {}).get(b.name)
            block_drop[b.name] = drop_at(e, 1.0, metric, block_sens["baseline"]) if e and block_sens else math.inf
    keep: dict[str, int] = {}
    removed: list[str] = []
    total_drop = 0.0
    if n_blocks:
        ranked = sorted((b for b in blocks if math.isfinite(block_drop[b.name])), key=lambda b: block_drop[b.name])
        if n_blocks > len(ranked):
            raise ModelError(f"asked to remove {n_blocks} blocks but only {len(ranked)} are removable")
        removed = [b.name for b in ranked[:n_blocks]]
        total_drop += sum(block_drop[b] for b in removed)
    limit = max_blocks if max_blocks is not None else len(blocks)
    steps = 0

    def ratio_of(u: str, w: int) -> float:
        return 1.0 - w / chans[u]

    while True:
        cur = cost(keep, set(removed))
        need = {k: tg[k] * base[k] - (base[k] - cur[k]) for k in tg}
        unmet = {k: v for k, v in need.items() if v > 1e-9 * base[k]}
        if not unmet:
            break
        best: tuple[float, float, str, str] | None = None  # (score, -progress, kind, name)
        cands: list[tuple[str, str, dict[str, int], list[str], float]] = []
        for u, ws in widths.items():
            if u in inside and inside[u] in removed:
                continue
            w = keep.get(u, chans[u])
            nxt = [x for x in ws if x < w]
            if not nxt:
                continue
            d = _unit_drop(channel_sens, u, ratio_of(u, nxt[0]), metric, channel_sens) - _unit_drop(
                channel_sens, u, ratio_of(u, w), metric, channel_sens
            )
            cands.append(("unit", u, {**keep, u: nxt[0]}, removed, d))
        if use_blocks and len(removed) < limit:
            for b in blocks:
                if b.name in removed or not math.isfinite(block_drop[b.name]):
                    continue
                already = sum(
                    _unit_drop(channel_sens, u, ratio_of(u, keep[u]), metric, channel_sens)
                    for u in keep
                    if inside.get(u) == b.name
                )
                cands.append(("block", b.name, keep, [*removed, b.name], block_drop[b.name] - already))
        for kind, name, k2, r2, d in cands:
            new = cost(k2, set(r2))
            progress = sum(min(cur[k] - new[k], unmet[k]) / (tg[k] * base[k]) for k in unmet)
            if progress <= 0:
                continue
            score = (max(d, 0.0) + 1e-9) / progress
            key = (score, -progress, kind, name)
            if best is None or key < best:
                best = key
                chosen = (kind, name, k2, r2, d)
        if best is None:
            got = {k: round(1 - cur[k] / base[k], 4) for k in tg}
            raise ModelError(
                f"cannot reach the target {tg} within max_ratio {max_ratio} per unit "
                f"(reached {got}); lower the target, raise max_ratio, or allow block removal"
            )
        kind, name, keep, removed, d = chosen  # type: ignore[possibly-undefined]
        keep = dict(keep)
        removed = list(removed)
        total_drop += max(d, 0.0)
        steps += 1
    final = cost(keep, set(removed))
    predicted = {k: 1.0 - final[k] / base[k] for k in base if base[k]}
    keep = {u: w for u, w in keep.items() if not (u in inside and inside[u] in removed)}
    return Plan(keep, removed, chans, predicted, total_drop, steps, round_to)


def uniform_plan(
    cost: CostFn,
    units: list[ChannelUnit],
    ratio: float | None = None,
    targets: dict[str, float] | None = None,
    round_to: int | None = 8,
    max_ratio: float = 0.8,
    removed: list[str] | None = None,
) -> Plan:
    """The same ratio for every unit: ``ratio`` as given, or the smallest one that meets ``targets``."""
    chans = {u.name: u.channels for u in units}
    rem = list(removed or [])

    def plan_for(r: float) -> dict[str, int]:
        return {u.name: round_width(u.channels, u.channels * (1 - r), round_to) for u in units}

    base = cost({}, set())
    if ratio is None:
        if not targets:
            raise ModelError("give a pruning ratio or a target")
        tg = normalise_targets(targets)
        lo, hi = 0.0, max_ratio
        full = cost(plan_for(hi), set(rem))
        if any(1 - full[k] / base[k] < tg[k] for k in tg):
            raise ModelError(f"a uniform ratio up to {max_ratio} cannot reach {tg}: raise max_ratio or use sensitivity")
        for _ in range(30):
            mid = (lo + hi) / 2
            c = cost(plan_for(mid), set(rem))
            if all(1 - c[k] / base[k] >= tg[k] for k in tg):
                hi = mid
            else:
                lo = mid
        ratio = hi
    keep = {u: w for u, w in plan_for(ratio).items() if w < chans[u]}
    final = cost(keep, set(rem))
    return Plan(keep, rem, chans, {k: 1 - final[k] / base[k] for k in base if base[k]}, 0.0, 0, round_to)
