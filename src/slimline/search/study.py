"""The search driver: an Optuna study in ``<run>/study.db`` whose trials are candidate artifacts.

Selection reads training/validation data only (the drop is measured on the validation slice of the training
split); the test split is read once, at the end, for the chosen artifact and the baseline.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimline.artifact import Artifact
from slimline.errors import Interrupted, RecipeError, SlimlineError
from slimline.fileio import write_json, write_text
from slimline.progress import console

STUDY_DB = "study.db"
STUDY_NAME = "slimline-optimize"
SEARCH_JSON = "search.json"
BEST_JSON = "best.json"
REPORT_JSON = "report.json"


def parse_budget(text: str | float | int | None) -> float | None:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h`` (None: no wall-clock limit)."""
    if text is None or isinstance(text, int | float):
        return None if text is None else float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise SlimlineError(f"budget {text!r} is not a duration; write e.g. 600, 600s, 10m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


PruneMethod = Literal["channel", "block", "block+channel"]


class SearchConfig(BaseModel):
    """Every option of ``slimline optimize`` (the CLI and a recipe's ``optimize:`` section take these)."""

    model_config = ConfigDict(extra="forbid")
    max_drop: float = Field(1.0, ge=0, description="largest allowed top-1 drop, points, on validation data")
    objective: Literal["throughput", "latency", "size"] = Field("throughput", description="what 'fastest' means")
    runtime: Literal["openvino", "onnxruntime"] = Field("openvino", description="runtime the artifact runs on")
    batch: int = Field(64, ge=1, description="batch size the speed is measured at")
    budget: float | None = Field(None, gt=0, description="wall-clock limit of one invocation, seconds")
    trials: int | None = Field(None, ge=1, description="stop once the study has this many finished trials")
    seed: int = 0
    prune: bool = Field(True, description="also search pruning (MACs targets) with a short recovery")
    prune_methods: list[PruneMethod] = Field(
        default_factory=lambda: list[PruneMethod](["channel"]),
        description="pruning methods searched (block: residual blocks out)",
    )
    proxy_epochs: int = Field(1, ge=0, description="recovery epochs of a pruned candidate during the search")
    full_epochs: int = Field(2, ge=0, description="recovery epochs of the chosen pruned candidate, at the end")
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = Field(None, description="dask: tcp://HOST:PORT of the scheduler")
    parallel: int = Field(1, ge=1, description="trials run at once (asked and told in batches of this size)")
    retries: int = Field(1, ge=0, description="dask: times a trial that raised is run again")
    threads: int | None = Field(None, ge=1, description="inference threads when measuring (default: all)")
    min_runs: int = Field(10, ge=1)
    min_seconds: float = Field(0.5, gt=0)
    sensitivity_samples: int = Field(256, ge=8)
    confirm: int = Field(
        3,
        ge=0,
        description="the best feasible trials re-measured together (3 fresh processes "
        "each) before the choice: one trial's figure is noisy on a busy machine",
    )
    fail_when: dict[str, Any] | None = Field(None, description="test hook: trials with these settings raise")

    @model_validator(mode="after")
    def _executor(self) -> SearchConfig:
        if self.executor == "dask" and not self.scheduler:
            raise ValueError("executor dask needs scheduler: tcp://HOST:PORT of a running Dask scheduler")
        if self.executor == "local" and self.scheduler:
            raise ValueError("scheduler is for executor dask; leave it out with executor local")
        return self


def search_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against :class:`SearchConfig` (``budget`` may be ``10m``); raises ValueError."""
    opts = dict(options)
    if "budget" in opts:
        try:
            opts["budget"] = parse_budget(opts["budget"])
        except SlimlineError as e:
            raise ValueError(str(e)) from None
    SearchConfig.model_validate(opts)
    return opts


def suggest(trial: Any, cfg: SearchConfig) -> dict[str, Any]:
    """The search space: pruning, quantization scheme, calibration and runtime options."""
    p: dict[str, Any] = {}
    p["prune"] = trial.suggest_categorical("prune", ["none", *cfg.prune_methods] if cfg.prune else ["none"])
    if p["prune"] != "none":
        p["prune_macs"] = trial.suggest_float("prune_macs", 0.2, 0.7, step=0.1)
        p["kd"] = trial.suggest_categorical("kd", [True, False])
    quants = ["fp32", "ort_int8", "nncf_int8", "ov_fp32"] if cfg.runtime == "openvino" else ["fp32", "ort_int8"]
    p["quant"] = trial.suggest_categorical("quant", quants)
    if p["quant"] in ("ort_int8", "nncf_int8"):
        p["calibration_size"] = trial.suggest_categorical("calibration_size", [100, 300])
    if p["quant"] == "ort_int8":
        p["per_channel"] = trial.suggest_categorical("per_channel", [True, False])
        p["activation_symmetric"] = trial.suggest_categorical("activation_symmetric", [False, True])
        p["calibration"] = trial.suggest_categorical("calibration", ["minmax", "percentile", "entropy"])
        p["accuracy_aware"] = trial.suggest_categorical("accuracy_aware", [False, True])
    if cfg.runtime == "openvino":
        p["rt_hint"] = trial.suggest_categorical("rt_hint", ["throughput", "latency"])
    return p


def starting_points(cfg: SearchConfig) -> list[dict[str, Any]]:
    """The first trials (before the sampler's own): int8 of the unpruned model and, when pruning is searched, of
    a half-MACs pruned one, with the throughput settings of the runtime."""
    quant = (
        {"quant": "nncf_int8", "calibration_size": 300, "rt_hint": "throughput"}
        if cfg.runtime == "openvino"
        else {
            "quant": "ort_int8",
            "calibration_size": 300,
            "per_channel": True,
            "activation_symmetric": False,
            "calibration": "minmax",
            "accuracy_aware": False,
        }
    )
    points = [{"prune": "none"} | quant]
    if cfg.prune:
        points.append({"prune": cfg.prune_methods[-1], "prune_macs": 0.5, "kd": True} | quant)
    return points


def _score(rec: dict[str, Any], objective: str) -> float:
    """Larger is better."""
    if objective == "latency":
        return -float((rec.get("latency_ms") or {}).get("median", float("inf")))
    if objective == "size":
        return -float(rec["size_bytes"])
    return float(rec["items_per_s"])


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records no other record beats on validation top-1, items/s and size at once (feasible or not)."""

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        ge = (
            a["val_top1"] >= b["val_top1"]
            and a["items_per_s"] >= b["items_per_s"]
            and a["size_bytes"] <= b["size_bytes"]
        )
        gt = a["val_top1"] > b["val_top1"] or a["items_per_s"] > b["items_per_s"] or a["size_bytes"] < b["size_bytes"]
        return ge and gt

    return [r for r in records if not any(dominates(o, r) for o in records if o is not r)]


def why_lost(rec: dict[str, Any], chosen: dict[str, Any], cfg: SearchConfig) -> str:
    """One line: why front member ``rec`` was not chosen over ``chosen``."""
    if rec["drop"] > cfg.max_drop:
        return f"drop {rec['drop']:.2f} points exceeds --max-drop {cfg.max_drop}"
    if rec["machine"]["kind"] != chosen["machine"]["kind"]:
        return f"measured on another kind of machine ({rec['machine']['kind']}): not compared"
    mine, theirs = _score(rec, cfg.objective), _score(chosen, cfg.objective)
    if mine >= theirs:  # the chosen trial's figure is from a later measurement than this one's
        return (
            f"{cfg.objective} {mine:.4g} in its search-time measurement, the chosen trial {chosen['number']} "
            f"{theirs:.4g} in a later one (confirmation or full recovery): measured apart, so not compared; the "
            "confirmation round, which measures the fastest candidates together, ranked the chosen trial first"
        )
    return (
        f"{cfg.objective} worse: {mine:.4g} vs {theirs:.4g} "
        f"(items/s {rec['items_per_s']:.0f} vs {chosen['items_per_s']:.0f}, size {rec['size_bytes']} bytes)"
    )


class Search:
    """One search run in ``run_dir``; see :func:`run_search`."""

    def __init__(self, run_dir: Path, cfg: SearchConfig, spec: dict[str, Any]) -> None:
        self.run_dir, self.cfg, self.spec = run_dir, cfg, spec
        self.trials_dir = run_dir / "trials"

    def open_study(self, resume: bool) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        db = self.run_dir / STUDY_DB
        if db.exists() and not resume:
            raise SlimlineError(
                f"{self.run_dir} already holds a study; add --resume to continue it or give another --output"
            )
        if resume and not db.exists():
            raise SlimlineError(f"{self.run_dir} holds no study to resume ({STUDY_DB} missing); drop --resume")
        sampler = optuna.samplers.TPESampler(seed=self.cfg.seed, n_startup_trials=10)
        fresh = not db.exists()
        study = optuna.create_study(
            storage=f"sqlite:///{db}",
            study_name=STUDY_NAME,
            sampler=sampler,
            directions=["maximize", "maximize"],
            load_if_exists=True,
        )
        if fresh:
            for start in starting_points(self.cfg):
                study.enqueue_trial(start)
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if t.state == TrialState.RUNNING:  # cut off by a crash or Ctrl-C: ran again from the start
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                self._write_record(t.number, t.params, {"state": "interrupted", "rerun": True})
                study.enqueue_trial(t.params)
        return study

    def _write_record(self, number: int, params: dict[str, Any], body: dict[str, Any]) -> None:
        write_json(self.trials_dir / f"{number:04d}.json", {"number": number, "params": params, **body})

    def records(self) -> list[dict[str, Any]]:
        import json

        out = []
        for f in sorted(self.trials_dir.glob("*.json")):
            d = json.loads(f.read_text())
            if d.get("state") == "complete":
                out.append(d)
        return out

    def choose(self, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The best feasible record among those measured on this study's kind of machine."""
        ok = [r for r in records if r["drop"] <= self.cfg.max_drop]
        if not ok:
            return None
        kinds = [r["machine"]["kind"] for r in ok]
        kind = max(set(kinds), key=kinds.count)
        return max((r for r in ok if r["machine"]["kind"] == kind), key=lambda r: _score(r, self.cfg.objective))

    def keep_best(self, best: dict[str, Any]) -> None:
        """Copy the best artifact so far to ``<run>/best`` (complete or not at all) and write best.json."""
        dest = self.run_dir / "best"
        tmp = self.run_dir / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(best["artifact"], tmp)
        old = self.run_dir / ".best.old"
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        write_json(
            self.run_dir / BEST_JSON,
            {
                k: best[k]
                for k in ("number", "params", "artifact", "runtime", "val_top1", "drop", "items_per_s", "size_bytes")
            }
            | {"copy": str(dest)},
        )

    def loop(self, study: Any) -> dict[str, Any]:
        """Ask, run and tell trials in batches until the trial count or the wall-clock budget is reached."""
        from optuna.trial import TrialState

        from slimline.search.executors import get_executor

        cfg, t0 = self.cfg, time.monotonic()
        durations: list[float] = []
        finished = lambda: len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))  # noqa: E731
        stop = "search space exhausted"
        ex = get_executor(cfg.executor, cfg.parallel, cfg.scheduler, cfg.retries)
        best = self.choose(self.records())
        try:
            while True:
                done = finished()
                if cfg.trials is not None and done >= cfg.trials:
                    stop = f"trial limit {cfg.trials} reached"
                    break
                elapsed = time.monotonic() - t0
                est = sum(durations) / len(durations) if durations else 0.0
                if cfg.budget is not None and elapsed + est > cfg.budget:
                    stop = f"wall-clock budget {cfg.budget:.0f}s reached"
                    break
                n = cfg.parallel if cfg.trials is None else min(cfg.parallel, cfg.trials - done)
                batch = []
                for _ in range(n):
                    trial = study.ask()
                    params = suggest(trial, cfg)
                    batch.append((trial, params, ex.submit(params, self.spec), time.monotonic()))
                for trial, params, fut, started in batch:
                    try:
                        rec = fut.result()
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001 - a failing trial is recorded and the search goes on
                        self._write_record(
                            trial.number,
                            params,
                            {
                                "state": "failed",
                                "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                            },
                        )
                        study.tell(trial, state=TrialState.FAIL)
                        console.print(f"trial {trial.number}: [red]failed[/] ({type(e).__name__}: {e})"[:300])
                        continue
                    durations.append(time.monotonic() - started)
                    trial.set_constraint("drop", rec["drop"] - cfg.max_drop)
                    trial.set_user_attr("machine", rec["machine"]["kind"])
                    rec |= {"number": trial.number, "params": params, "state": "complete"}
                    self._write_record(trial.number, params, rec)
                    study.tell(trial, [_score(rec, cfg.objective), rec["val_top1"]])
                    new_best = self.choose(self.records())
                    if new_best is not None and (best is None or new_best["number"] != best["number"]):
                        best = new_best
                        self.keep_best(best)
                    left = "" if cfg.budget is None else f", {max(0.0, cfg.budget - (time.monotonic() - t0)):.0f}s left"
                    best_txt = f"{best['items_per_s']:.0f} items/s (trial {best['number']})" if best else "none yet"
                    console.print(
                        f"trial {trial.number}: {rec['items_per_s']:.0f} items/s, drop {rec['drop']:.2f}; "
                        f"{finished()} done, best {best_txt}{left}"
                    )
        except KeyboardInterrupt:
            raise Interrupted(
                2,
                f"finished trials are kept in {self.run_dir / STUDY_DB}; run the same command with "
                "--resume to continue",
            ) from None
        finally:
            ex.close()
        return {"stopped": stop, "seconds": round(time.monotonic() - t0, 1)}


def _baseline(model: str, weights: str | None, data: dict[str, Any], run_dir: Path) -> Artifact:
    from slimline.bench.harness import is_artifact_dir

    if is_artifact_dir(model):
        return Artifact.load(model)
    dest = run_dir / "00_baseline"
    if is_artifact_dir(dest):
        return Artifact.load(dest)
    from slimline.context import DataBundle
    from slimline.pipeline import make_baseline
    from slimline.recipe import DataConfig, ModelSpec

    return make_baseline(ModelSpec(name=model, weights=weights), DataBundle(DataConfig.model_validate(data)).spec, dest)


def run_search(
    model: str | Path,
    data: str | dict[str, Any],
    output: str | Path,
    *,
    weights: str | Path | None = None,
    resume: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Search for the fastest artifact of ``model`` within ``max_drop`` top-1 points; returns the report.

    ``model``: a trained PyTorch artifact folder, or a zoo name / factory with ``weights``. ``data``: a dataset
    name or a recipe ``data:`` mapping (its training split's validation slice scores candidates). ``options``:
    :class:`SearchConfig` fields. ``resume=True`` continues the study in ``output`` (its saved options, with the
    budget and trial limit given now); a trial cut off by a crash is run again. ``output`` holds ``study.db``,
    ``trials/NNNN.json`` (one record per trial), ``best/`` (the best artifact so far, always complete),
    ``best.json`` and, at the end, ``report.json``/``report.md`` (Pareto front, chosen artifact, test figures).
    """
    import json

    from slimline.context import DataBundle
    from slimline.evaluate import evaluate_artifact
    from slimline.recipe import DataConfig

    run_dir = Path(output)
    saved = run_dir / SEARCH_JSON
    if resume and saved.exists():
        old = json.loads(saved.read_text())
        opts = old["config"] | {k: v for k, v in options.items() if k in ("budget", "trials") and v is not None}
        model, data, weights = old["model"], old["data"], old["weights"]
    else:
        opts = options
    if "budget" in opts:
        opts["budget"] = parse_budget(opts["budget"])
    try:
        cfg = SearchConfig.model_validate(opts)
    except ValidationError as e:
        from slimline.recipe import format_errors

        raise RecipeError(f"optimize: {format_errors(e)}") from None
    data_map = {"name": data} if isinstance(data, str) else dict(data)
    data_cfg = DataConfig.model_validate(data_map)
    run_dir.mkdir(parents=True, exist_ok=True)
    search = Search(run_dir, cfg, {})
    study = search.open_study(resume)
    base = _baseline(str(model), str(weights) if weights else None, data_cfg.model_dump(mode="json"), run_dir)
    bundle = DataBundle(data_cfg, cfg.seed)
    if not saved.exists():
        base_val = evaluate_artifact(base, bundle.val)
        write_json(
            saved,
            {
                "model": str(model),
                "weights": str(weights) if weights else None,
                "data": data_map,
                "config": cfg.model_dump(mode="json"),
                "baseline": str(base.path),
                "base_val_top1": base_val["top1"],
                "base_val_n": base_val["n"],
            },
        )
    info = json.loads(saved.read_text())
    search.spec = {
        "run_dir": str(run_dir.resolve()),
        "baseline": str(Path(base.path).resolve()),
        "data": data_cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "runtime": cfg.runtime,
        "batch": cfg.batch,
        "threads": cfg.threads,
        "max_drop": cfg.max_drop,
        "min_runs": cfg.min_runs,
        "min_seconds": cfg.min_seconds,
        "base_val_top1": info["base_val_top1"],
        "proxy_epochs": cfg.proxy_epochs,
        "sensitivity_samples": cfg.sensitivity_samples,
        "fail_when": cfg.fail_when,
    }
    console.print(
        f"[bold]slimline optimize[/] -> {run_dir} (baseline val top-1 {info['base_val_top1']:.2f}, "
        f"max drop {cfg.max_drop}, {cfg.executor} executor)"
    )
    loop = search.loop(study)
    return finish(search, study, loop, base, bundle)


def finish(search: Search, study: Any, loop: dict[str, Any], base: Artifact, bundle: Any) -> dict[str, Any]:
    """Recover the chosen pruned candidate in full, read the test split once, write report.json/report.md."""
    from slimline.evaluate import evaluate_artifact
    from slimline.search.trial import run_trial

    cfg, run_dir = search.cfg, search.run_dir
    records = search.records()
    chosen = search.choose(records)
    if chosen is not None and cfg.confirm > 1 and cfg.objective == "throughput":
        records = confirm(search, records, chosen)
        chosen = search.choose(records)
    report: dict[str, Any] = {
        "stopped": loop["stopped"],
        "seconds": loop["seconds"],
        "trials": len(study.trials),
        "complete": len(records),
        "failed": sum(1 for t in study.trials if t.state.name == "FAIL"),
        "config": cfg.model_dump(mode="json"),
        "chosen": None,
        "front": [],
    }
    if chosen is not None and chosen["params"].get("prune", "none") != "none" and cfg.full_epochs > cfg.proxy_epochs:
        console.print(f"recovering trial {chosen['number']} in full ({cfg.full_epochs} epochs)")
        try:
            full = run_trial(chosen["params"] | {"recovery_epochs": cfg.full_epochs}, search.spec)
        except SlimlineError as e:
            full = {"error": str(e)}
        report["full_recovery"] = full
        if "error" not in full and full["drop"] <= cfg.max_drop:
            chosen = full | {
                "number": chosen["number"],
                "params": chosen["params"] | {"recovery_epochs": cfg.full_epochs},
            }
            search.keep_best(chosen)
    if chosen is not None:
        test = evaluate_artifact(Artifact.load(chosen["artifact"]), bundle.test, runtime=cfg.runtime)
        base_test = evaluate_artifact(base, bundle.test)
        report["chosen"] = chosen | {
            "test_top1": test["top1"],
            "test_n": test["n"],
            "test_top1_ci95": test.get("top1_ci95"),
            "base_test_top1": base_test["top1"],
            "test_drop": base_test["top1"] - test["top1"],
        }
        front = pareto_front(records)
        report["front"] = [
            {
                "number": r["number"],
                "val_top1": r["val_top1"],
                "items_per_s": r["items_per_s"],
                "size_bytes": r["size_bytes"],
                "drop": r["drop"],
                "params": r["params"],
                "why_lost": None if r["number"] == chosen["number"] else why_lost(r, chosen, cfg),
            }
            for r in front
        ]
    write_json(run_dir / REPORT_JSON, report)
    write_text(run_dir / "report.md", report_markdown(report))
    console.print(f"search stopped: {loop['stopped']}; report: {run_dir / 'report.md'}")
    return report


def confirm(search: Search, records: list[dict[str, Any]], chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-measure the ``cfg.confirm`` fastest feasible trials of the chosen one's machine kind in one session
    (each the median of three fresh processes, in rounds); their ``items_per_s`` becomes that figure (the
    trial's own stays as ``trial_items_per_s``)."""
    from slimline.artifact import Artifact
    from slimline.bench.harness import BenchTarget, bench_targets

    cfg = search.cfg
    kind = chosen["machine"]["kind"]
    top = sorted(
        (r for r in records if r["drop"] <= cfg.max_drop and r["machine"]["kind"] == kind),
        key=lambda r: -r["items_per_s"],
    )[: cfg.confirm]
    console.print(f"re-measuring the {len(top)} fastest feasible trials together")
    for r in top:
        out = bench_targets(
            [BenchTarget.from_artifact(Artifact.load(r["artifact"]))],
            [r["runtime"]],
            [cfg.batch],
            threads=cfg.threads,
            min_runs=cfg.min_runs,
            min_seconds=cfg.min_seconds,
            warmup=3,
            peak=False,
            tuned_batch=False,
            repeats=3,
        )
        row = out["results"][0]
        if row.get("status") == "ok" and row.get("throughput"):
            r["trial_items_per_s"], r["items_per_s"] = r["items_per_s"], float(row["throughput"])
    return records


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the chosen artifact, then the Pareto front with why each member lost."""
    lines = [
        "# slimline optimize",
        "",
        f"Stopped: {report['stopped']} after {report['seconds']} s; "
        f"{report['complete']} trials complete, {report['failed']} failed.",
        "",
    ]
    c = report["chosen"]
    if c is None:
        lines.append("No trial stayed within the accuracy budget.")
    else:
        lo, hi = c.get("test_top1_ci95") or (float("nan"), float("nan"))
        lines += [
            f"Chosen: trial {c['number']} `{c['artifact']}` on {c['runtime']}: {c['items_per_s']:.0f} items/s, "
            f"{c['size_bytes']} bytes, validation drop {c['drop']:.2f}; test top-1 {c['test_top1']:.2f} "
            f"(95% CI {lo:.2f}-{hi:.2f}, n={c['test_n']}), test drop {c['test_drop']:.2f}.",
            "",
            "| trial | val top-1 | items/s | bytes | drop | why not chosen |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["front"]:
            lines.append(
                f"| {r['number']} | {r['val_top1']:.2f} | {r['items_per_s']:.0f} | {r['size_bytes']} | "
                f"{r['drop']:.2f} | {r['why_lost'] or 'chosen'} |"
            )
    return "\n".join(lines) + "\n"
