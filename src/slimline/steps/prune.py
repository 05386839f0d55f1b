"""``prune``: unstructured (``magnitude``), structured (``channel``), depth (``block``) or block + channel.

- ``magnitude``: L1 unstructured, global or per layer; masks made permanent. The record gives the
  sparsity per layer and in total, the stored size dense / zlib / sparse, the measured latency
  before and after, and says plainly that dense runtimes do not get faster.
- ``channel``: Torch-Pruning removes whole output channels; the per-unit widths come from the
  sensitivity curves (a ``sensitivity`` step on the same model, or a scan made here) so that the
  model meets every ``target`` (fractions removed of ``params``/``macs``/``latency``, or a
  ``speedup``), rounded to multiples of ``round_to``. A ``ratio`` instead prunes every unit alike.
- ``block``: removes whole residual blocks, least sensitive first (``blocks: N``, or as many as the
  target needs); ``[block, channel]`` weighs both kinds of step against each other.

A ``speedup``/``latency`` target is planned from a latency table (``latency:``); the pruned graph of each
plan is then timed whole before recovery (``latency.calibrate``: up to N re-plans, 2 by default) and, when
its measured speed-up misses the target by more than ``latency.tolerance`` either way, re-planned with the
target raised by the shortfall or lowered by the excess; the kept plan is the one measured closest to the
target among those reaching ``target x (1 - tolerance)``.

``schedule.steps`` prunes in stages with ``finetune.epochs_per_step`` between them, and
``finetune.epochs`` recovers at the end (distilling from the unpruned model with ``kd: true``;
with a small training set the teacher can also label altered images: ``mixup``, ``cutmix``,
``jitter``, ``adversarial`` (moved towards student/teacher disagreement), and match stage outputs:
``feature_layers``; ``ema`` keeps the average of the weights; ``anchor`` pulls them towards the pruned start).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from slimline.artifact import Artifact, load_torch
from slimline.context import RunContext
from slimline.errors import RecipeError, SlimlineError
from slimline.evaluate import evaluate
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput

if TYPE_CHECKING:
    from slimline.prune.allocate import Plan
    from slimline.prune.sensitivity import Kind

Method = Literal["magnitude", "channel", "block"]


class SensitivitySettings(StepConfig):
    samples: int | None = Field(256, ge=8)
    ratios: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    metric: Literal["loss", "top1", "kl"] = "loss"
    backend: Literal["auto", "torch", "onnxruntime"] = "auto"
    files: list[str] = Field(default_factory=list, description="sensitivity JSON files from an earlier scan to reuse")


class LatencySettings(StepConfig):
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    batch_size: int = Field(64, ge=1)
    threads: int = Field(2, ge=1)
    cache: bool = True
    min_seconds: float = Field(0.3, gt=0)
    calibrate: int | None = Field(
        None,
        ge=0,
        le=10,
        description="re-plan up to N times until the pruned graph, timed before recovery, meets the speed target "
        "within the tolerance either way (default: 2 with a speedup or latency target, 0 disables)",
    )
    tolerance: float = Field(0.02, ge=0, lt=1, description="how far from the speed target a calibrated plan may be")
    allow_busy: bool = Field(
        False, description="keep a latency table measured while other processes used the CPUs (marked busy)"
    )
    rounds: int = Field(
        7,
        ge=1,
        le=50,
        description="a measured speed-up is the median over this many rounds, each timing the "
        "unpruned and the pruned graph one after the other (steady when other processes load the machine)",
    )


class ScheduleSettings(StepConfig):
    steps: int = Field(1, ge=1)


class FinetuneSettings(StepConfig):
    epochs: int = Field(0, ge=0, description="fine-tuning epochs after the last pruning step")
    epochs_per_step: int = Field(0, ge=0, description="fine-tuning epochs between pruning steps")
    lr: float = Field(0.01, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    weight_decay: float = Field(5e-4, ge=0)
    augment: bool = True
    kd: bool = Field(True, description="distil from the unpruned model (slimline.distill.kd_criterion)")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    teacher_runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="run the frozen teacher in ONNX Runtime (faster on CPU) or PyTorch"
    )
    recalibrate_bn: bool = Field(True, description="re-estimate BatchNorm statistics after each pruning step")
    mixup: float = Field(0.0, ge=0, description="with kd: match the teacher on mixup-blended inputs (Beta parameter)")
    cutmix: float = Field(0.0, ge=0, description="with kd: match the teacher on CutMix inputs too (Beta parameter)")
    jitter: float = Field(
        0.0, ge=0, le=1, description="with kd: random zoom/shift/rotation/brightness/contrast of this strength"
    )
    ema: float = Field(
        0.0, ge=0, lt=1, description="average the weights over the steps (decay, e.g. 0.998); the result is the average"
    )
    feature_layers: list[str] = Field(
        default_factory=list,
        description="with kd: also match these layers' outputs to the unpruned model's (e.g. the stages of a ResNet)",
    )
    feature_weight: float = Field(1.0, ge=0, description="weight of the feature-matching loss")
    adversarial: float = Field(
        0.0, ge=0, description="with kd: move half the batches towards student/teacher disagreement (L-inf step)"
    )
    anchor: float = Field(
        0.0, ge=0, description="pull the weights towards the pruned starting point (L2-SP strength; 0: off)"
    )
    recalibrate_samples: int = Field(2048, ge=1)


class PruneOptions(StepConfig):
    method: Method | list[Method] = "channel"
    ratio: float | None = Field(None, ge=0, lt=1, description="magnitude: sparsity; channel: the same ratio everywhere")
    scope: Literal["global", "local"] = "global"
    layers: list[str] | None = Field(None, description="magnitude: only these layers (names or globs)")
    target: dict[str, float] | None = Field(None, description="{params|macs|latency: fraction removed, speedup: x}")
    importance: Literal["l1", "l2", "bn", "taylor"] = "l1"
    round_to: int | None = Field(8, ge=1, description="kept channels are multiples of this (hardware-friendly)")
    max_ratio: float = Field(0.8, gt=0, lt=1, description="at most this fraction of a unit's channels goes")
    allocation: Literal["sensitivity", "uniform"] = "sensitivity"
    blocks: int | None = Field(None, ge=0, description="remove this many blocks (default: as the target needs)")
    max_blocks: int | None = Field(None, ge=0)
    protect: list[str] = Field(default_factory=list, description="layers whose output channels stay")
    channel_layers: list[str] | None = Field(
        None,
        description="channel pruning touches only these layers (names or globs); the others keep their output "
        "channels, but their blocks may still be removed (unlike protect)",
    )
    exclude: list[str] = Field(default_factory=list, description="layers left alone and not traced")
    protect_first_last: bool = True
    sensitivity: SensitivitySettings = Field(default_factory=SensitivitySettings)
    latency: LatencySettings = Field(default_factory=LatencySettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    measure_latency: bool = Field(True, description="magnitude: time dense latency before and after")

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        if isinstance(v, str) and "+" in v:
            return [s.strip() for s in v.split("+")]
        return v

    @model_validator(mode="after")
    def _check(self) -> PruneOptions:
        ms = self.methods()
        if "magnitude" in ms and len(ms) > 1:
            raise ValueError("method magnitude does not combine with channel or block")
        if ms == ["magnitude"] and self.ratio is None:
            raise ValueError("method magnitude needs a ratio (the fraction of weights to zero)")
        if "channel" in ms and self.ratio is None and not self.target:
            raise ValueError("method channel needs a target (e.g. {macs: 0.5}) or a ratio")
        if ms == ["block"] and self.blocks is None and not self.target:
            raise ValueError("method block needs a number of blocks or a target")
        if self.latency.calibrate and not {"speedup", "latency"} & set(self.target or {}):
            raise ValueError("latency.calibrate needs a speedup or latency target (e.g. target: {speedup: 2})")
        return self

    def calibrate_rounds(self) -> int:
        """``latency.calibrate``, or its default: 2 re-plans with a speedup or latency target, else none."""
        if self.latency.calibrate is not None:
            return self.latency.calibrate
        return 2 if {"speedup", "latency"} & set(self.target or {}) else 0

    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(dict.fromkeys(self.method))


def _find_sensitivity(
    ctx: RunContext, artifact: Artifact, kind: str, files: list[str]
) -> tuple[dict[str, Any], str] | None:
    """A sensitivity result of ``kind`` for this model: from a sensitivity step of this run, or a file."""
    for rec in reversed(ctx.records):
        if rec.get("step") == "sensitivity" and rec.get("evaluated") == artifact.path.name:
            res = rec.get("sensitivity", {}).get(kind)
            if res is not None:
                return res, "reused from the sensitivity step"
    for f in files:
        loaded = _load_sensitivity(f)
        if loaded.get("kind") == kind:
            return loaded, f"read from {f}"
    return None


@STEPS.register("prune")
class Prune(Step[PruneOptions]):
    """Prune the current PyTorch model (weights or whole channels) to a target ratio."""

    name = "prune"
    Config = PruneOptions
    accepts = ("torch",)

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        model = load_torch(artifact)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        self._measured: dict[str, dict[str, Any]] = {}  # sensitivity results measured here, by kind
        if cfg.methods() == ["magnitude"]:
            record = self._magnitude(model, artifact, ctx, cfg)
        else:
            record = self._structured(model, artifact, ctx, cfg)
        out = ctx.save_model(model, artifact)
        record["reload_check"] = _reload_check(model, out)
        from slimline.fileio import write_json

        # written after the artifact: saving it replaces the step's folder
        for kind, res in self._measured.items():
            write_json(out.path / f"sensitivity_{kind}.json", res)
        return StepOutput(out, record)

    # ------------------------------------------------------------------ unstructured

    def _magnitude(
        self, model: torch.nn.Module, artifact: Artifact, ctx: RunContext, cfg: PruneOptions
    ) -> dict[str, Any]:
        from slimline.prune.magnitude import (
            DENSE_RUNTIME_NOTE,
            magnitude_prune,
            measure_torch_latency,
            remove_masks,
            sparsity_report,
            storage_report,
        )
        from slimline.prune.schedule import finetune

        assert cfg.ratio is not None
        dense = copy.deepcopy(model)
        before = storage_report(model)
        val_before = evaluate(model, ctx.data.val)
        layers = magnitude_prune(
            model, cfg.ratio, cfg.scope, cfg.layers, cfg.exclude, permanent=cfg.finetune.epochs == 0
        )
        rec: dict[str, Any] = {"method": "magnitude", "scope": cfg.scope, "ratio": cfg.ratio}
        val_pruned = evaluate(model, ctx.data.val)
        if cfg.finetune.epochs > 0:  # the masks stay attached while training, so zeros stay zero
            ft = _finetune_config(cfg, ctx)
            rec["finetune"] = finetune(
                model, ctx.data.train, ft, cfg.finetune.epochs, teacher=dense, val=ctx.data.val, description="fine-tune"
            )
            remove_masks(model, layers)
        sp = sparsity_report(model, layers)
        after = storage_report(model)
        rec.update(
            {
                "sparsity": sp["sparsity"],
                "sparsity_per_layer": {n: v["sparsity"] for n, v in sp["layers"].items()},
                "zeros": sp["zeros"],
                "weights": sp["weights"],
                "covered_share": sp["covered_share"],
                "skipped": sp["skipped"],
                "storage": {"before": before, "after": after},
                "val_before": val_before,
                "val_after_pruning": val_pruned,
                "val": evaluate(model, ctx.data.val),
                "note": DENSE_RUNTIME_NOTE,
                "summary": f"{100 * sp['sparsity']:.1f}% zeros in {100 * sp['covered_share']:.0f}% of the weights; "
                f"sparse {after['sparse_bytes'] / 1e3:.0f} kB "
                f"vs dense {after['dense_bytes'] / 1e3:.0f} kB; latency unchanged",
            }
        )
        if cfg.measure_latency:
            shape = tuple(artifact.meta["input_shape"])
            lat = measure_torch_latency({"dense": dense, "sparse": model}, shape)
            rec["latency_ms"] = {
                "runtime": "torch",
                "batch": 16,
                **lat,
                "ratio": lat["dense"] / lat["sparse"] if lat["sparse"] else None,
                "note": "median of 10 alternating runs",
            }
        return rec

    # ------------------------------------------------------------------ structured

    def _structured(
        self, model: torch.nn.Module, artifact: Artifact, ctx: RunContext, cfg: PruneOptions
    ) -> dict[str, Any]:
        from slimline.prune.allocate import CostModel, Plan, allocate, allowed_widths, uniform_plan
        from slimline.prune.block import find_blocks
        from slimline.prune.channel import scan_units
        from slimline.prune.common import example_input, model_size, reduction
        from slimline.prune.schedule import run_schedule
        from slimline.prune.sensitivity import sensitivity

        methods = cfg.methods()
        shape = tuple(artifact.meta["input_shape"])
        example = example_input(shape, batch=2, seed=ctx.seed)
        teacher = copy.deepcopy(model).eval()
        size_before = model_size(model, shape)
        val_before = evaluate(model, ctx.data.val)
        rec: dict[str, Any] = {"method": "+".join(methods), "importance": cfg.importance, "round_to": cfg.round_to}

        from slimline.prune.common import match_names

        units, blocks = [], []
        chan_protect = list(cfg.protect)
        if cfg.channel_layers:
            layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear)]
            chosen = set(match_names(layers, cfg.channel_layers, "layer to channel-prune"))
            chan_protect += [n for n in layers if n not in chosen]
            rec["channel_layers"] = sorted(chosen)
        if "channel" in methods:
            unit_scan = scan_units(model, example, chan_protect, cfg.exclude, cfg.protect_first_last)
            units = unit_scan.units
            rec["units"] = unit_scan.to_dict()
            if not units:
                raise SlimlineError(
                    "no channel group can be pruned (all protected, excluded or unsafe): " + str(unit_scan.skipped)
                )
        if "block" in methods:
            all_names = [n for n, _ in model.named_modules() if n]
            prot = match_names(all_names, cfg.protect, "layer to protect") if cfg.protect else []
            blocks = find_blocks(model, example, prot)
            rec["removable_blocks"] = [b.name for b in blocks]
            if not blocks:
                raise SlimlineError(
                    "the model has no removable residual block (same input and output shape, skip path)"
                )

        def scan(kind: Kind) -> dict[str, Any]:
            found = _find_sensitivity(ctx, artifact, kind, cfg.sensitivity.files)
            if found is None and kind == "channel":  # per-layer weight curves of each unit's root layer
                found = _find_sensitivity(ctx, artifact, "weight", cfg.sensitivity.files)
            if found is not None:
                res, where = found
                note = where if res["kind"] == kind else f"{where}: weight curves of each unit's root layer as a proxy"
                rec.setdefault("sensitivity", {})[kind] = note
                return res
            s = cfg.sensitivity
            res = sensitivity(
                model,
                ctx.data.val,
                kind,
                s.ratios,
                s.samples,
                None,
                chan_protect if kind == "channel" else cfg.protect,
                cfg.exclude,  # type: ignore[arg-type]
                cfg.protect_first_last,
                s.backend,
                seed=ctx.seed,
                description=f"sensitivity ({kind})",
            )
            self._measured[kind] = res
            rec.setdefault("sensitivity", {})[kind] = f"measured here in {res['seconds']} s (sensitivity_{kind}.json)"
            return res

        need_channel_sens = bool(units) and cfg.allocation == "sensitivity" and cfg.ratio is None
        channel_sens = scan("channel") if need_channel_sens else None
        block_sens = scan("block") if blocks else None

        cost = CostModel(model, example, units, blocks)
        cost_fn = cost
        tg = dict(cfg.target or {})
        lat_model = None
        L = cfg.latency

        def timed(m: nn.Module) -> float:
            """Median latency (ms) of ``m`` on the runtime, batch size and threads of ``latency:``."""
            from slimline.prune.latency import measure_module

            return measure_module(m, shape, L.runtime, L.batch_size, L.threads, min_seconds=L.min_seconds)

        if "latency" in tg or "speedup" in tg:
            from slimline.prune.latency import LatencyModel

            widths = {u.name: allowed_widths(u.channels, cfg.round_to, cfg.max_ratio) for u in units}
            lat_model = LatencyModel(
                model,
                example,
                units,
                blocks,
                widths,
                L.runtime,
                L.batch_size,
                L.threads,
                L.cache,
                L.min_seconds,
                allow_busy=L.allow_busy,
            )

            def cost_fn(keep: dict[str, int], removed: set[str]) -> dict[str, float]:  # type: ignore[misc]
                return {**cost(keep, removed), **lat_model(keep, removed)}

            rec["latency_table"] = lat_model.describe()

        n_blocks = cfg.blocks if "block" in methods else None

        def make_plan(tg: dict[str, float]) -> Plan:
            if not tg and cfg.ratio is None:  # block only, a number of blocks
                assert block_sens is not None
                gone = _least_sensitive(block_sens, n_blocks or 0, cfg.sensitivity.metric)
                full, after = cost_fn({}, set()), cost_fn({}, set(gone))
                return Plan({}, gone, {}, {k: 1 - after[k] / full[k] for k in full if full[k]}, round_to=cfg.round_to)
            if cfg.ratio is not None or cfg.allocation == "uniform":
                removed: list[str] = []
                if n_blocks:
                    assert block_sens is not None
                    removed = _least_sensitive(block_sens, n_blocks, cfg.sensitivity.metric)
                return uniform_plan(cost_fn, units, cfg.ratio, tg or None, cfg.round_to, cfg.max_ratio, removed)
            return allocate(
                cost_fn,
                units,
                blocks,
                tg,
                channel_sens=channel_sens,
                block_sens=block_sens,
                metric=cfg.sensitivity.metric,
                round_to=cfg.round_to,
                max_ratio=cfg.max_ratio,
                use_channels="channel" in methods,
                use_blocks="block" in methods and n_blocks is None,
                n_blocks=n_blocks,
                max_blocks=cfg.max_blocks,
            )

        plan = make_plan(tg)
        if lat_model is not None and cfg.calibrate_rounds():
            plan, rec["latency_calibration"], _ = _calibrate_plan(
                make_plan, plan, tg, teacher, example, cfg.calibrate_rounds(), L.tolerance, timed, L.rounds
            )
        rec["plan"] = plan.to_dict()

        ft = _finetune_config(cfg, ctx)

        def grad_batches() -> Any:
            return ctx.data.train.batches(ft.batch_size, shuffle=True, seed=ctx.seed)

        def on_step(i: int, m: torch.nn.Module) -> dict[str, Any]:
            return {"size": model_size(m, shape), "val": evaluate(m, ctx.data.val)}

        history = run_schedule(
            model,
            example,
            plan,
            steps=cfg.schedule.steps,
            importance=cfg.importance,
            exclude=cfg.exclude,
            train=ctx.data.train,
            val=ctx.data.val,
            finetune_cfg=ft,
            teacher=teacher if cfg.finetune.kd else None,
            grad_batches=grad_batches if cfg.importance == "taylor" else None,
            checkpoint=ctx.out_dir / "finetune_checkpoint.pt",
            on_step=on_step,
        )
        (ctx.out_dir / "finetune_checkpoint.pt").unlink(missing_ok=True)
        size_after = model_size(model, shape)
        red = reduction(size_before, size_after)
        rec.update(
            {
                "schedule": history,
                "size_before": size_before,
                "size_after": size_after,
                "reduction": red,
                "val_before": val_before,
                "val": evaluate(model, ctx.data.val),
                "summary": f"-{100 * red['params']:.1f}% params, -{100 * red['macs']:.1f}% MACs"
                + (f", {len(plan.blocks)} blocks removed" if plan.blocks else ""),
            }
        )
        if lat_model is not None:
            speedup, t_before, t_after = measured_speedup(teacher, model, timed, L.rounds)
            kept = next((r for r in rec.get("latency_calibration") or [] if r.get("kept")), None)
            predicted = kept["predicted_speedup"] if kept else _predicted_speedup(plan)
            rec["latency_ms"] = {
                "runtime": L.runtime,
                "batch": L.batch_size,
                "threads": L.threads,
                "before": t_before,
                "after": t_after,
                "measured_speedup": speedup,
                "table_speedup": _predicted_speedup(plan),
                "predicted_speedup": predicted,
                "prediction_error": predicted / speedup,
                "rounds": L.rounds,
                "note": "the median speed-up of rounds that time both graphs one after the other",
            }
        return rec


def _predicted_speedup(plan: Plan) -> float:
    return 1.0 / max(1e-9, 1.0 - plan.predicted.get("latency", 0.0))


def _calibrate_plan(
    make_plan: Callable[[dict[str, float]], Plan],
    plan: Plan,
    tg: dict[str, float],
    model: nn.Module,
    example: torch.Tensor,
    rounds_max: int,
    tolerance: float,
    timed: Callable[[nn.Module], float],
    timing_rounds: int = 1,
) -> tuple[Plan, list[dict[str, Any]], float]:
    """Time each plan's pruned graph (before recovery) and re-plan while the measured speed-up misses the
    one asked for by more than ``tolerance`` either way: with the target raised by the shortfall (the
    latency table sums savings measured in isolation and often promises more than the whole graph gives)
    or lowered by the excess (the plan removed more than needed). Keeps the plan measured closest to the
    target among those reaching ``target x (1 - tolerance)``, else the fastest measured. Returns that plan,
    one record per round and the unpruned model's latency. In each round ``table_speedup`` is the latency
    table's prediction for the plan and ``predicted_speedup`` the planner's: the table's corrected by the
    measured/table ratio of the round before (round 0: the table's), ``prediction_error`` = predicted /
    measured; ``kept`` marks the round kept."""
    from slimline.prune.allocate import normalise_targets
    from slimline.prune.schedule import apply_plan

    want = 1.0 / (1.0 - normalise_targets(tg)["latency"])
    others = {k: v for k, v in tg.items() if k not in ("latency", "speedup")}
    befores: list[float] = []
    asked = want
    rounds: list[dict[str, Any]] = []
    plans: list[Plan] = []
    correction = 1.0  # measured / table speed-up of the last plan timed: the table's error on this model
    for i in range(rounds_max + 1):
        trial = copy.deepcopy(model)
        apply_plan(trial, example, plan)  # L1 channel choice: only the shapes matter for the time
        measured, t_b, _ = measured_speedup(model, trial, timed, timing_rounds)
        befores.append(t_b)
        table = _predicted_speedup(plan)
        predicted = table * correction  # what the planner expected before timing this plan
        rounds.append(
            {
                "round": i,
                "asked_speedup": asked,
                "table_speedup": table,
                "predicted_speedup": predicted,
                "measured_speedup": measured,
                "prediction_error": predicted / measured,
                "plan": plan.to_dict(),
            }
        )
        correction = measured / table
        plans.append(plan)
        if abs(measured - want) <= want * tolerance or i == rounds_max:
            break
        asked *= want / measured
        try:
            plan = make_plan(others | {"speedup": asked})
        except SlimlineError as e:  # no plan reaches the corrected target: keep the best one measured
            rounds[-1]["stopped"] = f"no plan for a predicted {asked:.2f}x: {e}"
            break
    speeds = [r["measured_speedup"] for r in rounds]
    meeting = [j for j, m in enumerate(speeds) if m >= want * (1 - tolerance)]
    kept = (
        min(meeting, key=lambda j: abs(speeds[j] - want))
        if meeting
        else max(range(len(speeds)), key=speeds.__getitem__)
    )
    rounds[kept]["kept"] = True
    return plans[kept], rounds, statistics.median(befores)


def measured_speedup(
    before: nn.Module, after: nn.Module, timed: Callable[[nn.Module], float], rounds: int
) -> tuple[float, float, float]:
    """(speed-up, latency before, latency after): medians over ``rounds`` rounds, each timing ``before`` and
    then ``after``, the speed-up being the median of the rounds' ratios. Timed one after the other in every
    round, both graphs see the same load, so a process running beside them moves the ratio far less than
    it moves either latency."""
    ratios, tb, ta = [], [], []
    for _ in range(rounds):
        b, a = timed(before), timed(after)
        ratios.append(b / a)
        tb.append(b)
        ta.append(a)
    return statistics.median(ratios), statistics.median(tb), statistics.median(ta)


def _load_sensitivity(path: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"cannot read the sensitivity file {p}: {e}") from e
    if not isinstance(d, dict) or "units" not in d or "baseline" not in d:
        raise RecipeError(f"{p} is not a slimline sensitivity result (no 'units'/'baseline')")
    return d


def _least_sensitive(block_sens: dict[str, Any], n: int, metric: str) -> list[str]:
    from slimline.prune.sensitivity import drop_at

    ranked = sorted(
        block_sens["units"], key=lambda b: drop_at(block_sens["units"][b], 1.0, metric, block_sens["baseline"])
    )
    if n > len(ranked):
        raise RecipeError(f"asked to remove {n} blocks but only {len(ranked)} are removable")
    return ranked[:n]


def _finetune_config(cfg: PruneOptions, ctx: RunContext) -> Any:
    from slimline.prune.schedule import FinetuneConfig

    f = cfg.finetune
    return FinetuneConfig(
        epochs=f.epochs,
        epochs_per_step=f.epochs_per_step,
        lr=f.lr,
        warmup_epochs=f.warmup_epochs,
        batch_size=f.batch_size,
        optimizer=f.optimizer,
        weight_decay=f.weight_decay,
        augment=f.augment,
        kd=f.kd,
        temperature=f.temperature,
        alpha=f.alpha,
        seed=ctx.seed,
        teacher_runtime=f.teacher_runtime,
        recalibrate_bn=f.recalibrate_bn,
        recalibrate_samples=f.recalibrate_samples,
        mixup=f.mixup,
        cutmix=f.cutmix,
        jitter=f.jitter,
        ema=f.ema,
        feature_layers=tuple(f.feature_layers),
        feature_weight=f.feature_weight,
        anchor=f.anchor,
        adversarial=f.adversarial,
    )


def _reload_check(model: torch.nn.Module, out: Artifact) -> dict[str, Any]:
    """Reload the saved artifact (architecture rebuilt from the zoo) and compare outputs."""
    import numpy as np

    shape = tuple(out.meta["input_shape"])
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32))
    again = load_torch(out)
    with torch.no_grad():
        a, b = model.eval()(x), again(x)
    diff = float((a - b).abs().max())
    if diff > 1e-5 * max(1.0, float(a.abs().max())):
        raise SlimlineError(f"the pruned model does not reload identically (max difference {diff:.3g})")
    return {"max_abs_diff": diff, "passed": True}
