"""``slimline optimize``: search for the fastest artifact within an accuracy budget (slimline.search)."""

from __future__ import annotations

from pathlib import Path

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.search.study import SearchConfig

_F = SearchConfig.model_fields


def _help(name: str) -> str:
    return _F[name].description or name


@app.command("optimize")
@friendly
def optimize_cmd(
    model: str | None = typer.Argument(
        None,
        help="trained PyTorch artifact folder, or a zoo name / package.module:factory (default: the --recipe's model)",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="dataset name; its training split's validation slice scores candidates (default: the --recipe's data)",
    ),
    recipe: Path | None = typer.Option(
        None,
        "--recipe",
        help="a recipe: its model, data, seed and optimize: section (options given here override the section)",
    ),
    output: Path = typer.Option(Path("runs/optimize"), "--output", "-o", help="run folder (study.db, trials, best)"),
    weights: Path | None = typer.Option(None, help="weights for a zoo/factory model"),
    val_size: float = typer.Option(0.1, help="validation slice of the training split (fraction or count)"),
    max_drop: float = typer.Option(_F["max_drop"].default, help=_help("max_drop")),
    objective: str = typer.Option(_F["objective"].default, help=_help("objective")),
    runtime: str = typer.Option(_F["runtime"].default, help=_help("runtime")),
    batch: int = typer.Option(_F["batch"].default, help=_help("batch")),
    budget: str | None = typer.Option(None, help="wall-clock limit: 600, 10m, 1.5h"),
    trials: int | None = typer.Option(None, help=_help("trials")),
    prune: bool = typer.Option(_F["prune"].default, "--prune/--no-prune", help=_help("prune")),
    executor: str = typer.Option(_F["executor"].default, help="local (processes here) or dask"),
    scheduler: str | None = typer.Option(None, help=_help("scheduler")),
    parallel: int = typer.Option(_F["parallel"].default, help=_help("parallel")),
    threads: int | None = typer.Option(None, help=_help("threads")),
    seed: int = typer.Option(_F["seed"].default),
    resume: bool = typer.Option(False, "--resume", help="continue the study in --output after a crash or Ctrl-C"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Search pruning, quantization and runtime settings (Optuna) for the fastest artifact within --max-drop.

    Example: slimline optimize runs/demo/01_train -d fashion-mnist --max-drop 1.0 --runtime openvino --batch 64
    --budget 10m -o runs/opt
    """
    from slimline.errors import SlimlineError
    from slimline.recipe import load_recipe
    from slimline.search import run_search

    opts = {
        "max_drop": max_drop,
        "objective": objective,
        "runtime": runtime,
        "batch": batch,
        "budget": budget,
        "trials": trials,
        "prune": prune,
        "executor": executor,
        "scheduler": scheduler,
        "parallel": parallel,
        "threads": threads,
        "seed": seed,
    }
    vs: float | int = int(val_size) if val_size >= 1 else val_size
    data_map: dict[str, object] | None = {"name": data, "val_size": vs} if data else None
    if recipe is not None:
        r = load_recipe(recipe)
        section = r.optimize or {}
        given = {k: v for k, v in opts.items() if v != _F[k].default}  # what the command line changes
        opts = {"seed": r.seed} | section | given
        if model is None:
            model, weights = r.model.name, Path(r.model.weights) if r.model.weights else weights
        data_map = data_map or r.data.model_dump(mode="json")
    if model is None or data_map is None:
        raise SlimlineError("give MODEL and --data (or a --recipe that names them)")
    report = run_search(model, data_map, output, weights=weights, resume=resume, **opts)
    dump_json(json_path, report)
