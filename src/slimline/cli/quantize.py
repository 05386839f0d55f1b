"""``slimline quantize`` (int8 through a backend, optionally accuracy-aware) and ``slimline quant-numerics``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import DOWNLOAD_OPTION, data_section, preprocess_option
from slimline.progress import console
from slimline.steps.quantize import QuantizeOptions as Q


def _split(values: list[str] | None) -> list[str]:
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


@app.command()
@friendly
def quantize(
    model: str = typer.Option(..., "--model", "-m", help="zoo name, package.module:factory or .onnx file"),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="dataset name (calibration: its training split), or named "
        "arrays: a .npz/.npy file or a folder of them (one array per input name)",
    ),
    weights: Path | None = typer.Option(None, help="weights file (state_dict or checkpoint)"),
    backend: str = typer.Option(Q.default("backend"), "--backend", "-b", help=Q.help("backend")),
    mode: str = typer.Option(Q.default("mode"), help=Q.help("mode")),
    calibration: str = typer.Option(Q.default("calibration"), help=Q.help("calibration")),
    percentile: float = typer.Option(Q.default("percentile"), help=Q.help("percentile")),
    calibration_size: int = typer.Option(Q.default("calibration_size"), min=1, help=Q.help("calibration_size")),
    per_tensor: bool = typer.Option(
        not Q.default("per_channel"), "--per-tensor", help="one weight scale per tensor (default: per channel)"
    ),
    activation_type: str = typer.Option(Q.default("activation_type"), help=Q.help("activation_type")),
    symmetric_activations: bool = typer.Option(
        Q.default("activation_symmetric"), "--symmetric-activations", help=Q.help("activation_symmetric")
    ),
    reduce_range: bool | None = typer.Option(
        Q.default("reduce_range"), "--reduce-range/--full-range", help=Q.help("reduce_range")
    ),
    exclude: list[str] | None = typer.Option(None, "--exclude", "-x", help="repeatable: " + Q.help("exclude")),
    model_format: str = typer.Option(Q.default("format"), "--format", help=Q.help("format")),
    model_type: str = typer.Option(Q.default("model_type"), help=Q.help("model_type")),
    accuracy_aware: bool = typer.Option(Q.default("accuracy_aware"), "--accuracy-aware", help=Q.help("accuracy_aware")),
    max_drop: float = typer.Option(Q.default("max_drop"), min=0, help=Q.help("max_drop")),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="evaluate float and int8 on the test split"),
    test_limit: int | None = typer.Option(None, min=1, help="evaluate on the first N test samples"),
    val_size: float = typer.Option(0.1, help="validation slice of the training data (fraction, or count if >= 1)"),
    seed: int = typer.Option(0),
    data_dir: Path | None = typer.Option(None),
    preprocess: str | None = preprocess_option(),
    download: bool = DOWNLOAD_OPTION,
    output: Path = typer.Option(Path("runs/quantize"), "--output", "-o", help="run folder"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Quantize a model to int8 (calibrated on training samples) and compare it with float.

    Example: slimline quantize -m cifar_resnet56 --weights resnet56.th -d cifar10-sample -b openvino -o runs/q56

    The int8 model lands in OUTPUT/02_quantize (kind onnx, openvino or torch, run by the shared
    runtimes, eval and bench) with quantization.json (options, sizes, layers kept in float, per-layer
    sensitivity). JSON keys: float, int8 (top1, n, ...), drop, sizes, kept_float, warnings, run.

    Any ONNX model: slimline quantize -m model.onnx -d calib.npz -b openvino -o runs/q calibrates with every
    input fed by name (arrays keyed by input name, samples on the first axis) and compares int8 with fp32 on a
    held-out quarter of the samples: JSON key fidelity (min_cosine, mean_cosine, max_abs_diff, outputs by name);
    float/int8 top-1 too when the arrays hold 'labels' and the model has one [batch, classes] output. The
    artifact lands in OUTPUT/01_quantize.
    """
    from slimline.api import run as run_api
    from slimline.data.arrays import is_arrays_path
    from slimline.data.text import is_text_source
    from slimline.errors import SlimlineError

    options: dict[str, Any] = {
        "backend": backend,
        "mode": mode,
        "calibration": calibration,
        "percentile": percentile,
        "calibration_size": calibration_size,
        "per_channel": not per_tensor,
        "activation_type": activation_type,
        "activation_symmetric": symmetric_activations,
        "reduce_range": reduce_range,
        "exclude": _split(exclude),
        "accuracy_aware": accuracy_aware,
        "max_drop": max_drop,
        "format": model_format,
        "model_type": model_type,
    }
    if is_arrays_path(data) or is_text_source(data):
        if preprocess is not None:
            raise SlimlineError(
                "--preprocess applies to imagefolder's images; named arrays are fed as saved: leave it out"
            )
        from slimline.steps.quantize import QuantizeOptions, quantize_arrays

        summary = quantize_arrays(model, data, QuantizeOptions(**options), output, seed=seed, evaluate=evaluate)
        _print_summary(summary)
        dump_json(json_path, summary | {"run": str(output)})
        return
    steps: list[dict[str, Any]] = [{"quantize": options}]
    if evaluate and not_logits(model) is None:
        steps = [{"evaluate": {"fidelity": False}}, *steps, {"evaluate": {}}]
    elif evaluate:  # top-1 means nothing here: compare the int8 outputs with fp32's instead
        options["test_fidelity"] = True
    recipe = {
        "name": "quantize",
        "model": {"name": model, "weights": str(weights) if weights else None},
        "data": data_section(
            data, data_dir, test_limit=test_limit, val_size=val_size, download=download, preprocess=preprocess
        ),
        "seed": seed,
        "steps": steps,
        "output_dir": str(output),
    }
    results = run_api(recipe)
    summary = summarise(results)
    _print_summary(summary)
    dump_json(json_path, summary | {"run": str(output)})


