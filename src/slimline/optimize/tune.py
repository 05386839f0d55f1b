"""Search runtime settings (threads, inter-op threads, layout, fusion, OpenVINO streams/hint) and
batch size for a target, and write the best into the artifact's ``runtime_config``.

Targets:

- ``latency``: the lowest median latency at batch 1.
- ``throughput``: the highest items/s among settings whose p99 latency per call stays within
  ``p99_ms`` (no bound: the highest items/s), over the batch sizes asked for; the defaults it must
  beat are the runtime's own settings at the smallest of those batch sizes (so ``batch_sizes=[64]``
  tunes threads and streams for batch 64 and compares with the defaults at batch 64).

The search is a coordinate search (one option at a time, the others held at the best so far;
``exhaustive=True`` tries the whole grid). The runtime's defaults are always measured, every
comparison is made in the same time window (candidates take turns, round after round, so load
from other processes hits them alike), and a final round measures the best three settings seen
against the defaults in one time window: the defaults stay unless a setting beats them there by
``min_gain`` (and, for throughput, keeps within the p99 bound), so tuning never makes a runtime
slower than its defaults, as far as the measurement can tell.

Options a runtime does not name in its ``load`` signature are never searched, so the space follows
the runtimes as they are. Results go to ``meta["runtime_config"][runtime]`` (plus ``batch_size``),
which ``open_session`` (and so bench, eval and predict) merges into every load.
"""

from __future__ import annotations

import inspect
import itertools
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.artifact import Artifact, ArtifactWriter
from slimline.errors import SlimlineError

TARGETS = ("latency", "throughput")
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)


