"""``slimline sensitivity`` and ``slimline prune``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast, get_args

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import DOWNLOAD_OPTION, data_section, preprocess_option
from slimline.progress import console


def _split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [s.strip() for s in v.split(",") if s.strip()]
    return out


def _targets(values: list[str] | None) -> dict[str, float]:
    from slimline.errors import SlimlineError

    out: dict[str, float] = {}
    for v in _split_list(values):
        key, sep, num = v.partition("=")
        if not sep:
            raise SlimlineError(
                f"--target takes KEY=VALUE (params=0.5, macs=0.45, latency=0.4, speedup=1.6), got {v!r}"
            )
        try:
            out[key.strip()] = float(num)
        except ValueError:
            raise SlimlineError(f"--target {key}: {num!r} is not a number") from None
    return out


@app.command()
@friendly
def sensitivity(
    model: str = typer.Option(..., "--model", "-m", help="zoo name or package.module:factory"),
    data: str = typer.Option(..., "--data", "-d", help="dataset name"),
    weights: Path | None = typer.Option(None, help="weights file (state_dict or checkpoint)"),
    kind: list[str] = typer.Option(["weight"], "--kind", "-k", help="weight, channel or block (repeatable)"),
    samples: int = typer.Option(256, min=8, help="validation samples to measure on"),
    ratios: str = typer.Option("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="pruning ratios, comma-separated"),
    metric: str = typer.Option("loss", help="ranking metric printed: loss, top1 or kl"),
    layers: list[str] | None = typer.Option(None, "--layer", help="only these units (names or globs, repeatable)"),
    protect: list[str] | None = typer.Option(None, help="layers whose output channels stay (channel kind)"),
    exclude: list[str] | None = typer.Option(None, help="layers Torch-Pruning should not trace"),
    backend: str = typer.Option("auto", help="auto, onnxruntime or torch"),
    adaptive_tol: float | None = typer.Option(
        None, help="measure only where the metric moves by more than this (bisection); interpolate the rest"
    ),
    val_size: float = typer.Option(0.1, help="validation slice of the training data (fraction, or count if >= 1)"),
    limit: int | None = typer.Option(None, min=1, help="use only the first N training samples"),
    seed: int = typer.Option(0),
    data_dir: Path | None = typer.Option(None),
    preprocess: str | None = preprocess_option(),
    download: bool = DOWNLOAD_OPTION,
    output: Path = typer.Option(Path("runs/sensitivity"), "--output", "-o", help="folder for JSON and plots"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Prune each layer / channel group / block alone at growing ratios and measure; JSON + plot.

    Example: slimline sensitivity -m cifar_resnet56 --weights resnet56.th -d cifar10-sample -k channel -k block

    Measured on a seeded validation slice of the training split (never the test split). Writes
    sensitivity_<kind>.json and sensitivity_<kind>.png into the output folder; `slimline prune
    --sensitivity FILE` reuses them. JSON keys: one result per kind (kind, ratios, samples, backend,
    baseline {top1, loss, kl}, units {name: {curve: [{ratio, top1, loss, kl}]}}, seconds).
    """
    from slimline.data import load_dataset
    from slimline.errors import SlimlineError
    from slimline.fileio import write_json
    from slimline.models import load_model
    from slimline.prune.sensitivity import Kind, plot_sensitivity
    from slimline.prune.sensitivity import sensitivity as run_scan
    from slimline.steps.sensitivity import summarise

    try:
        ratio_list = [float(r) for r in ratios.split(",") if r.strip()]
    except ValueError:
        raise SlimlineError(f"--ratios must be numbers separated by commas, got {ratios!r}") from None
    kinds: list[Kind] = []
    for k in _split_list(kind):
        if k not in get_args(Kind):
            raise SlimlineError(f"--kind {k!r} is not one of {', '.join(get_args(Kind))}; pick from those")
        kinds.append(cast(Kind, k))
    net = load_model(model, weights)
    train = load_dataset(data, "train", data_dir, limit, download=download, preprocess=preprocess)
    _, val = train.split_off(int(val_size) if val_size >= 1 else val_size, seed=seed)
    output.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for k in kinds:
        res = run_scan(
            net,
            val,
            k,
            ratio_list,
            samples,
            _split_list(layers) or None,
            _split_list(protect),
            _split_list(exclude),
            backend=backend,
            seed=seed,
            adaptive_tol=adaptive_tol,
            metric=metric,  # type: ignore[arg-type]
        )
        res["model"], res["metric"] = model, metric
        write_json(output / f"sensitivity_{k}.json", res)
        plot_sensitivity(
            res, output / f"sensitivity_{k}.png", f"{model}: {k} sensitivity ({res['samples']} val samples)"
        )
        results[k] = res
        top = summarise(res, metric)
        console.print(
            f"[bold]{k}[/]: {len(res['units'])} units in {res['seconds']} s ({res['backend']}); most sensitive: "
            + ", ".join(f"{r['unit']} (+{r['worse_by']:.3g} {metric})" for r in top[:5]),
            highlight=False,
        )
        console.print(f"  {output / f'sensitivity_{k}.json'}  {output / f'sensitivity_{k}.png'}", highlight=False)
    dump_json(json_path, results)


