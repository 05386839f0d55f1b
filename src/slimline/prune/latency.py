"""A latency lookup table for pruning decisions, measured on the target runtime and cached per machine.

Each channel unit is timed inside its *segment*, the smallest module that holds all of its layers
and takes one tensor (for a ResNet, its residual block), at every width the allocator may choose;
each removable block is timed whole. The model's latency after a set of choices is predicted as

    L = L_full - sum(savings of thinned units outside removed blocks) - sum(latency of removed blocks)

Segments with the same layers, input shape and width share one measurement (all the identity
blocks of a ResNet stage), so a ResNet-56 table needs a few dozen small timings. Each entry is the
10th percentile of repeated runs (steadier than the median on a busy machine), and a unit's
latencies are made non-increasing as it gets thinner. Entries are cached in ``$SLIMLINE_CACHE``
(default ``~/.cache/slimline``) under ``latency_lut.json``, keyed by the CPU model and its vector
instruction flags (two CPUs sold under one model name may differ), runtime version, batch size,
threads and the segment's layer shapes. Every entry also stores the time a fixed
reference workload took when it was measured; on reuse it is rescaled by that reference timed
again now, so that tables measured while the machine was busier (or idler) stay consistent.

Other processes' CPU use is sampled around every timing (:func:`slimline.environment.other_load`):
a timing during which they used more than :data:`slimline.environment.BUSY_SHARE` of the CPUs is
taken again after a short wait, up to :data:`BUSY_TRIES` times; then the table is refused (a busy
machine makes it wrong), or kept with ``allow_busy`` and marked ``busy`` in :meth:`LatencyModel.describe`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.environment import CpuSample, cpu_load_sample, other_load
from slimline.errors import ModelError, SlimlineError
from slimline.prune.block import Block
from slimline.prune.channel import ChannelUnit, prune_channels
from slimline.prune.common import example_input

RUNTIMES = ("onnxruntime", "torch")
BUSY_TRIES = 3  # timings of one entry on a busy machine before the table is refused
BUSY_WAIT_S = 2.0  # pause before timing an entry again


def load_sample() -> CpuSample | None:
    """The machine-load sample taken around each timing (a seam for tests)."""
    return cpu_load_sample()


def cache_file() -> Path:
    root = Path(os.environ.get("SLIMLINE_CACHE", Path.home() / ".cache" / "slimline"))
    return root / "latency_lut.json"


def _machine_key(runtime: str, batch: int, threads: int) -> str:
    from slimline.environment import cpu_info

    if runtime == "onnxruntime":
        import onnxruntime as ort

        ver = ort.__version__
    else:
        ver = torch.__version__
    cpu = cpu_info()
    flags = ",".join(sorted(f for f, on in cpu["flags"].items() if on))
    isa = hashlib.sha1(flags.encode()).hexdigest()[:8]  # the vector units the kernels pick from
    return f"{cpu['model']}|isa-{isa}|{runtime}-{ver}|b{batch}|t{threads}"


def _signature(module: nn.Module, input_shape: tuple[int, ...], extra: str) -> str:
    from slimline.artifact import layer_specs

    spec = json.dumps(
        {"layers": layer_specs(module), "type": type(module).__name__, "in": list(input_shape), "x": extra}
    )
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


def measure_module(
    module: nn.Module,
    input_shape: tuple[int, ...],
    runtime: str = "onnxruntime",
    batch: int = 64,
    threads: int = 2,
    min_reps: int = 10,
    min_seconds: float = 0.3,
    warmup: int = 3,
    percentile: float = 50.0,
) -> float:
    """Latency in milliseconds of ``module`` on a batch, on ``runtime`` (ONNX Runtime or PyTorch).

    The median by default; a low ``percentile`` (the lookup table uses 10) is steadier on a busy
    machine, where interference only ever adds time.
    """
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    module = module.eval()
    if runtime == "onnxruntime":
        import onnxruntime as ort

        from slimline.onnx_export import export_onnx

        with tempfile.TemporaryDirectory(prefix="slimline-lut-") as tmp:
            path = export_onnx(module, tuple(input_shape), Path(tmp) / "seg.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run() -> None:
            sess.run(None, {name: x})

    elif runtime == "torch":
        xt = torch.from_numpy(x)
        old = torch.get_num_threads()

        def run() -> None:
            with torch.inference_mode():
                module(xt)

    else:
        raise ModelError(f"latency tables can be measured on {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "torch":
        torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            run()
        times: list[float] = []
        t_end = time.perf_counter() + min_seconds
        while len(times) < min_reps or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
            if len(times) > 2000:
                break
    finally:
        if runtime == "torch":
            torch.set_num_threads(old)
    return 1e3 * float(np.percentile(times, percentile))


def reference_ms(runtime: str, batch: int, threads: int) -> float:
    """Latency of a fixed small conv stack: the yardstick that rescales cached entries to today's load."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
    return measure_module(ref, (16, 16, 16), runtime, batch, threads, min_seconds=0.3, percentile=10.0)


