"""Gather what a run folder holds into one structure: stages, accuracy, sizes, benchmark rows, per-layer data.

Reads ``results.json`` and each stage's ``artifact.json``; everything that a step did not record
is skipped (or, for parameters and MACs, counted from the artifact itself when that is cheap).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.errors import SlimlineError
from slimline.report.records import as_dict, find_layer_errors, find_sensitivity, num
from slimline.report.stats import diff_ci

RESULTS_JSON = "results.json"
_DEFAULT_RUNTIME = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}


@dataclass
class Evaluation:
    stage_index: int
    split: str
    runtime: str | None
    top1: float
    n: int
    top5: float | None = None
    ci95: tuple[float, float] | None = None
    agreement: float | None = None  # top-1 agreement (percent) with the run's first artifact
    cosine: float | None = None


@dataclass
class Stage:
    """One artifact of the run with what is known about it."""

    index: int
    step: str
    name: str  # the artifact folder's name
    label: str  # what the step did, in words
    kind: str | None = None
    parent: str | None = None  # the artifact this one was made from
    record: dict[str, Any] = field(default_factory=dict)
    evaluations: list[Evaluation] = field(default_factory=list)
    params: int | None = None
    macs: int | None = None
    file_bytes: int | None = None
    bench: list[dict[str, Any]] = field(default_factory=list)
    change: dict[str, Any] | None = None  # accuracy change vs the reference, with its 95% interval

    @property
    def accuracy(self) -> Evaluation | None:
        """The evaluation that stands for this artifact: test split first, on its own runtime first."""
        if not self.evaluations:
            return None
        own = _DEFAULT_RUNTIME.get(self.kind or "")

        def rank(e: Evaluation) -> tuple[int, int, int]:
            return (e.split != "test", e.runtime not in (own, None), -e.stage_index)

        return min(self.evaluations, key=rank)

    def accuracy_on(self, runtime: str) -> Evaluation | None:
        """The evaluation through ``runtime`` if there is one (same split as :attr:`accuracy`), else that one."""
        main = self.accuracy
        if main is None:
            return None
        name = runtime.split(":")[0]  # "torch:channels_last" computes what "torch" does
        same = [e for e in self.evaluations if e.runtime == name and e.split == main.split]
        return same[-1] if same else main


@dataclass
class RunData:
    run_dir: Path
    results: dict[str, Any]
    stages: list[Stage]
    reference: str | None  # the artifact accuracy changes are measured against
    bench: list[dict[str, Any]]
    bench_info: dict[str, Any]
    sensitivity: list[dict[str, Any]]
    quant_errors: list[dict[str, Any]]
    notes: list[str]

    def stage(self, name: str | None) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def recipe(self) -> dict[str, Any]:
        r = self.results.get("recipe")
        return r if isinstance(r, dict) else {}


def step_label(step: str, config: dict[str, Any] | None) -> str:
    """Plain words for what a step did, e.g. ``unstructured pruning (50%)`` or ``int8 quantization (ptq)``."""
    cfg = config if isinstance(config, dict) else {}
    ratio = next((num(cfg[k]) for k in ("ratio", "sparsity", "amount", "target") if num(cfg.get(k)) is not None), None)
    if step == "prune":
        raw = cfg.get("method")
        methods = [str(m).lower() for m in (raw if isinstance(raw, list) else [raw] if raw else [])]
        words = {
            "magnitude": "unstructured",
            "unstructured": "unstructured",
            "l1": "unstructured",
            "channel": "channel",
            "structured": "channel",
            "filter": "channel",
            "block": "block",
        }
        text = " + ".join(dict.fromkeys(words.get(m, m) for m in methods)) + " pruning" if methods else "pruning"
        if ratio is not None and 0 < ratio < 1:
            return f"{text} ({ratio:.0%})"
        target = cfg.get("target")
        if isinstance(target, dict) and target:
            return f"{text} (target: " + ", ".join(f"{k} {v}" for k, v in target.items()) + ")"
        return text
    if step == "quantize":
        dtype = str(cfg.get("dtype") or cfg.get("precision") or "int8")
        extra = [str(cfg[k]) for k in ("method", "mode", "backend", "runtime", "engine") if isinstance(cfg.get(k), str)]
        return f"{dtype} quantization" + (f" ({', '.join(extra)})" if extra else "")
    return {
        "baseline": "baseline",
        "train": "trained",
        "distill": "distilled",
        "export_onnx": "exported to ONNX",
        "export_openvino": "exported to OpenVINO",
        "fuse": "fused",
        "tune": "runtime-tuned",
    }.get(step, step)


def load_results(run_dir: Path) -> dict[str, Any]:
    f = run_dir / RESULTS_JSON
    if not run_dir.is_dir():
        raise SlimlineError(
            f"{run_dir} is not a folder; give the run folder of `slimline run` (it holds {RESULTS_JSON})"
        )
    if not f.is_file():
        raise SlimlineError(
            f"{run_dir} has no {RESULTS_JSON}: is it a run folder? Run a recipe first: slimline run RECIPE"
        )
    try:
        data = json.loads(f.read_text())
    except ValueError as e:
        raise SlimlineError(f"{f} is not valid JSON ({e}); rerun the recipe to rewrite it") from e
    if not isinstance(data, dict):
        raise SlimlineError(f"{f} does not hold a run's results (expected a JSON object)")
    return data


def _evaluation(index: int, record: dict[str, Any]) -> Evaluation | None:
    m = record.get("metrics")
    if not isinstance(m, dict) or num(m.get("top1")) is None:
        return None
    n = m.get("n")
    ci = m.get("top1_ci95")
    ci95 = (float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci else None
    return Evaluation(
        stage_index=index,
        split=str(record.get("split", "test")),
        runtime=m.get("runtime") if isinstance(m.get("runtime"), str) else None,
        top1=float(m["top1"]),
        n=int(n) if isinstance(n, int | float) and not isinstance(n, bool) else 0,
        top5=num(m.get("top5")),
        ci95=ci95,
        agreement=num(m.get("top1_agreement")),
        cosine=num(m.get("logit_cosine")),
    )


def bench_rows(results: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Benchmark rows normalised to flat dicts, the benchmark's metadata, and notes on skipped rows.

    Follows the document of :mod:`slimline.bench` (``results`` with ``status``/``error``,
    ``latency_ms`` {median, p90, p99, min, std, mean}, ``throughput``, ``peak_rss_mb``,
    ``efficiency`` as a fraction of the fp32 peak, ``skipped`` pairs); raw per-call samples are
    used when a row has them (``samples_ms``). ``machine_load`` ({other_cpu_s, other_share, busy}:
    CPU time other processes took while the row was measured) is kept when present, else None.
    """
    bench = results.get("benchmark")
    if not isinstance(bench, dict):
        return [], {}, []
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for r in bench.get("results") or []:
        if not isinstance(r, dict):
            continue
        path = r.get("artifact_path")
        art = Path(str(path)).name if isinstance(path, str) and path else Path(str(r.get("artifact", "?"))).name
        runtime = str(r.get("runtime", "?"))
        lat = as_dict(r.get("latency_ms"))
        median = num(lat.get("median", lat.get("p50")))
        status = r.get("status", "ok")
        if status != "ok" or r.get("error") or median is None:
            why = r.get("error") or r.get("reason") or f"status {status}, no latency measured"
            notes.append(f"benchmark of {art} on {runtime} (batch {r.get('batch_size', '?')}) not measured: {why}")
            continue
        samples = next((r[k] for k in ("samples_ms", "latencies_ms", "samples") if isinstance(r.get(k), list)), None)
        bs = r.get("batch_size")
        rows.append(
            {
                "artifact": art,
                "runtime": runtime,
                "runtime_name": str(r.get("runtime_name") or runtime.split(":")[0]),
                "batch_size": int(b) if (b := num(bs)) is not None else 1,
                "median": median,
                "p90": num(lat.get("p90")),
                "p99": num(lat.get("p99")),
                "min": num(lat.get("min")),
                "mean": num(lat.get("mean")),
                "std": num(lat.get("std")),
                "max": num(lat.get("max")),
                "throughput": num(r.get("throughput")),
                "peak_rss_mb": num(r.get("peak_rss_mb")),
                "file_bytes": num(r.get("file_bytes")),
                "macs": num(r.get("macs")),
                "gflops": num(r.get("gflops")),
                "efficiency": num(r.get("efficiency")),
                "runs": r.get("runs"),
                "options": as_dict(r.get("options")),
                "samples": [float(x) for x in samples if num(x) is not None] if samples else None,
                "repeats": [float(x) for x in r["repeats"] if num(x) is not None]
                if isinstance(r.get("repeats"), list)
                else None,
                "machine_load": _machine_load(r.get("machine_load")),
            }
        )
        if rows[-1]["throughput"] is None and median > 0:
            rows[-1]["throughput"] = 1000.0 * rows[-1]["batch_size"] / median
    for sk in bench.get("skipped") or []:
        if isinstance(sk, dict):
            notes.append(
                f"benchmark of {sk.get('artifact', '?')} on {sk.get('runtime', '?')} skipped: "
                f"{sk.get('reason', 'no reason given')}"
            )
    info = {k: v for k, v in bench.items() if k not in ("results", "skipped")}
    return rows, info, notes


