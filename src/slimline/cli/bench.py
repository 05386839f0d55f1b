"""``slimline bench`` (artifacts x runtimes x batch sizes, each in its own process) and ``slimline peak``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from slimline.bench.settings import BenchSettings as S
from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import TRUST_CODE_OPTION
from slimline.errors import SlimlineError
from slimline.progress import console


@app.command()
@friendly
def bench(
    targets: list[str] = typer.Argument(
        ...,
        help="artifact folders, .onnx/.xml files, or models by name (zoo name or "
        "package.module:factory: built and exported on the fly)",
    ),
    runtime: list[str] = typer.Option(
        ["torch", "onnxruntime"],
        "--runtime",
        "-r",
        help="repeatable: torch, torch:channels_last, torch-compile, onnxruntime, "
        "openvino, openvino:hint=throughput,streams=2 ...",
    ),
    batch: list[int] = typer.Option(
        S.default("batch_sizes"), "--batch", "-b", help="repeatable: " + S.help("batch_sizes")
    ),
    threads: int | None = typer.Option(None, "--threads", "-t", help=S.help("threads")),
    min_runs: int = typer.Option(S.default("min_runs"), help=S.help("min_runs")),
    min_seconds: float = typer.Option(S.default("min_seconds"), help=S.help("min_seconds")),
    max_seconds: float | None = typer.Option(None, help=S.help("max_seconds")),
    warmup: int = typer.Option(S.default("warmup"), help=S.help("warmup")),
    repeats: int = typer.Option(S.default("repeats"), help=S.help("repeats")),
    weights: Path | None = typer.Option(None, help="weights for a model given by name"),
    input_shape: list[str] = typer.Option(
        [],
        "--input-shape",
        help="repeatable: NAME=1x3x320x320 per input, batch included (each -b replaces the batch axis); "
        "or C,H,W for a single-input model (a model by name: default the zoo entry's)",
    ),
    workdir: Path | None = typer.Option(
        None, help="where models given by name are built and exported (default: a temporary folder)"
    ),
    peak: bool = typer.Option(True, "--peak/--no-peak", help="measure the GEMM peak first, for efficiency"),
    peak_gflops: float | None = typer.Option(None, help="use this fp32 peak (GFLOP/s) instead of measuring it"),
    compare: Path | None = typer.Option(None, "--compare", help="an earlier results JSON: print speed ratios"),
    timeout: float = typer.Option(S.default("timeout"), help=S.help("timeout")),
    tuned_batch: bool = typer.Option(
        S.default("tuned_batch"), "--tuned-batch/--no-tuned-batch", help=S.help("tuned_batch")
    ),
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Latency (median/p90/p99), throughput, peak memory, size, MACs and efficiency per runtime.

    Example: slimline bench resnet18 -r torch -r torch:channels_last -r onnxruntime -r openvino -b 1 -b 16 -t 2

    JSON: the results document described in slimline.bench (schema, environment, peak_gflops,
    results [{artifact, runtime, options, batch_size, latency_ms {median, p90, p99, min, std, mean},
    throughput, runs, peak_rss_mb, file_bytes, macs, efficiency, describe, ...}]).
    """
    from slimline.artifact import require_trusted
    from slimline.bench import bench_targets
    from slimline.bench.harness import tmp_prefix
    from slimline.bench.table import (
        compare_results,
        compare_table,
        error_lines,
        load_results,
        nothing_measured,
        results_table,
        skipped_lines,
    )
    from slimline.bench.targets import resolve_targets
    from slimline.bench.worker import bench_shapes
    from slimline.models import factories_named, trusted_factories
    from slimline.runtimes import validate_runtime_spec
    from slimline.signature import parse_input_shapes

    settings = bench_settings(
        batch_sizes=batch,
        threads=threads,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        warmup=warmup,
        repeats=repeats,
        timeout=timeout,
        tuned_batch=tuned_batch,
    )
    for r in runtime:  # a misspelt option fails here, not after the other combinations ran
        validate_runtime_spec(r)
    shapes = parse_input_shapes(input_shape)
    named = {k: v for k, v in shapes.items() if k}
    # a model by name is built at one sample's C,H,W: the bare form, else the one named shape without its batch
    chw = shapes.get("") or (next(iter(named.values()))[1:] if len(named) == 1 else None)
    old = load_results(compare) if compare else None
    trust = trusted_factories(*factories_named(targets), trust_code=trust_code)
    with trust, tempfile.TemporaryDirectory(prefix=tmp_prefix()) as tmp:
        work = workdir or Path(tmp)
        resolved = resolve_targets(targets, runtime, work, weights, chw or None)
        for t in resolved:  # fail now, in one line, rather than once per combination
            for art in t.artifacts.values():
                require_trusted(art)
                bench_shapes(art, shapes, 1)  # inputs can be made: every dynamic dimension fixed

        def show(r: dict) -> None:
            if r["status"] == "ok":
                lat, tput = r["latency_ms"]["median"], r["throughput"]
                spread = f" (processes: {min(r['repeats']):.1f}-{max(r['repeats']):.1f})" if r.get("repeats") else ""
                console.print(
                    f"  {r['artifact']} | {r['runtime']} | batch {r['batch_size']}: "
                    f"median {lat:.2f} ms, {tput:.1f} items/s{spread}",
                    highlight=False,
                )
            else:
                console.print(
                    f"  {r['artifact']} | {r['runtime']} | batch {r['batch_size']}: [red]{r['status']}[/] {r['error']}",
                    highlight=False,
                )

        if repeats > 1:
            console.print(f"{repeats} rounds of fresh processes; a line appears when a combination's last one ends")
        doc = bench_targets(
            resolved,
            runtime,
            **settings.kwargs(),
            peak=peak_gflops if peak_gflops is not None else peak,
            on_result=show,
            input_shapes=shapes,
        )
    console.print(results_table(doc))
    for line in error_lines(doc):
        console.print(f"[red]not measured:[/] {line}", highlight=False)
    for line in skipped_lines(doc):
        console.print(f"[yellow]skipped:[/] {line}", highlight=False)
    if old is not None:
        rows = compare_results(doc, old)
        doc["compare"] = {"against": str(compare), "rows": rows}
        if rows:
            console.print(compare_table(rows, title=f"compared with {compare}"))
        else:
            console.print(f"nothing in {compare} matches these (model, runtime, batch) combinations")
    dump_json(json_path, doc)
    why = nothing_measured(doc)
    if why:
        raise SlimlineError(why)


