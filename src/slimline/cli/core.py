"""Core commands: run, train, eval, demo, and listings of models, datasets and steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import DOWNLOAD_OPTION, TRUST_CODE_OPTION, data_section, preprocess_option
from slimline.progress import console


@app.command()
@friendly
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML file"),
    output: Path | None = typer.Option(None, "--output", "-o", help="run folder (default: the recipe's output_dir)"),
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Run a recipe: every step's artifact and record land in the run folder.

    Example: slimline run examples/demo.yaml -o runs/demo
    """
    from slimline.api import run as run_api

    results = run_api(recipe, output, trust_code=trust_code)
    _print_stages(results)
    dump_json(json_path, results)


@app.command()
@friendly
def train(
    model: str = typer.Option(..., "--model", "-m", help="zoo name or package.module:factory"),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="dataset name, or package.module:function (your data factory returning an ArrayDataset)",
    ),
    weights: Path | None = typer.Option(None, help="start from these weights"),
    epochs: int = typer.Option(5, min=1),
    lr: float = typer.Option(0.05),
    batch_size: int = typer.Option(128, min=1),
    optimizer: str = typer.Option("sgd", help="sgd or adamw"),
    seed: int = typer.Option(0),
    data_dir: Path | None = typer.Option(None, help="where the dataset lies"),
    preprocess: str | None = preprocess_option(),
    limit: int | None = typer.Option(None, min=1, help="use only the first N training samples"),
    download: bool = DOWNLOAD_OPTION,
    output: Path = typer.Option(Path("runs/train"), "--output", "-o", help="run folder"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Train a model (cosine schedule, augmentation, atomic checkpoints, resumable).

    Example: slimline train -m small_cnn -d fashion-mnist --epochs 3 -o runs/fmnist
    """
    from slimline.api import run as run_api

    recipe = {
        "name": "train",
        "model": {"name": model, "weights": str(weights) if weights else None},
        "data": data_section(data, data_dir, train_limit=limit, download=download, preprocess=preprocess),
        "seed": seed,
        "steps": [{"train": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer}}],
        "output_dir": str(output),
    }
    results = run_api(recipe)
    _print_stages(results)
    dump_json(json_path, results)


@app.command("eval")
@friendly
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="zoo name, package.module:factory, artifact folder or .onnx"),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="dataset name, package.module:function (your data factory), "
        "or named arrays: a .npz/.npy file or a folder of them (one array per input name, "
        "optional 'labels')",
    ),
    weights: Path | None = typer.Option(None, help="weights file (state_dict or checkpoint)"),
    split: str = typer.Option("test", help="train or test"),
    reference: str | None = typer.Option(None, help="reference model for fidelity (top-1 agreement, logit cosine)"),
    reference_weights: Path | None = typer.Option(None),
    runtime: str | None = typer.Option(None, help="runtime for artifacts (default: the artifact's own)"),
    limit: int | None = typer.Option(None, min=1, help="evaluate only the first N samples"),
    data_dir: Path | None = typer.Option(None),
    preprocess: str | None = preprocess_option(),
    metric: str | None = typer.Option(
        None,
        help="'detection' (a detector on a folder of photos: mAP with YOLO txt/COCO JSON labels, detection "
        "fidelity with --reference), or your metric, package.module:function, called as fn(outputs: "
        "{output name: array}, labels) -> {name: number}; its figures are printed",
    ),
    download: bool = DOWNLOAD_OPTION,
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Top-1/top-5 accuracy with sample size and 95% interval; fidelity against a reference.

    Example: slimline eval -m cifar_resnet56 --weights ../shared/data/cifar10/resnet56-4bfd9763.th -d cifar10-sample

    Any model: slimline eval -m int8/model.onnx --reference model.onnx -d samples.npz

    JSON keys: top1, top5 (percent), n, top1_ci95 [lo, hi], runtime; with --reference also
    top1_agreement (percent) and logit_cosine. With named arrays (or a model whose outputs are not one
    [batch, classes] array) and --reference: fidelity {output: {min_cosine, mean_cosine, max_abs_diff,
    mean_abs_diff, top1_agreement?, top5_agreement?}}; top1/top5 too when the arrays have labels. With
    imagefolder: preprocess (the spec in force, every field); with --metric: your metric's figures.

    Detectors: slimline eval -m int8/model.onnx -d photos/ --metric detection --reference model.onnx
    (photos letterboxed to the model's input size, or --preprocess '{resize: [640, 640], letterbox: true}');
    keys map50, map50_95 with labels (photos/labels/*.txt in YOLO format, or one COCO JSON in photos/),
    det_match (share of the reference's detections matched at IoU >= 0.5, same class), matched,
    reference_detections, score_diff_mean/max with --reference.
    """
    from slimline.api import evaluate_model
    from slimline.data.preprocess import Preprocess

    metrics = evaluate_model(
        model,
        data,
        split,
        weights,
        reference,
        reference_weights,
        runtime,
        limit,
        data_dir,
        download=download,
        trust_code=trust_code,
        preprocess=preprocess,
        metric=metric,
    )
    if metrics.get("preprocess"):
        console.print(
            f"preprocess: {Preprocess.from_dict(metrics['preprocess']).describe()}", highlight=False, soft_wrap=True
        )
    for name, f in metrics.get("fidelity", {}).items():
        console.print(fidelity_line(name, f, metrics["n"]), highlight=False)
    if "top1" in metrics:
        lo, hi = metrics["top1_ci95"]
        line = (
            f"top-1 {metrics['top1']:.2f}%  (95% CI {lo:.1f}–{hi:.1f}, n={metrics['n']})  top-5 {metrics['top5']:.2f}%"
        )
        if "logit_cosine" in metrics:
            line += f"  agreement {metrics['top1_agreement']:.2f}%  cosine {metrics['logit_cosine']:.4f}"
        console.print(line, highlight=False)
        print(f"top1={metrics['top1']:.2f}")
    if metric:
        mine = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in _SHOWN}
        console.print(
            f"{metric}: " + ", ".join(f"{k} {v:.6g}" for k, v in mine.items()), highlight=False, soft_wrap=True
        )
    dump_json(json_path, metrics | {"model": model, "data": data, "split": split})