def thread_ladder(cpus: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the CPU count, and the CPU count itself."""
    n = cpus or os.cpu_count() or 1
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    return [*out, n]


def runtime_parameters(runtime: str) -> dict[str, Any]:
    """Options the runtime's ``load`` names, with their defaults."""
    from slimline.runtimes import get_runtime

    sig = inspect.signature(get_runtime(runtime).load)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if name not in ("self", "artifact") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def search_axes(
    runtime: str,
    artifact: Artifact,
    target: str,
    threads: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """(axis -> values to try, the defaults) for ``runtime``; the defaults are always among the values."""
    params = runtime_parameters(runtime)
    ladder = list(threads) if threads else thread_ladder()
    axes: dict[str, list[Any]] = {}
    if target == "throughput":
        # the batch sizes asked for, and only those; searched first, since the best threads and
        # streams depend on the batch; the defaults are measured at the smallest of them
        batches = sorted({int(b) for b in batch_sizes})
        if not batches or batches[0] < 1:
            raise SlimlineError(f"tune needs batch sizes >= 1 to search for throughput, got {list(batch_sizes)}")
        axes["batch_size"] = batches
    if "threads" in params:
        axes["threads"] = [None, *ladder]
    if "inter_op_threads" in params:
        axes["inter_op_threads"] = [None, 1, *([2] if max(ladder) >= 4 else [])]
    if "channels_last" in params and len(artifact.meta.get("input_shape") or [1, 1, 1]) == 3:
        axes["channels_last"] = [False, True]
    if "fuse" in params and artifact.kind == "torch":
        axes["fuse"] = [False, True]
    if "hint" in params and target == "throughput":
        axes["hint"] = ["latency", "throughput"]
    if "streams" in params and target == "throughput":
        axes["streams"] = [None, *sorted({1, 2, max(1, max(ladder) // 2)})]
    defaults = {k: params.get(k) for k in axes}
    if "batch_size" in axes:
        defaults["batch_size"] = axes["batch_size"][0]
    for k, v in defaults.items():
        if v not in axes[k]:
            axes[k].insert(0, v)
    return axes, defaults


def _key(opts: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(opts.items()))


@dataclass
class _Entry:
    options: dict[str, Any]  # runtime options and batch_size
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def batch(self) -> int:
        return int(self.options.get("batch_size", 1))


@dataclass
class TuneResult:
    runtime: str
    target: str
    p99_ms: float | None
    defaults: dict[str, Any]
    best: dict[str, Any]
    best_stats: dict[str, Any]
    default_stats: dict[str, Any]
    kept_defaults: bool
    trials: list[dict[str, Any]]
    note: str = ""

    def runtime_config(self) -> dict[str, Any]:
        """What goes into ``meta["runtime_config"][runtime]``: the non-None settings and batch_size."""
        cfg = {k: v for k, v in self.best.items() if v is not None}
        return cfg if "batch_size" in cfg else {**cfg, "batch_size": 1}

    def gain(self) -> float | None:
        """Best over defaults: latency ratio (default/best) or throughput ratio (best/default)."""
        b, d = self.best_stats, self.default_stats
        if self.target == "latency":
            return d["median_ms"] / b["median_ms"] if b.get("median_ms") else None
        return b["throughput"] / d["throughput"] if d.get("throughput") else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "target": self.target,
            "p99_ms": self.p99_ms,
            "defaults": self.defaults,
            "best": self.best,
            "best_stats": self.best_stats,
            "default_stats": self.default_stats,
            "kept_defaults": self.kept_defaults,
            "gain_vs_defaults": self.gain(),
            "runtime_config": self.runtime_config(),
            "trials": self.trials,
            "note": self.note,
        }


def _stats(e: _Entry) -> dict[str, Any]:
    if e.error or not e.times:
        return {"error": e.error or "not measured"}
    ms = np.asarray(e.times) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput": e.batch * len(ms) / (ms.sum() / 1e3),
        "calls": len(ms),
        "batch_size": e.batch,
    }


class _Tuner:
    def __init__(
        self,
        artifact: Artifact,
        runtime: str,
        target: str,
        p99_ms: float | None,
        rounds: int,
        round_seconds: float,
        warmup: int,
        seed: int,
        on_trial: Callable[[str], None] | None,
    ) -> None:
        import torch

        self.artifact, self.runtime, self.target, self.p99_ms = artifact, runtime, target, p99_ms
        self.rounds, self.round_seconds, self.warmup = rounds, round_seconds, warmup
        self.rng = np.random.default_rng(seed)
        self.shape = tuple(int(s) for s in artifact.meta["input_shape"])
        self.sessions: dict[tuple[tuple[str, Any], ...], Any] = {}
        self.inputs: dict[int, np.ndarray] = {}
        self.torch_threads = torch.get_num_threads()  # the process default, restored between torch candidates
        self.on_trial = on_trial
        self.trials: list[dict[str, Any]] = []

    def _session(self, opts: dict[str, Any]) -> Any:
        from slimline.runtimes import open_session

        runtime_opts = {k: v for k, v in opts.items() if k != "batch_size"}
        key = _key(runtime_opts)
        if key not in self.sessions:
            self._process_state(runtime_opts)
            self.sessions[key] = open_session(self.artifact, self.runtime, **runtime_opts)
        return self.sessions[key]

    def _process_state(self, opts: dict[str, Any]) -> None:
        """PyTorch's thread count is per process, not per session: set it before each torch candidate."""
        if self.runtime.startswith("torch"):
            import torch

            torch.set_num_threads(int(opts.get("threads") or self.torch_threads))

    def _input(self, batch: int) -> np.ndarray:
        if batch not in self.inputs:
            self.inputs[batch] = self.rng.standard_normal((batch, *self.shape)).astype(np.float32)
        return self.inputs[batch]

    def measure(self, group: list[dict[str, Any]], stage: str) -> list[_Entry]:
        """Time every option set of ``group`` in interleaved rounds; one _Entry per option set."""
        entries = [_Entry(dict(o)) for o in group]
        calls: dict[int, int] = {}
        for i, e in enumerate(entries):
            try:
                sess = self._session(e.options)
                self._process_state(e.options)
                x = self._input(e.batch)
                t = 0.0
                for _ in range(max(1, self.warmup)):
                    t0 = time.perf_counter()
                    sess.run(x)
                    t = time.perf_counter() - t0
                calls[i] = int(min(50, max(1, self.round_seconds / max(t, 1e-6))))
            except Exception as ex:  # noqa: BLE001 - a candidate that fails is recorded, not fatal
                e.error = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
        for r in range(self.rounds):
            order = list(range(len(entries)))
            order = order[r % len(order) :] + order[: r % len(order)] if order else order
            for i in order:
                e = entries[i]
                if e.error:
                    continue
                sess = self._session(e.options)
                self._process_state(e.options)
                x = self._input(e.batch)
                for _ in range(calls[i]):
                    t0 = time.perf_counter()
                    sess.run(x)
                    e.times.append(time.perf_counter() - t0)
        for e in entries:
            st = _stats(e)
            self.trials.append({"stage": stage, "options": e.options, **st})
            if self.on_trial:
                self.on_trial(f"{self.runtime} {stage} {e.options} -> {self._describe(st)}")
        return entries

    def _describe(self, st: dict[str, Any]) -> str:
        if "error" in st:
            return f"error: {st['error']}"
        return f"{st['median_ms']:.2f} ms median, p99 {st['p99_ms']:.2f} ms, {st['throughput']:.1f}/s"

    def score(self, e: _Entry) -> float:
        """Higher is better; -inf for failures and for settings over the p99 bound."""
        st = _stats(e)
        if "error" in st:
            return float("-inf")
        if self.target == "latency":
            return -st["median_ms"]
        if self.p99_ms is not None and st["p99_ms"] > self.p99_ms:
            return float("-inf")
        return st["throughput"]

    def restore(self) -> None:
        """Give the process back its PyTorch thread count."""
        if self.runtime.startswith("torch"):
            import torch

            torch.set_num_threads(self.torch_threads)

    def keep_only(self, *opts: dict[str, Any]) -> None:
        keep = {_key({k: v for k, v in o.items() if k != "batch_size"}) for o in opts}
        for k in list(self.sessions):
            if k not in keep:
                del self.sessions[k]


def tune_runtime(
    artifact: Artifact,
    runtime: str,
    target: str = "latency",
    p99_ms: float | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    threads: Sequence[int] | None = None,
    rounds: int = 3,
    round_seconds: float = 0.2,
    warmup: int = 2,
    min_gain: float = 0.02,
    exhaustive: bool = False,
    seed: int = 0,
    on_trial: Callable[[str], None] | None = None,
    finalists_n: int = 3,
) -> TuneResult:
    """Search one runtime's settings for ``target``; see the module docstring."""
    if target not in TARGETS:
        raise SlimlineError(f"tune target must be one of {TARGETS}, not {target!r}")
    if not artifact.meta.get("input_shape"):
        raise SlimlineError(f"{artifact.path} does not record its input shape (meta.input_shape); cannot make inputs")
    axes, defaults = search_axes(runtime, artifact, target, threads, batch_sizes)
    tuner = _Tuner(artifact, runtime, target, p99_ms, rounds, round_seconds, warmup, seed, on_trial)
    try:
        current = {
            **defaults,
            **{k: v for k, v in artifact.meta.get("runtime_config", {}).get(runtime, {}).items() if k in axes},
        }
        pool: list[_Entry] = []
        if exhaustive:
            grid = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]
            pool = tuner.measure(grid, "grid")
        else:
            best = dict(defaults)
            first = True
            for axis, values in axes.items():
                group = [{**best, axis: v} for v in values]
                if best not in group:
                    group.append(dict(best))
                if first and current != defaults and current not in group:
                    group.append(dict(current))  # the artifact's present config competes too
                first = False
                entries = tuner.measure(group, f"axis {axis}")
                pool += entries
                scores = [tuner.score(e) for e in entries]
                inc = next(i for i, e in enumerate(entries) if e.options == best)
                top = int(np.argmax(scores))
                if scores[top] > scores[inc]:
                    best = dict(entries[top].options)
                tuner.keep_only(best, defaults)
        # the best few settings seen, then a head-to-head with the defaults in one time window
        finalists: list[dict[str, Any]] = []
        for e in sorted(pool, key=tuner.score, reverse=True):
            if tuner.score(e) == float("-inf") or len(finalists) == finalists_n:
                break
            if e.options != defaults and e.options not in finalists:
                finalists.append(dict(e.options))
        confirm = tuner.measure([*finalists, dict(defaults)], "confirm")
        default_e, contenders = confirm[-1], confirm[:-1]
        best_e = max(contenders, key=tuner.score) if contenders else default_e
        s_best, s_def = tuner.score(best_e), tuner.score(default_e)
        better = (
            bool(contenders) and s_best > s_def and (s_def == float("-inf") or (s_best - s_def) > min_gain * abs(s_def))
        )
        note = ""
        if better:
            kept, best = False, dict(best_e.options)
        else:
            kept, best, best_e = True, dict(defaults), default_e
            if contenders:
                note = f"no setting was {min_gain:.0%} better than the defaults in the final comparison"
        if target == "throughput" and tuner.score(best_e) == float("-inf") and p99_ms is not None:
            note = f"no setting kept p99 latency within {p99_ms} ms; defaults kept"
    finally:
        tuner.keep_only()
        tuner.restore()
    return TuneResult(
        runtime, target, p99_ms, defaults, best, _stats(best_e), _stats(default_e), kept, tuner.trials, note
    )


def alternate(
    fns: dict[str, Callable[[], Any]], rounds: int = 5, warmup: int = 1, calls: int = 1
) -> dict[str, list[float]]:
    """Time each zero-argument function in turn, ``rounds`` times (``calls`` each), after ``warmup`` calls.

    Taking turns puts every variant under the same background load, which is what makes ratios
    measured on a busy machine meaningful. Returns seconds per call, per variant.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(calls):
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    return times


def medians_ms(times: dict[str, list[float]]) -> dict[str, float]:
    """Median of each list of per-call seconds, in milliseconds."""
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def default_runtimes(artifact: Artifact) -> list[str]:
    """Available runtimes that run this artifact's kind, torch-compile excepted (minutes of compiling)."""
    from slimline.runtimes import get_runtime, runtime_names

    out = []
    for name in runtime_names():
        cls = get_runtime(name)
        if artifact.kind in cls.kinds and name != "torch-compile" and cls.available()[0]:
            out.append(name)
    return out


def tune(
    artifact: Artifact,
    runtimes: Sequence[str] | None = None,
    target: str = "latency",
    p99_ms: float | None = None,
    **kwargs: Any,
) -> dict[str, TuneResult]:
    """Tune every runtime in ``runtimes`` (default: :func:`default_runtimes`)."""
    names = list(runtimes) if runtimes else default_runtimes(artifact)
    if not names:
        raise SlimlineError(f"no available runtime runs {artifact.kind} artifacts here; see `slimline list runtimes`")
    return {rt: tune_runtime(artifact, rt, target, p99_ms, **kwargs) for rt in names}


def tuned_meta(meta: dict[str, Any], results: dict[str, TuneResult]) -> dict[str, Any]:
    """``meta`` with each runtime's config replaced by the tuned settings (other keys of it kept)."""
    out = dict(meta)
    cfg = {k: dict(v) for k, v in meta.get("runtime_config", {}).items()}
    for rt, res in results.items():
        searched = set(res.defaults)
        kept = {k: v for k, v in cfg.get(rt, {}).items() if k not in searched}
        cfg[rt] = {**kept, **res.runtime_config()}
    out["runtime_config"] = cfg
    return out


def copy_artifact(
    artifact: Artifact, dest: str | Path, meta: dict[str, Any], lineage: list[dict[str, Any]]
) -> Artifact:
    """A copy of ``artifact``'s files in ``dest`` with new meta and lineage."""
    with ArtifactWriter(dest, artifact.kind, meta, lineage) as w:
        for role, name in artifact.files.items():
            shutil.copy2(artifact.path / name, w.add(role, name))
    assert w.artifact is not None
    return w.artifact


def summary(results: dict[str, TuneResult]) -> str:
    parts = []
    for rt, r in results.items():
        g = r.gain()
        cfg = ", ".join(f"{k}={v}" for k, v in r.runtime_config().items()) or "defaults"
        parts.append(f"{rt}: {cfg}" + (f" ({g:.2f}x vs defaults)" if g else ""))
    return "; ".join(parts)
