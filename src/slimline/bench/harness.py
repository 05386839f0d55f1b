"""The measuring loop, the per-combination subprocess, and the matrix of artifacts x runtimes x batches."""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.artifact import ARTIFACT_JSON, Artifact
from slimline.errors import SlimlineError
from slimline.models import trust_state

SCHEMA = "slimline.bench/1"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# --------------------------------------------------------------------------- measuring


def latency_stats(times_s: Sequence[float], batch_size: int, total_s: float) -> dict[str, Any]:
    """Latency summary (ms) of per-call times and throughput (items/s) over the measured wall time."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "latency_ms": {
            "median": float(np.median(ms)),
            "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)),
            "min": float(ms.min()),
            "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
            "mean": float(ms.mean()),
        },
        "throughput": batch_size * len(ms) / total_s if total_s > 0 else float("nan"),
        "runs": int(len(ms)),
        "seconds": float(total_s),
    }


def measure(
    fn: Callable[[Any], Any],
    batch: Any,
    warmup: int = 5,
    min_runs: int = 20,
    min_seconds: float = 1.0,
    max_seconds: float | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Call ``fn(batch)`` ``warmup`` times, then until both ``min_runs`` calls and ``min_seconds``.

    ``max_seconds`` (optional) stops the timed loop early even if ``min_runs`` is not reached (the
    result says ``capped``). The first warm-up call is timed on its own (``first_run_ms``: a
    compiling runtime pays its compile there). The garbage collector is paused while timing.
    Throughput is batch size x runs / the wall time of the timed loop. ``machine_load``: the CPU time
    other processes took during the timed loop (:func:`slimline.environment.other_load`; null off Linux).
    """
    from slimline.environment import cpu_load_sample, other_load

    bs = int(batch_size if batch_size is not None else len(batch))
    first_ms = None
    for i in range(warmup):
        t0 = time.perf_counter()
        fn(batch)
        if i == 0:
            first_ms = (time.perf_counter() - t0) * 1e3
    times: list[float] = []
    capped = False
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        clock = time.perf_counter
        load_before = cpu_load_sample()
        start = now = clock()
        while len(times) < min_runs or now - start < min_seconds:
            t0 = clock()
            fn(batch)
            now = clock()
            times.append(now - t0)
            if max_seconds is not None and now - start >= max_seconds:
                capped = len(times) < min_runs or now - start < min_seconds
                break
        total = now - start
        load = other_load(load_before, cpu_load_sample())
    finally:
        if gc_was_enabled:
            gc.enable()
    return latency_stats(times, bs, total) | {
        "first_run_ms": first_ms,
        "warmup": warmup,
        "capped": capped,
        "machine_load": load,
    }


# --------------------------------------------------------------------------- runtimes as given on the command line


@dataclass(frozen=True)
class RuntimeSpec:
    """``name[:option[=value],...]``, e.g. ``torch:channels_last`` or ``openvino:hint=throughput,streams=2``."""

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def parse(cls, text: str | RuntimeSpec) -> RuntimeSpec:
        if isinstance(text, RuntimeSpec):
            return text
        import yaml

        name, _, rest = text.strip().partition(":")
        options: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            options[key.strip().replace("-", "_")] = yaml.safe_load(value) if eq else True
        if not name:
            raise SlimlineError(f"runtime {text!r} has no name; write e.g. torch or torch:channels_last")
        return cls(text.strip(), name, options)


# --------------------------------------------------------------------------- one combination in its own process


def worker_env(threads: int | None) -> dict[str, str]:
    """The environment a benchmark worker process runs with: thread counts pinned, progress and telemetry off."""
    env = dict(os.environ)
    env["SLIMLINE_PROGRESS"] = "0"
    env.setdefault("NNCF_CI", "1")  # see slimline.runtimes.openvino.disable_telemetry
    if threads:
        for var in THREAD_ENV:
            env[var] = str(threads)
    src = str(Path(__file__).resolve().parents[2])  # the folder holding the slimline package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["SLIMLINE_PARENT_PID"] = str(os.getpid())  # the worker dies with this process (see die_with_parent)
    return env


