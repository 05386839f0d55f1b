"""One benchmark combination in a fresh process: ``python -m slimline.bench.worker SPEC.json OUT.json``.

SPEC keys: ``artifact`` (folder), ``runtime`` (registered name), ``options`` (runtime options),
``batch_size``, ``threads``, ``warmup``, ``min_runs``, ``min_seconds``, ``max_seconds``,
``plugins`` (modules to import first), ``seed``, ``trust`` (``slimline.models.trust_state()`` of the
parent: the ``module:factory`` names a torch artifact may import; none when absent);
or ``{"mode": "peak", "threads", "seconds"}`` for the GEMM peak.
OUT receives the measurement (see :mod:`slimline.bench`) with ``status``
(``ok`` | ``unavailable`` | ``error``), ``pid`` and ``peak_rss_mb``: this process's peak resident
memory (model, runtime and buffers, libraries included). On Linux it is ``VmHWM`` from
``/proc/self/status``, because ``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``execve`` and so
starts at the parent's peak (a 600 MB parent makes every worker report >= 600 MB); elsewhere
``ru_maxrss``. The caller sets the thread environment variables (``OMP_NUM_THREADS``...) before
this process starts.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys
import time
import traceback
from typing import Any


def _input_shape(art: Any) -> tuple[int, ...]:
    shape = art.meta.get("input_shape")
    if shape:
        return tuple(int(s) for s in shape)
    if art.kind == "onnx":
        import onnx

        dims = onnx.load(str(art.model_file), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims[1:]):
            return tuple(d.dim_value for d in dims[1:])
    from slimline.errors import SlimlineError

    raise SlimlineError(f"{art.path} does not say its input shape (meta.input_shape)")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (not inherited from the parent), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, kB elsewhere


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    for mod in spec.get("plugins") or []:
        importlib.import_module(mod)
    if spec.get("mode") == "peak":
        from slimline.bench.peak import measure_peak

        seconds, int8 = float(spec.get("seconds", 3.0)), bool(spec.get("int8", True))
        return {"status": "ok", **measure_peak(spec.get("threads"), seconds, int8)}
    import numpy as np

    from slimline.artifact import Artifact
    from slimline.bench.harness import measure
    from slimline.models import trust_from
    from slimline.runtimes import open_session

    art = Artifact.load(spec["artifact"])
    options = dict(spec.get("options") or {})
    if spec.get("threads") and "threads" not in options:
        options["threads"] = int(spec["threads"])
    t0 = time.perf_counter()
    with trust_from(spec.get("trust")):
        session = open_session(art, spec["runtime"], **options)
    load_s = time.perf_counter() - t0
    bs = int(spec["batch_size"])
    x = np.random.default_rng(int(spec.get("seed", 0))).standard_normal((bs, *_input_shape(art))).astype(np.float32)
    m = measure(
        session.run,
        x,
        int(spec.get("warmup", 5)),
        int(spec.get("min_runs", 20)),
        float(spec.get("min_seconds", 1.0)),
        spec.get("max_seconds"),
        batch_size=bs,
    )
    return {"status": "ok", **m, "load_seconds": load_s, "describe": session.describe()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if argv is None:  # started by run_in_subprocess: die with it even if it is killed outright
        from slimline.environment import die_with_parent

        die_with_parent(int(os.environ.get("SLIMLINE_PARENT_PID", "0") or 0))
    if len(args) != 2:
        print("usage: python -m slimline.bench.worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    import json

    spec = json.loads(open(args[0]).read())
    try:
        result = run_spec(spec)
    except Exception as e:  # noqa: BLE001 - every failure becomes a result, not a traceback
        from slimline.errors import RuntimeUnavailable, SlimlineError

        status = "unavailable" if isinstance(e, RuntimeUnavailable) else "error"
        msg = str(e) if isinstance(e, SlimlineError) else f"{type(e).__name__}: {e}"
        result = {"status": status, "error": msg}
        if not isinstance(e, SlimlineError):
            result["traceback"] = traceback.format_exc(limit=8)
    result["pid"] = os.getpid()
    result["peak_rss_mb"] = peak_rss_mb()
    from slimline.fileio import write_json

    write_json(args[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