def _machine_load(load: Any) -> dict[str, Any] | None:
    if not isinstance(load, dict) or num(load.get("other_share")) is None:
        return None
    return {
        "other_cpu_s": num(load.get("other_cpu_s")),
        "other_share": num(load["other_share"]),
        "busy": bool(load.get("busy")),
    }


def _artifact_json(folder: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((folder / "artifact.json").read_text())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def _file_bytes(folder: Path, files: Any) -> int | None:
    if not isinstance(files, dict):
        return None
    paths = [folder / str(f) for f in files.values()]
    if not any(p.is_file() for p in paths):
        return None
    return sum(p.stat().st_size for p in paths if p.is_file())


def count_size(folder: Path) -> tuple[int | None, int | None, str | None]:
    """(parameters, MACs per sample, note) counted from the artifact; None where that is not possible."""
    from slimline.artifact import Artifact

    try:
        art = Artifact.load(folder)
    except SlimlineError as e:
        return None, None, str(e)
    shape = tuple(art.meta.get("input_shape") or ())
    params = macs = None
    try:
        if art.kind == "torch":
            return _count_torch(art, shape)
        elif art.kind == "onnx":
            import onnx

            model = onnx.load(str(art.model_file), load_external_data=False)
            params = sum(math.prod(i.dims) for i in model.graph.initializer)
            try:
                from slimline.bench.macs import onnx_macs
            except ImportError:
                onnx_macs = None  # type: ignore[assignment]
            if onnx_macs is not None:
                macs = onnx_macs(art.model_file)
        elif art.kind == "openvino":
            try:
                from slimline.bench.macs import openvino_macs

                macs = openvino_macs(art.model_file)
            except ImportError:
                pass
    except Exception as e:  # noqa: BLE001 - counting is best effort; the report says why it failed
        return params, macs, f"could not count the size of {folder.name}: {type(e).__name__}: {e}"
    return params, macs, None


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _count_torch(art: Any, shape: tuple[int, ...]) -> tuple[int | None, int | None, str | None]:
    """A torch artifact's size without running code it names: a zoo model is built (slimline's own code);
    for a ``module:factory`` model the parameters are counted from the weights file and MACs are left out."""
    import torch

    from slimline.artifact import load_torch
    from slimline.errors import ModelError
    from slimline.models import BUILTIN_FACTORIES, count_macs, count_params

    arch = json.loads((art.path / art.files["architecture"]).read_text())
    source = arch.get("source") if isinstance(arch, dict) else None
    if isinstance(source, dict) and ("zoo" in source or source.get("factory") in BUILTIN_FACTORIES):
        try:  # slimline's own code; a user factory nested inside is refused by load_torch
            model = load_torch(art)
            return count_params(model), (count_macs(model, shape) if shape else None), None
        except ModelError:
            pass
    state = torch.load(art.model_file, map_location="cpu", weights_only=True)
    params = sum(int(v.numel()) for k, v in state.items() if isinstance(v, torch.Tensor) and not k.endswith(_BUFFERS))
    factory = source.get("factory") if isinstance(source, dict) else None
    return (
        params,
        None,
        (
            f"MACs of {art.path.name} not counted: its model is built by code it names ({factory!r}), "
            "and slimline report never runs code named in a run folder"
        ),
    )


def collect(run_dir: str | Path, count_missing: bool = True) -> RunData:
    """Read a run folder. ``count_missing`` counts parameters/MACs of artifacts the benchmark did not."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    notes: list[str] = []
    if results.get("failed_step"):
        notes.append(f"the run stopped at step {results['failed_step']}: the stages after it are missing")
    raw = [s for s in results.get("stages") or [] if isinstance(s, dict)]
    rows, bench_info, bench_notes = bench_rows(results)
    notes += bench_notes

    stages: list[Stage] = []
    by_name: dict[str, Stage] = {}
    sensitivity, quant_errors = [], []
    current: Stage | None = None
    for s in raw:
        rec = as_dict(s.get("record"))
        step = str(s.get("step", rec.get("step", "?")))
        index = int(s["index"]) if num(s.get("index")) is not None else len(stages)
        art_name = s.get("artifact")
        if isinstance(art_name, str) and art_name:
            folder = run_dir / art_name
            meta = _artifact_json(folder)
            st = Stage(
                index=index,
                step=step,
                name=art_name,
                label=step_label(step, rec.get("config")),
                kind=str(meta["kind"]) if meta and "kind" in meta else None,
                parent=current.name if current else None,
                record=rec,
                file_bytes=_file_bytes(folder, meta.get("files")) if meta else None,
            )
            if meta is None:
                notes.append(f"{art_name}: no artifact.json in the run folder (moved or deleted?)")
            stages.append(st)
            by_name[art_name] = st
            current = st
        ev = _evaluation(index, rec)
        if ev is not None:
            target = by_name.get(str(rec.get("evaluated", ""))) or current
            if target is not None:
                target.evaluations.append(ev)
        step_dir = run_dir / f"{index:02d}_{step}"
        if step == "sensitivity" or "sensitivity" in rec:
            for sens in find_sensitivity(rec, step_dir if step_dir.is_dir() else None):
                sensitivity.append({"stage": f"{index:02d}_{step}"} | sens)
        if step == "quantize" or any(k in rec for k in ("sqnr", "layer_errors", "quant_error")):
            errs = find_layer_errors(rec, step_dir if step_dir.is_dir() else None)
            if errs:
                quant_errors.append({"stage": f"{index:02d}_{step}"} | errs)

    for r in rows:
        benched = by_name.get(r["artifact"])
        if benched is None:
            notes.append(f"benchmark row for {r['artifact']} does not match any stage of this run")
            continue
        benched.bench.append(r)
        if benched.macs is None and r.get("macs") is not None:
            benched.macs = int(r["macs"])
        if benched.file_bytes is None and r.get("file_bytes") is not None:
            benched.file_bytes = int(r["file_bytes"])
    if count_missing:
        for st in stages:
            if st.params is None or st.macs is None:
                params, macs, why = count_size(run_dir / st.name)
                st.params = st.params if st.params is not None else params
                st.macs = st.macs if st.macs is not None else macs
                if why:
                    notes.append(why)

    reference = next((s for s in stages if s.accuracy is not None), None)
    first = stages[0].name if stages else None
    if reference is not None:
        ref_acc = reference.accuracy
        assert ref_acc is not None
        for st in stages:
            acc = st.accuracy
            if st is reference or acc is None or acc.split != ref_acc.split:
                continue
            # the evaluate step measures top-1 agreement against the run's first artifact
            agreement = acc.agreement if reference.name == first else None
            st.change = diff_ci(acc.top1, acc.n, ref_acc.top1, ref_acc.n, agreement)
    return RunData(
        run_dir=run_dir,
        results=results,
        stages=stages,
        reference=reference.name if reference else None,
        bench=rows,
        bench_info=bench_info,
        sensitivity=sensitivity,
        quant_errors=quant_errors,
        notes=notes,
    )


def _q(x: Any) -> str:
    """Quote a command-line argument for a POSIX shell."""
    import shlex

    return shlex.quote(str(x))


def reproduce_commands(data: RunData) -> list[dict[str, str]]:
    """The commands that reproduce each figure of the report: ``[{"what", "command"}]``."""
    run = data.run_dir
    cmds = []
    recipe_file = run / "recipe.json"
    cmds.append(
        {
            "what": "the whole run (every stage, accuracy, benchmark, this report)",
            "command": f"slimline run {_q(recipe_file)} -o {_q(run)}",
        }
    )
    dcfg = as_dict(data.recipe.get("data"))
    dname = dcfg.get("name") or (None if dcfg.get("kwargs") else dcfg.get("factory"))
    for st in data.stages:
        for ev in st.evaluations:
            if not dname:
                break
            parts = ["slimline eval", "-m", _q(run / st.name), "-d", _q(dname), "--split", _q(ev.split)]
            if ev.split == "val":
                cmds.append(
                    {
                        "what": f"accuracy of {st.name} (validation slice)",
                        "command": f"slimline run {_q(recipe_file)} -o {_q(run)}  # the val slice is part of the run",
                    }
                )
                continue
            if ev.runtime:
                parts += ["--runtime", _q(ev.runtime)]
            if dcfg.get("test_limit"):
                parts += ["--limit", _q(dcfg["test_limit"])]
            if dcfg.get("data_dir"):
                parts += ["--data-dir", _q(dcfg["data_dir"])]
            if dcfg.get("preprocess"):
                parts += ["--preprocess", _q(json.dumps(dcfg["preprocess"], separators=(",", ":")))]
            if ev.agreement is not None and data.stages and data.stages[0].name != st.name:
                parts += ["--reference", _q(run / data.stages[0].name)]
            cmds.append({"what": f"accuracy of {st.name} on {ev.runtime or 'its runtime'}", "command": " ".join(parts)})
    if data.bench:
        cfg = data.bench_info.get("settings")
        if not isinstance(cfg, dict):
            cfg = as_dict(data.recipe.get("benchmark"))
        arts = sorted({r["artifact"] for r in data.bench})
        runtimes = sorted({r["runtime"] for r in data.bench})
        sizes = sorted({r["batch_size"] for r in data.bench})
        parts = ["slimline bench", *(_q(run / a) for a in arts)]
        parts += [f"--runtime {_q(rt)}" for rt in runtimes]
        parts += [f"--batch {b}" for b in sizes]  # the options of `slimline bench` (cli/bench.py)
        for key, flag in (
            ("threads", "--threads"),
            ("warmup", "--warmup"),
            ("min_runs", "--min-runs"),
            ("min_seconds", "--min-seconds"),
            ("max_seconds", "--max-seconds"),
        ):
            if isinstance(cfg, dict) and cfg.get(key) is not None:
                parts.append(f"{flag} {_q(cfg[key])}")
        if isinstance(cfg, dict) and isinstance(cfg.get("repeats"), int) and cfg["repeats"] > 1:
            parts.append(f"--repeats {cfg['repeats']}")
        cmds.append(
            {"what": "latency, throughput and memory of every benchmarked artifact", "command": " ".join(parts)}
        )
    cmds.append({"what": "this report", "command": f"slimline report {_q(run)}"})
    return cmds