class LatencyModel:
    """Predicted latency (ms per batch) after thinning units and removing blocks; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        units: list[ChannelUnit],
        blocks: list[Block],
        widths: dict[str, list[int]],
        runtime: str = "onnxruntime",
        batch: int = 64,
        threads: int = 2,
        use_cache: bool = True,
        min_seconds: float = 0.3,
        allow_busy: bool = False,
    ) -> None:
        from slimline.progress import make_progress

        self.runtime, self.batch, self.threads = runtime, batch, threads
        self.min_seconds = min_seconds
        self.allow_busy = allow_busy
        self.busy: list[dict[str, Any]] = []  # timings kept although the machine was busy (allow_busy)
        self.machine = _machine_key(runtime, batch, threads)
        self.use_cache = use_cache
        self._cache = self._load_cache() if use_cache else {}
        self.measured = 0
        self.cached = 0
        # a fixed reference workload timed now: cached entries are rescaled by how busy the machine is
        self.reference = self._quiet("the reference workload", lambda: reference_ms(runtime, batch, threads))
        inputs = _module_inputs(model, example)
        self.units = {u.name: u for u in units}
        self.segment: dict[str, str] = {}
        for u in units:
            self.segment[u.name] = _enclosing(model, u, inputs)
        self.blocks = {b.name: b for b in blocks}
        total = 1 + len(blocks) + sum(len(widths.get(u.name, [])) for u in units)
        self.unit_lat: dict[tuple[str, int], float] = {}
        self.block_lat: dict[str, float] = {}
        with make_progress() as bar:
            task = bar.add_task("latency table", total=total, info=self.machine)
            self.full = self._time(model, tuple(example.shape[1:]), "full")
            bar.update(task, advance=1)
            for b in blocks:
                self.block_lat[b.name] = self._time(model.get_submodule(b.name), inputs[b.name], "block")
                bar.update(task, advance=1, info=b.name)
            for u in units:
                seg = self.segment[u.name]
                seg_mod = model.get_submodule(seg) if seg else model
                shape = inputs[seg] if seg else tuple(example.shape[1:])
                rel = u.name[len(seg) + 1 :] if seg else u.name
                for w in widths.get(u.name, []):
                    if w >= u.channels:
                        t = self._time(seg_mod, shape, "seg")
                    else:
                        t = self._time(seg_mod, shape, f"seg:{rel}:{w}", _thinned(seg_mod, shape, rel, w))
                    self.unit_lat[(u.name, w)] = t
                    bar.update(task, advance=1, info=f"{u.name} @ {w}")
                # noise can make a thinner segment time slower: keep the table monotone in the width
                ws = sorted((w for (n, w) in self.unit_lat if n == u.name), reverse=True)
                for wide, thin in zip(ws, ws[1:], strict=False):
                    self.unit_lat[(u.name, thin)] = min(self.unit_lat[(u.name, thin)], self.unit_lat[(u.name, wide)])
        if use_cache:
            self._save_cache()

    # ------------------------------------------------------------------ cache

    def _load_cache(self) -> dict[str, dict[str, float]]:
        f = cache_file()
        try:
            raw = json.loads(f.read_text())
            return {k: {"ms": float(v["ms"]), "ref": float(v["ref"])} for k, v in raw.items() if isinstance(v, dict)}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            return {}

    def _save_cache(self) -> None:
        from slimline.fileio import write_json

        merged = self._load_cache()
        merged.update(self._cache)
        try:
            write_json(cache_file(), merged)
        except OSError:
            pass  # a read-only home: the table is simply not cached

    def _time(
        self, module: nn.Module, shape: tuple[int, ...], extra: str, build: Callable[[], nn.Module] | None = None
    ) -> float:
        """Time ``module`` (or what ``build`` makes of it, built only when not cached), keyed by ``module``."""
        key = f"{self.machine}|{_signature(module, shape, extra)}"
        if key in self._cache:
            self.cached += 1
            hit = self._cache[key]
            return hit["ms"] * self.reference / hit["ref"]
        target = build() if build is not None else module
        t = self._quiet(
            extra,
            lambda: measure_module(
                target, shape, self.runtime, self.batch, self.threads, min_seconds=self.min_seconds, percentile=10.0
            ),
        )
        self._cache[key] = {"ms": t, "ref": self.reference}
        self.measured += 1
        return t

    def _quiet(self, what: str, measure: Callable[[], float]) -> float:
        """``measure()`` taken again (after :data:`BUSY_WAIT_S`) while other processes use the CPUs, up to
        :data:`BUSY_TRIES` times; then refused, or kept and recorded in ``busy`` with ``allow_busy``."""
        share = 0.0
        for attempt in range(BUSY_TRIES):
            before = load_sample()
            t = measure()
            load = other_load(before, load_sample())
            if load is None or not load["busy"]:
                return t
            share = float(load["other_share"])
            if attempt < BUSY_TRIES - 1:
                time.sleep(BUSY_WAIT_S)
        if not self.allow_busy:
            raise SlimlineError(
                f"the machine is busy (other processes used {100 * share:.0f}% of the CPUs while the latency table "
                "was measured); the table would be wrong. Stop other jobs, or set latency: {allow_busy: true}"
            )
        self.busy.append({"entry": what, "other_share": share})
        return t

    # ------------------------------------------------------------------ prediction

    def saving(self, unit: str, width: int) -> float:
        u = self.units[unit]
        return self.unit_lat[(unit, u.channels)] - self.unit_lat[(unit, width)]

    def __call__(self, keep: dict[str, int], removed: set[str]) -> dict[str, float]:
        lat = self.full - sum(self.block_lat[b] for b in removed)
        for u, w in keep.items():
            seg = self.segment[u]
            if any(seg == b or seg.startswith(b + ".") for b in removed):
                continue
            if (u, w) not in self.unit_lat:
                raise ModelError(f"no latency measured for {u} at width {w}")
            lat -= self.saving(u, w)
        return {"latency": max(lat, 1e-6)}

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "batch": self.batch,
            "threads": self.threads,
            "machine": self.machine,
            "full_ms": self.full,
            "blocks_ms": self.block_lat,
            "units_ms": {f"{u}@{w}": t for (u, w), t in self.unit_lat.items()},
            "measured": self.measured,
            "from_cache": self.cached,
            "reference_ms": self.reference,
            "cache": str(cache_file()) if self.use_cache else None,
            "busy": {"entries": len(self.busy), "max_other_share": max(b["other_share"] for b in self.busy)}
            if self.busy
            else None,
        }


def _thinned(seg: nn.Module, shape: tuple[int, ...], rel: str, width: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        twin = copy.deepcopy(seg)
        prune_channels(twin, example_input(shape, 2), {rel: width}, verify=False)
        return twin

    return build


def _module_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Input shape (without batch) of every module called once with a single tensor."""
    names = {m: n for n, m in model.named_modules() if n}
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}

    def hook(mod: nn.Module, args: Any) -> None:
        n = names[mod]
        calls[n] = calls.get(n, 0) + 1
        if len(args) == 1 and isinstance(args[0], torch.Tensor):
            shapes[n] = tuple(args[0].shape[1:])

    hooks = [m.register_forward_pre_hook(hook) for m in names]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return {n: s for n, s in shapes.items() if calls.get(n) == 1}


def _enclosing(model: nn.Module, unit: ChannelUnit, inputs: dict[str, tuple[int, ...]]) -> str:
    """The smallest module holding every layer of ``unit`` that takes one tensor ('' = the whole model)."""
    layers = list(unit.out_layers) + list(unit.in_layers)
    parts = os.path.commonprefix([lay.split(".") for lay in layers])
    prefix = list(parts)
    while prefix:
        name = ".".join(prefix)
        if name in inputs and name not in layers:
            return name
        prefix.pop()
    return ""