@app.command()
@friendly
def demo(
    quick: bool = typer.Option(False, "--quick", help="a data slice: finishes in a few minutes"),
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """The main job: the whole pipeline on Fashion-MNIST, ending with a report.

    Example: slimline demo --quick
    """
    from slimline.api import demo_recipe
    from slimline.api import run as run_api

    results = run_api(demo_recipe(quick), output)
    _print_stages(results)
    report = output / "report.html"
    if report.exists():
        console.print(f"report: [bold]{report}[/]", soft_wrap=True)
    console.print(f"results: [bold]{output / 'results.json'}[/]", soft_wrap=True)
    dump_json(json_path, results)


@app.command("list")
@friendly
def list_cmd(what: str = typer.Argument("all", help="models, datasets, steps, runtimes or all")) -> None:
    """List what slimline knows: models, datasets, steps and runtimes (with availability).

    Example: slimline list runtimes
    """
    from slimline.data import DATASETS, _import_loaders
    from slimline.models import MODELS, _import_zoo
    from slimline.runtimes import availability
    from slimline.steps import step_names

    _import_zoo()
    _import_loaders()
    if what in ("models", "all"):
        t = Table("model", "input", "classes", "description", title="models")
        for n in MODELS:
            e = MODELS.get(n)
            t.add_row(n, "x".join(map(str, e.input_shape)), str(e.num_classes), e.description)
        console.print(t)
    if what in ("datasets", "all"):
        from slimline.data.preprocess import IMAGENET

        console.print("datasets: " + ", ".join(DATASETS.names()), highlight=False)
        console.print(
            f"  imagefolder preprocess (default; --preprocess to declare yours): {IMAGENET.describe()}",
            highlight=False,
            soft_wrap=True,
        )
        console.print("  also: package.module:function (your factory), .npz/.npy named arrays", highlight=False)
    if what in ("steps", "all"):
        console.print("steps: " + ", ".join(step_names()))
    if what in ("runtimes", "all"):
        for n, (ok, why) in availability().items():
            console.print(f"runtime {n}: " + ("[green]available[/]" if ok else f"[red]unavailable[/] ({why})"))


# figures the eval lines above print already (a --metric line shows the rest)
_SHOWN = frozenset({"top1", "top5", "n", "top1_agreement", "logit_cosine", "min_cosine", "mean_cosine", "max_abs_diff"})


def fidelity_line(name: str, f: dict[str, Any], n: int) -> str:
    """One output's fidelity in one line."""
    line = (
        f"{name}: cosine min {f['min_cosine']:.4f} mean {f['mean_cosine']:.4f}; abs diff max "
        f"{f['max_abs_diff']:.4g} mean {f['mean_abs_diff']:.4g}"
    )
    if "top1_agreement" in f:
        line += f"; top-1 agreement {f['top1_agreement']:.2f}%"
    return line + f" (n={n})"


def _print_stages(results: dict[str, Any]) -> None:
    t = Table("#", "step", "artifact", "seconds", "key figures", title=f"run: {results['recipe'].get('name')}")
    for s in results["stages"]:
        rec = s["record"]
        figs = []
        m = rec.get("metrics") or rec.get("val")
        if m and "top1" in m:
            figs.append(f"top-1 {m['top1']:.2f}% (n={m['n']})")
        if m and "det_match" in m:
            figs.append(f"det_match {m['det_match']:.3f} ({m['matched']}/{m['reference_detections']} fp32 detections)")
        if "parity" in rec:
            figs.append(f"max rel diff {rec['parity']['max_rel_diff']:.1e}")
        if "summary" in rec:
            figs.append(str(rec["summary"]))
        t.add_row(str(s["index"]), s["step"], s["artifact"] or "-", str(rec.get("seconds", "")), "; ".join(figs))
    console.print(t)
