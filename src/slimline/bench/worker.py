"""One benchmark combination in a fresh process: ``python -m slimline.bench.worker SPEC.json OUT.json``.

SPEC keys: ``artifact`` (folder), ``runtime`` (registered name), ``options`` (runtime options),
``batch_size``, ``threads``, ``warmup``, ``min_runs``, ``min_seconds``, ``max_seconds``,
``plugins`` (modules to import first), ``seed``, ``input_shapes`` (``--input-shape``: full shapes per
input name, batch axes replaced by ``batch_size``; key ``""`` for the bare C,H,W form), ``trust``
(``slimline.models.trust_state()`` of the parent: the ``module:factory`` names a torch artifact may
import; none when absent);
or ``{"mode": "peak", "threads", "seconds"}`` for the GEMM peak.
Inputs come from the artifact's signature (:func:`bench_shapes`): a single float input is timed with
``session.run`` on a standard-normal batch (the image-classifier path), anything else with
``session.run_named`` on :meth:`~slimline.signature.Signature.example_feeds`.
OUT receives the measurement (see :mod:`slimline.bench`) with ``input_shapes`` (one sample's: batch
axis at 1), ``status`` (``ok`` | ``unavailable`` | ``error``), ``pid`` and ``peak_rss_mb``: this process's peak resident
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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimline.artifact import Artifact
    from slimline.signature import Signature


def named_shapes(sig: Signature, given: Mapping[str, Sequence[int]], batch: int) -> dict[str, list[int]]:
    """``--input-shape`` entries per input name with every batch axis set to ``batch``. The bare ``C,H,W``
    form (key ``""``, one sample without the batch axis) names the input of a single-input model."""
    from slimline.errors import SlimlineError
    from slimline.signature import BATCH

    out: dict[str, list[int]] = {}
    for name, dims in given.items():
        shape = [int(d) for d in dims]
        if name == "":
            if len(sig.inputs) != 1:
                raise SlimlineError(
                    f"--input-shape {'x'.join(map(str, shape))} names no input, but the model has inputs "
                    f"{', '.join(sig.input_names)}; give NAME=1x... once per input"
                )
            t = sig.inputs[0]
            if len(shape) == len(t.shape) - 1 and t.shape[:1] == (BATCH,):
                shape = [batch, *shape]
            name = t.name
        t = sig.input(name)
        if len(shape) == len(t.shape):
            shape = [batch if d == BATCH else v for d, v in zip(t.shape, shape, strict=True)]
        out[name] = shape
    return out


def classifier_shape(art: Artifact, sig: Signature, given: Mapping[str, Sequence[int]]) -> tuple[int, ...] | None:
    """One sample's shape (no batch axis) when the artifact is benched as today's image classifier: one input,
    ``meta.input_shape`` recorded and no ``--input-shape`` given. None otherwise."""
    shape = art.meta.get("input_shape")
    if shape and not given and len(sig.inputs) == 1:
        return tuple(int(s) for s in shape)
    return None


def bench_shapes(
    art: Artifact, given: Mapping[str, Sequence[int]] | None, batch: int
) -> tuple[Signature, dict[str, tuple[int, ...]]]:
    """The artifact's signature and the full shape (batch included) of every input at ``batch``.

    A dynamic dimension nothing fixes is a one-line error naming the ``--input-shape`` to give; so is a batch
    other than 1 for a model none of whose inputs has a batch axis."""
    from slimline.errors import SlimlineError
    from slimline.signature import BATCH, artifact_signature

    sig = artifact_signature(art)
    given = dict(given or {})
    chw = classifier_shape(art, sig, given)
    if chw is not None:
        return sig, {sig.inputs[0].name: (int(batch), *chw)}
    if batch != 1 and not any(BATCH in t.shape for t in sig.inputs):
        raise SlimlineError(
            f"{art.name} has no batch axis ({sig.describe()}); bench it with -b 1, or export it with a dynamic batch"
        )
    return sig, sig.resolve(named_shapes(sig, given, batch), batch=batch)


def sample_shapes(sig: Signature, shapes: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Each input's shape with its batch axis at 1: one sample, in the ``--input-shape NAME=...`` form."""
    from slimline.signature import BATCH

    out: dict[str, list[int]] = {}
    for t in sig.inputs:
        shape = [int(v) for v in shapes[t.name]]
        dims = list(t.shape) if len(t.shape) == len(shape) else [BATCH]  # the classifier path: batch first
        out[t.name] = [1 if i < len(dims) and dims[i] == BATCH else v for i, v in enumerate(shape)]
    return out


def int_high(art: Artifact) -> int:
    """Exclusive bound for example integer inputs: the smallest embedding table an ONNX model's inputs index."""
    from slimline.optimize.onnx_graph import INT_HIGH, safe_int_high

    return safe_int_high(art.model_file) if art.kind == "onnx" else INT_HIGH


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
    seed = int(spec.get("seed", 0))
    sig, shapes = bench_shapes(art, spec.get("input_shapes"), bs)
    t = sig.inputs[0] if sig.inputs else None
    fn: Any
    arg: Any
    if t is not None and len(sig.inputs) == 1 and np.dtype("float32" if t.dtype == "bfloat16" else t.dtype).kind == "f":
        # the image-classifier path: session.run on a standard-normal float32 batch
        fn, arg = session.run, np.random.default_rng(seed).standard_normal(shapes[t.name]).astype(np.float32)
    else:  # any other signature: named feeds (floats, ids in a range every embedding table takes, zero state)
        fn, arg = session.run_named, sig.example_feeds(shapes, seed, int_high=int_high(art))
    m = measure(
        fn,
        arg,
        int(spec.get("warmup", 5)),
        int(spec.get("min_runs", 20)),
        float(spec.get("min_seconds", 1.0)),
        spec.get("max_seconds"),
        batch_size=bs,
    )
    return {
        "status": "ok",
        **m,
        "load_seconds": load_s,
        "describe": session.describe(),
        "input_shapes": sample_shapes(sig, shapes),
    }


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
