"""``slimline optimize`` (slimline.search): the study lives in SQLite in the run folder and resumes; the trial and
wall-clock budgets stop it; a trial that raises is recorded as failed and the search goes on (the Dask executor:
test_search_dask.py).

Tiny model (small_cnn, digits), no pruning, ONNX Runtime: each trial is an int8/fp32 variant of one cached export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import slimline
from slimline.artifact import Artifact
from slimline.context import DataBundle
from slimline.errors import SlimlineError
from slimline.pipeline import make_baseline
from slimline.recipe import DataConfig, ModelSpec
from slimline.search import parse_budget, run_search

pytest.importorskip("optuna")

DATA = {"name": "digits", "val_size": 200}
FAST = {
    "runtime": "onnxruntime",
    "prune": False,
    "min_runs": 3,
    "min_seconds": 0.05,
    "threads": 1,
    "max_drop": 5.0,
    "confirm": 0,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """small_cnn trained briefly on digits (training split only)."""
    root = tmp_path_factory.mktemp("search")
    base = make_baseline(ModelSpec(name="small_cnn"), DataBundle(DataConfig(name="digits")).spec, root / "00_baseline")
    return slimline.apply_step(
        "train", base, root / "01_train", data=DATA, epochs=2, lr=0.05, batch_size=64, augment=False
    )


def _records(run: Path) -> dict[int, dict[str, Any]]:
    return {int(f.stem): json.loads(f.read_text()) for f in sorted((run / "trials").glob("*.json"))}


def test_parse_budget() -> None:
    assert parse_budget("10m") == 600 and parse_budget("1.5h") == 5400 and parse_budget("90") == 90
    with pytest.raises(SlimlineError, match="not a duration"):
        parse_budget("ten minutes")


def test_failed_trial_is_recorded_and_search_goes_on_then_resumes(trained: Artifact, tmp_path: Path) -> None:
    import optuna

    run = tmp_path / "opt"
    # the first (enqueued) trial is ort_int8: the hook makes it raise
    report = run_search(trained.path, DATA, run, trials=2, fail_when={"quant": "ort_int8"}, **FAST)
    recs = _records(run)
    assert recs[0]["state"] == "failed" and "fail_when" in recs[0]["error"]
    assert report["failed"] >= 1 and report["trials"] == 2
    assert (run / "study.db").is_file() and (run / "report.md").is_file()
    first = (run / "trials" / "0001.json").read_text()

    with pytest.raises(SlimlineError, match="--resume"):
        run_search(trained.path, DATA, run, trials=3, **FAST)
    # a crash mid-trial: a trial left RUNNING in the storage
    study = optuna.load_study(study_name="slimline-optimize", storage=f"sqlite:///{run / 'study.db'}")
    study.enqueue_trial({"prune": "none", "quant": "fp32"})
    crashed = study.ask(
        {
            "prune": optuna.distributions.CategoricalDistribution(["none"]),
            "quant": optuna.distributions.CategoricalDistribution(["fp32", "ort_int8"]),
        }
    )
    assert crashed.params == {"prune": "none", "quant": "fp32"}

    report = run_search(trained.path, DATA, run, resume=True, trials=4)
    recs = _records(run)
    assert sorted(recs) == [0, 1, 2, 3] and report["trials"] == 4
    assert (run / "trials" / "0001.json").read_text() == first  # no finished trial is run again or lost
    assert recs[crashed.number]["state"] == "interrupted"  # the cut-off trial is run again from the start
    assert recs[3]["params"] == {"prune": "none", "quant": "fp32"} and recs[3]["state"] == "complete"


def test_budget_stops_the_search_and_best_is_on_disk(trained: Artifact, tmp_path: Path) -> None:
    run = tmp_path / "opt"
    # no trial limit: only the budget stops it; the best trial is re-measured (3 fresh processes) before the choice
    report = run_search(trained.path, DATA, run, budget="1s", **(FAST | {"confirm": 2}))
    assert "budget" in report["stopped"] and report["trials"] == 1
    assert report["chosen"]["trial_items_per_s"] > 0 and report["chosen"]["items_per_s"] > 0
    best = json.loads((run / "best.json").read_text())
    assert Artifact.load(run / "best").kind == Artifact.load(best["artifact"]).kind
    assert report["chosen"]["test_n"] > 0 and report["front"][0]["why_lost"] is None


def test_cli_refuses_dask_without_scheduler_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    res = CliRunner().invoke(
        app, ["optimize", "small_cnn", "-d", "digits", "-o", str(tmp_path / "o"), "--executor", "dask"]
    )
    assert res.exit_code == 1 and "scheduler" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "study.db").exists()  # refused before any work


def test_recipe_optimize_section_is_checked() -> None:
    from slimline.recipe import parse_recipe

    base = {"model": "small_cnn", "data": "digits", "steps": []}
    r = parse_recipe(base | {"optimize": {"max_drop": 0.5, "budget": "10m", "runtime": "onnxruntime"}})
    assert r.optimize == {"max_drop": 0.5, "budget": 600.0, "runtime": "onnxruntime"}
    with pytest.raises(SlimlineError, match="optimize"):
        parse_recipe(base | {"optimize": {"max_dorp": 0.5}})
    with pytest.raises(SlimlineError, match="duration"):
        parse_recipe(base | {"optimize": {"budget": "soon"}})


def test_why_lost_never_calls_a_faster_figure_worse() -> None:
    """A front member measured faster at search time than the chosen trial's later (confirmed / recovered) figure
    is not reported as 'worse': the two figures come from different measurements."""
    from slimline.search.study import SearchConfig, why_lost

    cfg = SearchConfig(max_drop=1.0)
    machine = {"kind": "x"}
    chosen = {
        "number": 58,
        "drop": 0.7,
        "items_per_s": 54336.0,
        "size_bytes": 100,
        "val_top1": 91.2,
        "machine": machine,
    }
    faster = {
        "number": 112,
        "drop": 0.7,
        "items_per_s": 62169.0,
        "size_bytes": 100,
        "val_top1": 91.2,
        "machine": machine,
    }
    slower = faster | {"items_per_s": 40000.0}
    assert "worse" not in why_lost(faster, chosen, cfg) and "measured apart" in why_lost(faster, chosen, cfg)
    assert why_lost(slower, chosen, cfg).startswith("throughput worse: 4e+04 vs 5.434e+04")
    assert "exceeds --max-drop" in why_lost(faster | {"drop": 1.5}, chosen, cfg)