def not_logits(model: str) -> str | None:
    """Why an ONNX model's outputs are not (batch, classes) logits (several outputs, or an output of another
    rank, as detectors and speech models have), or None when they may be (and for zoo/PyTorch models)."""
    path = Path(model)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    import onnx

    try:
        outputs = onnx.load(str(path), load_external_data=False).graph.output
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the run itself
        return None
    if len(outputs) != 1:
        return f"{len(outputs)} outputs"
    t = outputs[0].type.tensor_type
    if t.HasField("shape") and len(t.shape.dim) != 2:
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return f"output of shape {dims}"
    return None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The figures of a quantize run: float and int8 accuracy, drop, sizes, layers kept in float."""
    stages = results["stages"]
    q = next(s["record"] for s in stages if s["step"] == "quantize")
    evals = [s["record"]["metrics"] for s in stages if s["step"] == "evaluate"]
    out: dict[str, Any] = {
        "backend": q["backend"],
        "artifact": next(s["artifact"] for s in stages if s["step"] == "quantize"),
        "sizes": {"float_bytes": q["float_bytes"], "int8_bytes": q["int8_bytes"], "compression": q["compression"]},
        "kept_float": q.get("accuracy_aware", {}).get("kept_float", []),
        "left_float": q["left_float"],
        "warnings": q["warnings"],
    }
    if len(evals) >= 2:
        out["float"], out["int8"] = evals[0], evals[-1]
        out["drop"] = evals[0]["top1"] - evals[-1]["top1"]
    if "test_fidelity" in q:
        out["fidelity"] = {k: q["test_fidelity"][k] for k in ("n", "min_cosine", "mean_cosine", "max_abs_diff")}
    if q.get("verification"):
        out["verification"] = q["verification"]
    if "accuracy_aware" in q:
        out["accuracy_aware"] = {k: v for k, v in q["accuracy_aware"].items() if k != "history"}
    return out


def _print_summary(s: dict[str, Any]) -> None:
    sz = s["sizes"]
    console.print(
        f"int8 via [bold]{s['backend']}[/] -> {s['artifact']}: {sz['float_bytes'] / 1e6:.2f} MB -> "
        f"{sz['int8_bytes'] / 1e6:.2f} MB ({sz['compression']:.2f}x smaller)",
        highlight=False,
    )
    if "int8" in s:
        f, q = s["float"], s["int8"]
        console.print(
            f"top-1 float {f['top1']:.2f}% -> int8 {q['top1']:.2f}% (drop {s['drop']:+.2f} points, "
            f"n={q['n']}; agreement {q.get('top1_agreement', float('nan')):.2f}%)",
            highlight=False,
        )
    if "fidelity" in s:
        f = s["fidelity"]
        where = f"{f.get('split', 'test')} samples" + ("" if "int8" in s else " (not class logits, so no top-1)")
        console.print(
            f"int8 vs float outputs on {f['n']} {where}: cosine min {f['min_cosine']:.4f}, mean "
            f"{f['mean_cosine']:.4f}; max abs difference {f['max_abs_diff']:.4g}",
            highlight=False,
        )
    if s["kept_float"]:
        console.print(f"kept in float (accuracy-aware): {', '.join(s['kept_float'])}", highlight=False)
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


@app.command("quant-numerics")
@friendly
def quant_numerics(
    seed: int = typer.Option(0, help="seed of the test tensor"),
    channels: int = typer.Option(64, min=1, help="channels (rows) of the test tensor"),
    per_channel: int = typer.Option(16384, min=16, help="values per channel"),
    outliers: int = typer.Option(3, min=0, help="number of outlier entries"),
    magnitude: float = typer.Option(40.0, help="outlier magnitude (the bulk is N(0, 0.5..2))"),
    percentile: float = typer.Option(99.99, help="percentile observer's clipping percentile"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """SQNR (dB) of every observer (minmax, percentile, entropy, mse) and scheme on a tensor with outliers.

    Example: slimline quant-numerics --outliers 3 --magnitude 40 --json numerics.json

    The tensor: CHANNELS x PER_CHANNEL values from N(0, s_c) with s_c from 0.5 to 2, plus OUTLIERS
    entries of +-MAGNITUDE. Per-channel schemes use one scale per row. JSON keys: tensor {...},
    rows [{observer, scheme, sqnr_db, range, scale}].
    """
    from slimline.quant.numerics import observer_table, outlier_tensor

    x = outlier_tensor(seed, channels, per_channel, outliers, magnitude)
    rows = observer_table(x, percentile=percentile)
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    t = Table(
        "observer",
        *[f"{s}\nSQNR dB" for s in schemes],
        title=f"SQNR on {channels}x{per_channel} N(0,1)-like values with {outliers} outliers of +-{magnitude:g}",
    )
    for obs in dict.fromkeys(r["observer"] for r in rows):
        by = {r["scheme"]: r for r in rows if r["observer"] == obs}
        t.add_row(obs, *[f"{by[s]['sqnr_db']:.2f}" for s in schemes])
    console.print(t)
    dump_json(
        json_path,
        {
            "tensor": {
                "seed": seed,
                "channels": channels,
                "per_channel": per_channel,
                "outliers": outliers,
                "magnitude": magnitude,
                "percentile": percentile,
            },
            "rows": rows,
        },
    )