@app.command()
@friendly
def prune(
    model: str = typer.Option(..., "--model", "-m", help="zoo name or package.module:factory"),
    data: str = typer.Option(..., "--data", "-d", help="dataset name"),
    weights: Path | None = typer.Option(None, help="weights file (state_dict or checkpoint)"),
    method: str = typer.Option("channel", help="magnitude, channel, block, or block+channel"),
    target: list[str] | None = typer.Option(None, help="params=0.5, macs=0.45, latency=0.4 or speedup=1.6"),
    ratio: float | None = typer.Option(None, help="magnitude: sparsity; channel: one ratio for every unit"),
    scope: str = typer.Option("global", help="magnitude: global or local threshold"),
    importance: str = typer.Option("l1", help="channel importance: l1, l2, bn or taylor"),
    round_to: int = typer.Option(8, min=1, help="kept channels are multiples of this"),
    max_ratio: float = typer.Option(0.8, help="at most this fraction of a unit's channels goes"),
    blocks: int | None = typer.Option(None, min=1, help="block: remove this many blocks (default: as needed)"),
    protect: list[str] | None = typer.Option(None, help="layers whose output channels stay (repeatable)"),
    exclude: list[str] | None = typer.Option(None, help="layers left alone and not traced (repeatable)"),
    sens_file: list[Path] | None = typer.Option(None, "--sensitivity", help="reuse a sensitivity JSON (repeatable)"),
    samples: int = typer.Option(256, min=8, help="validation samples for a sensitivity scan made here"),
    steps: int = typer.Option(1, min=1, help="prune in this many stages"),
    epochs: int = typer.Option(0, min=0, help="fine-tuning epochs after pruning"),
    epochs_per_step: int = typer.Option(0, min=0, help="fine-tuning epochs between stages"),
    lr: float = typer.Option(0.01),
    batch_size: int = typer.Option(64, min=1),
    kd: bool = typer.Option(True, "--kd/--no-kd", help="distil from the unpruned model while fine-tuning"),
    runtime: str = typer.Option("onnxruntime", help="latency targets: onnxruntime or torch"),
    threads: int = typer.Option(2, min=1, help="latency targets: threads"),
    seed: int = typer.Option(0),
    val_size: float = typer.Option(0.1, help="validation slice of the training data (fraction, or count if >= 1)"),
    limit: int | None = typer.Option(None, min=1, help="use only the first N training samples"),
    test: bool = typer.Option(True, "--test/--no-test", help="evaluate on the test split at the end"),
    data_dir: Path | None = typer.Option(None),
    preprocess: str | None = preprocess_option(),
    download: bool = DOWNLOAD_OPTION,
    output: Path = typer.Option(Path("runs/prune"), "--output", "-o", help="run folder"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Prune a model (unstructured, channels, blocks) to a target, fine-tune, and measure.

    Example: slimline prune -m cifar_resnet56 --weights r56.th -d cifar10-sample --method block+channel --target macs=.5

    The pruned model is a torch artifact in the run folder that reloads without this run.
    JSON keys: the run's results (stages[1].record: reduction {params, macs}, plan, val; for magnitude
    sparsity, storage, latency_ms and note).
    """
    from slimline.api import run as run_api

    options: dict[str, Any] = {
        "method": method,
        "ratio": ratio,
        "scope": scope,
        "target": _targets(target) or None,
        "importance": importance,
        "round_to": round_to,
        "max_ratio": max_ratio,
        "blocks": blocks,
        "protect": _split_list(protect),
        "exclude": _split_list(exclude),
        "sensitivity": {"samples": samples, "files": [str(f) for f in sens_file or []]},
        "latency": {"runtime": runtime, "threads": threads},
        "schedule": {"steps": steps},
        "finetune": {
            "epochs": epochs,
            "epochs_per_step": epochs_per_step,
            "lr": lr,
            "batch_size": batch_size,
            "kd": kd,
        },
    }
    run_steps: list[dict[str, Any]] = [{"prune": options}]
    if test:
        run_steps.append({"evaluate": {"split": "test"}})
    recipe = {
        "name": "prune",
        "model": {"name": model, "weights": str(weights) if weights else None},
        "data": data_section(
            data, data_dir, train_limit=limit, val_size=val_size, download=download, preprocess=preprocess
        ),
        "seed": seed,
        "steps": run_steps,
        "output_dir": str(output),
    }
    results = run_api(recipe)
    rec = results["stages"][1]["record"]
    if rec.get("method") == "magnitude":
        st = rec["storage"]["after"]
        console.print(
            f"sparsity {100 * rec['sparsity']:.1f}% ({rec['zeros']} of {rec['weights']} weights pruned, "
            f"{100 * rec.get('covered_share', 1.0):.0f}% of the model's weight matrices); stored dense "
            f"{st['dense_bytes'] / 1e3:.0f} kB, zlib {st['zlib_bytes'] / 1e3:.0f} kB, "
            f"sparse {st['sparse_bytes'] / 1e3:.0f} kB",
            highlight=False,
        )
        console.print(f"[yellow]{rec['note']}[/]")
    else:
        b, a = rec["size_before"], rec["size_after"]
        console.print(
            f"params {b['params']:,} -> {a['params']:,} (-{100 * rec['reduction']['params']:.1f}%), "
            f"MACs {b['macs'] / 1e6:.1f}M -> {a['macs'] / 1e6:.1f}M (-{100 * rec['reduction']['macs']:.1f}%)"
            + (f", blocks removed: {', '.join(rec['plan']['blocks'])}" if rec["plan"]["blocks"] else ""),
            highlight=False,
        )
        if "latency_ms" in rec:
            lat = rec["latency_ms"]
            console.print(
                f"{lat['runtime']} batch {lat['batch']}: {lat['before']:.1f} -> {lat['after']:.1f} ms "
                f"({lat['measured_speedup']:.2f}x measured, {lat['predicted_speedup']:.2f}x predicted)",
                highlight=False,
            )
    console.print(
        f"val top-1 {rec['val_before']['top1']:.2f}% -> {rec['val']['top1']:.2f}% (n={rec['val']['n']})",
        highlight=False,
    )
    if test:
        m = results["stages"][2]["record"]["metrics"]
        console.print(f"test top-1 {m['top1']:.2f}% (n={m['n']})", highlight=False)
    console.print(f"pruned artifact: [bold]{output / results['final_artifact']}[/]")
    dump_json(json_path, results)