TMP_PREFIX = "slimline-bench-"


def tmp_prefix() -> str:
    """``slimline-bench-<this pid>-``: temporary folders named so that :func:`clean_stale_tmp` can tell their owner."""
    return f"{TMP_PREFIX}{os.getpid()}-"


def run_in_subprocess(spec: dict[str, Any], timeout: float | None = 1800) -> dict[str, Any]:
    """Run ``python -m slimline.bench.worker`` on ``spec`` in a fresh process; its result as a dict.

    A crash, timeout or missing result becomes ``{"status": "error", "error": ...}``. The worker runs
    in its own process group and (on Linux) is killed when this process dies; if this process stops
    for any reason while waiting (an exception, Ctrl-C, SystemExit from a SIGTERM handler), the
    worker's whole group is killed and waited for. The temporary folder, named
    ``slimline-bench-<this pid>-...`` so that :func:`clean_stale_tmp` can tell, is removed on every
    way out.
    """
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix()))
    try:
        spec_path, out_path = tmp / "spec.json", tmp / "result.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "slimline.bench.worker", str(spec_path), str(out_path)]
        proc = subprocess.Popen(
            cmd,
            env=worker_env(spec.get("threads")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: it and whatever it starts can be killed as one
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return {"status": "error", "error": f"timed out after {timeout:g} s"}
        except BaseException:
            kill_group(proc)
            raise
        if out_path.exists():
            try:
                return json.loads(out_path.read_text())
            except json.JSONDecodeError as e:
                return {"status": "error", "error": f"unreadable worker result: {e}"}
        tail = "\n".join((stderr or stdout or "").strip().splitlines()[-8:])
        return {"status": "error", "error": f"worker exited with code {proc.returncode}: {tail}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc``'s process group (it was started with ``start_new_session``) and wait for it."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass


def clean_stale_tmp(tmp_dir: str | Path | None = None) -> list[Path]:
    """Remove ``slimline-bench-<pid>-*`` folders whose process is gone (a bench killed with SIGKILL)."""
    root = Path(tmp_dir or tempfile.gettempdir())
    removed = []
    for d in root.glob(f"{TMP_PREFIX}*"):
        pid = d.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if not d.is_dir() or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process
    return True


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` (so ``finally`` blocks run) if it would otherwise kill
    this process outright; only in the main thread and only over the default handler, restored after."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------- the matrix


@dataclass
class BenchTarget:
    """One model under test, in one or more forms (a model built on the fly has torch/onnx/openvino)."""

    name: str
    artifacts: dict[str, Artifact]  # kind -> artifact

    @classmethod
    def from_artifact(cls, art: Artifact, name: str | None = None) -> BenchTarget:
        return cls(name or art.name, {art.kind: art})

    @property
    def kinds(self) -> list[str]:
        return list(self.artifacts)


def distinct_names(targets: Sequence[BenchTarget]) -> list[BenchTarget]:
    """Targets whose names clash (two runs' ``01_quantize``) are named ``<run folder>/<artifact folder>``."""
    names = [t.name for t in targets]
    out = []
    for t in targets:
        if names.count(t.name) > 1 and t.artifacts:
            path = next(iter(t.artifacts.values())).path
            t = BenchTarget(f"{path.parent.name}/{path.name}", t.artifacts)
        out.append(t)
    return out


def _pick_kind(runtime: str, runtime_kinds: Sequence[str], target: BenchTarget, native_in_set: bool) -> str | None:
    """The runtime's native kind if the target has it; another kind it runs when the artifact names this runtime
    as its own (``meta.runtime``, e.g. a QDQ ONNX model quantized for OpenVINO) or when no target has the native one."""
    if runtime_kinds[0] in target.artifacts:
        return runtime_kinds[0]
    for k in runtime_kinds[1:]:
        art = target.artifacts.get(k)
        if art is not None and art.meta.get("runtime") == runtime:
            return k
    if native_in_set:
        return None
    return next((k for k in runtime_kinds[1:] if k in target.artifacts), None)


def _skip_reason(runtime: str, runtime_kinds: Sequence[str], target: BenchTarget) -> str:
    """Why ``_pick_kind`` gave no artifact of ``target`` to ``runtime``: one line for the skipped list."""
    kinds = "/".join(target.kinds)
    if any(k in target.artifacts for k in runtime_kinds):
        return (
            f"{runtime} runs this {kinds} artifact only when no benched artifact is {runtime_kinds[0]} "
            f"(one is, and is benched on {runtime} instead); bench this artifact alone to compare"
        )
    return f"{runtime} runs {'/'.join(runtime_kinds)} artifacts; this is {kinds}"


def _empty_result(target: BenchTarget, rt: RuntimeSpec, bs: int, art: Artifact | None) -> dict[str, Any]:
    return {
        "artifact": target.name,
        "artifact_path": str(art.path) if art else None,
        "kind": art.kind if art else None,
        "runtime": rt.label,
        "runtime_name": rt.name,
        "options": dict(rt.options),
        "batch_size": bs,
        "status": "ok",
        "error": None,
        "latency_ms": None,
        "throughput": None,
        "runs": None,
        "seconds": None,
        "first_run_ms": None,
        "load_seconds": None,
        "peak_rss_mb": None,
        "pid": None,
        "file_bytes": art.size_bytes() if art else None,
        "macs": None,
        "macs_method": None,
        "gflops": None,
        "efficiency": None,
        "describe": None,
        "machine_load": None,
        "input_shapes": None,
    }


def bench_targets(
    targets: Sequence[BenchTarget],
    runtimes: Sequence[str | RuntimeSpec],
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = None,
    warmup: int = 5,
    min_runs: int = 20,
    min_seconds: float = 1.0,
    max_seconds: float | None = None,
    peak: bool | float | dict[str, Any] = True,
    plugins: Sequence[str] = (),
    timeout: float | None = 1800,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    tuned_batch: bool = True,
    repeats: int = 1,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Benchmark every target x runtime x batch size, each in its own subprocess.

    ``repeats``: measure each combination in this many fresh processes and keep the one with the median
    throughput (the lower middle for an even count); ``repeats`` in the result lists every process's
    throughput. Timings vary more between processes than within one, and drift over minutes, so the
    processes run in rounds (every combination once, then every combination again) rather than one
    combination's back to back: a slow spell of the machine then touches every combination alike.
    ``on_result`` is called as each combination's last process ends.

    ``tuned_batch``: an artifact whose runtime config has a ``batch_size`` for a runtime (written by
    ``tune``) is also measured at that batch size (``"tuned_batch": true`` in its result).

    ``peak``: True measures the GEMM peak (in a subprocess, same threads) before and after the
    combinations and keeps the higher (a shared machine's load only lowers it); a number is taken
    as the fp32 peak in GFLOP/s, a dict as a previous ``measure_peak`` result, False skips it.
    ``plugins``: modules the worker imports first (they may register more runtimes).
    ``input_shapes``: per input name, a full shape whose batch axis each batch size replaces (``--input-shape``;
    key ``""``: one sample's C,H,W for a single-input model); see :func:`slimline.bench.worker.bench_shapes`.
    Returns the results document described in :mod:`slimline.bench`.
    """
    with sigterm_exits():
        clean_stale_tmp()
        return _bench_targets(
            targets,
            runtimes,
            batch_sizes,
            threads,
            warmup,
            min_runs,
            min_seconds,
            max_seconds,
            peak,
            plugins,
            timeout,
            on_result,
            tuned_batch,
            repeats,
            input_shapes,
        )


def _bench_targets(
    targets: Sequence[BenchTarget],
    runtimes: Sequence[str | RuntimeSpec],
    batch_sizes: Sequence[int],
    threads: int | None,
    warmup: int,
    min_runs: int,
    min_seconds: float,
    max_seconds: float | None,
    peak: bool | float | dict[str, Any],
    plugins: Sequence[str],
    timeout: float | None,
    on_result: Callable[[dict[str, Any]], None] | None,
    tuned_batch: bool,
    repeats: int,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    from slimline.environment import environment
    from slimline.runtimes import get_runtime

    for p in plugins:
        __import__(p)
    targets = distinct_names(targets)
    specs = [RuntimeSpec.parse(r) for r in runtimes]
    peak_doc = _peak(peak, threads, plugins, timeout)
    jobs: list[_Job] = []
    skipped: list[dict[str, str]] = []
    for rt in specs:
        cls = get_runtime(rt.name)
        ok, why = cls.available()
        native_in_set = any(cls.kinds[0] in t.artifacts for t in targets)
        for target in targets:
            kind = _pick_kind(rt.name, cls.kinds, target, native_in_set)
            if kind is None:
                reason = _skip_reason(rt.name, cls.kinds, target)
                skipped.append({"artifact": target.name, "runtime": rt.label, "reason": reason})
                continue
            art = target.artifacts[kind]
            tuned = _tuned_batch(art, rt.name) if tuned_batch else None
            batches = [int(b) for b in batch_sizes]
            if tuned is not None and tuned not in batches:
                batches.append(tuned)
            for bs in batches:
                res = _empty_result(target, rt, int(bs), art)
                res["tuned_batch"] = bs == tuned
                if not ok:
                    res |= {"status": "unavailable", "error": f"runtime {rt.name!r} is not usable here: {why}"}
                    jobs.append((res, None, target))
                else:
                    spec = {
                        "artifact": str(art.path),
                        "runtime": rt.name,
                        "options": rt.options,
                        "batch_size": int(bs),
                        "threads": threads,
                        "warmup": warmup,
                        "min_runs": min_runs,
                        "min_seconds": min_seconds,
                        "max_seconds": max_seconds,
                        "plugins": list(plugins),
                        "trust": trust_state(),  # which factories a torch artifact may import (see worker)
                        "input_shapes": {k: [int(d) for d in v] for k, v in (input_shapes or {}).items()},
                    }
                    jobs.append((res, spec, target))
    results = _run_rounds(jobs, max(1, repeats), timeout, on_result)
    if peak is True and peak_doc is not None and any(r["status"] == "ok" for r in results):
        after = _peak(True, threads, plugins, timeout)
        if after and (after.get("fp32_gflops") or 0) > (peak_doc.get("fp32_gflops") or 0):
            after["before"] = peak_doc.get("fp32_gflops")
            peak_doc = after
        else:
            peak_doc["after"] = after.get("fp32_gflops") if after else None
    peak_gflops = peak_doc.get("fp32_gflops") if peak_doc else None
    for res in results:
        if res.get("gflops") and peak_gflops:
            res["efficiency"] = res["gflops"] / peak_gflops
    env = environment() | {"threads": threads}
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "environment": env,
        "settings": {
            "runtimes": [r.label for r in specs],
            "batch_sizes": [int(b) for b in batch_sizes],
            "threads": threads,
            "warmup": warmup,
            "min_runs": min_runs,
            "min_seconds": min_seconds,
            "max_seconds": max_seconds,
            "repeats": max(1, repeats),
            "input_shapes": {k: [int(d) for d in v] for k, v in (input_shapes or {}).items()},
        },
        "peak_gflops": peak_gflops,
        "peak": peak_doc,
        "results": results,
        "skipped": skipped,
    }


_Job = tuple[dict[str, Any], dict[str, Any] | None, BenchTarget]  # (result, worker spec or None: not run, target)


def _run_rounds(
    jobs: list[_Job], repeats: int, timeout: float | None, on_result: Callable[[dict[str, Any]], None] | None
) -> list[dict[str, Any]]:
    """Run every job's worker ``repeats`` times in rounds; a job whose process failed is not run again.

    Returns the results in job order, each from its median process, with MACs and GFLOP/s filled in.
    """
    outs: list[list[dict[str, Any]]] = [[] for _ in jobs]
    macs_cache: dict[str, tuple[int | None, str]] = {}
    done: set[int] = set()
    for round_ in range(repeats):
        for i, (res, spec, target) in enumerate(jobs):
            if i in done:
                continue
            if spec is not None:
                outs[i].append(run_in_subprocess(spec, timeout))
            if spec is not None and round_ < repeats - 1 and outs[i][-1].get("status") == "ok":
                continue  # more rounds to come
            done.add(i)
            if outs[i]:
                out = median_process(outs[i])
                res |= {k: v for k, v in out.items() if k in res or k in ("traceback", "repeats")}
            if res["status"] == "ok":
                if target.name not in macs_cache:
                    macs_cache[target.name] = _target_macs(target)
                macs, how = macs_cache[target.name]
                res["macs"], res["macs_method"] = macs, how
                if macs and res["throughput"]:
                    res["gflops"] = 2.0 * macs * res["throughput"] / 1e9
            if on_result is not None:
                on_result(res)
    return [res for res, _, _ in jobs]


def median_process(outs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The worker result standing for several processes of one combination: the median by throughput.

    A failed process makes the combination fail (its error is kept). With more than one process the
    result gains ``repeats``: every process's throughput, in the order they ran.
    """
    if len(outs) == 1:
        return outs[0]
    for o in outs:
        if o.get("status") != "ok":
            return o
    ranked = sorted(outs, key=lambda o: o["throughput"])
    return {**ranked[(len(ranked) - 1) // 2], "repeats": [o["throughput"] for o in outs]}


def _tuned_batch(art: Artifact | None, runtime: str) -> int | None:
    """The batch size ``tune`` chose for ``runtime`` on this artifact, if any."""
    if art is None:
        return None
    bs = art.meta.get("runtime_config", {}).get(runtime, {}).get("batch_size")
    return int(bs) if isinstance(bs, int) and bs >= 1 else None


def _target_macs(target: BenchTarget) -> tuple[int | None, str]:
    from slimline.bench.macs import artifact_macs

    for kind in ("torch", "onnx", "openvino"):  # the PyTorch count is the most direct
        if kind in target.artifacts:
            macs, how = artifact_macs(target.artifacts[kind])
            if macs is not None:
                return macs, how
    return None, "unknown"


def _peak(
    peak: bool | float | dict[str, Any], threads: int | None, plugins: Sequence[str], timeout: float | None
) -> dict[str, Any] | None:
    if peak is False or peak is None:
        return None
    if isinstance(peak, dict):
        return peak
    if isinstance(peak, int | float) and not isinstance(peak, bool):
        return {"fp32_gflops": float(peak), "int8_gops": None, "method": "given"}
    out = run_in_subprocess({"mode": "peak", "threads": threads, "seconds": 3.0, "plugins": list(plugins)}, timeout)
    if out.get("status") != "ok":
        return {"fp32_gflops": None, "int8_gops": None, "error": out.get("error")}
    return {k: v for k, v in out.items() if k not in ("status", "error", "pid", "peak_rss_mb")}


def bench_artifacts(
    paths: Sequence[str | Path | Artifact],
    runtimes: Sequence[str | RuntimeSpec],
    batch_sizes: Sequence[int] = (1,),
    **kwargs: Any,
) -> dict[str, Any]:
    """Benchmark a list of artifact folders (each its own target); kwargs as :func:`bench_targets`."""
    targets = [BenchTarget.from_artifact(p if isinstance(p, Artifact) else Artifact.load(p)) for p in paths]
    return bench_targets(targets, runtimes, batch_sizes, **kwargs)


def is_artifact_dir(path: str | Path) -> bool:
    """Whether ``path`` is an artifact folder (holds an artifact.json)."""
    return Path(path).is_dir() and (Path(path) / ARTIFACT_JSON).exists()