@app.command()
@friendly
def peak(
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, help="threads (default: the libraries')"),
    seconds: float = typer.Option(3.0, min=0.1, help="measuring time in total"),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="also measure int8 GEMM (ONNX Runtime MatMulInteger)"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """GEMM peak of this machine: fp32 (torch.mm and ONNX Runtime MatMul) and int8, in a fresh process.

    Example: slimline peak --threads 2

    JSON keys: fp32_gflops, int8_gops, threads, fp32 {gflops, median_gflops, size, method, libraries},
    int8 {gops, median_gops, size, per_size, method}, environment.
    """
    from slimline.bench.harness import run_in_subprocess
    from slimline.environment import environment

    out = run_in_subprocess({"mode": "peak", "threads": threads, "seconds": seconds, "int8": int8})
    if out.get("status") != "ok":
        raise SlimlineError(f"peak measurement failed: {out.get('error')}")
    fp32 = out["fp32"]
    console.print(
        f"fp32 GEMM peak: [bold]{out['fp32_gflops']:.1f} GFLOP/s[/] (median {fp32['median_gflops']:.1f}; "
        f"{fp32['method']}, n={fp32['size']})",
        highlight=False,
    )
    if out.get("int8_gops"):
        i8 = out["int8"]
        console.print(
            f"int8 GEMM peak: [bold]{out['int8_gops']:.1f} GOP/s[/] (median {i8['median_gops']:.1f}; "
            f"{i8['method']}, n={i8['size']})",
            highlight=False,
        )
    print(f"fp32_gflops={out['fp32_gflops']:.2f}")
    doc = {k: v for k, v in out.items() if k not in ("status", "error")} | {"environment": environment()}
    dump_json(json_path, doc)


def bench_settings(**values: object) -> S:
    """The command line's measuring settings, checked by the model a recipe's ``benchmark:`` uses: one line."""
    from pydantic import ValidationError

    from slimline.recipe import format_errors

    try:
        return S.model_validate(values)
    except ValidationError as e:
        raise SlimlineError("bench: " + format_errors(e)) from None
