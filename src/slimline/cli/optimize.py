"""``slimline fuse``, ``slimline tune`` and ``slimline predict``: inference optimization commands."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import DOWNLOAD_OPTION, TRUST_CODE_OPTION, preprocess_option
from slimline.errors import SlimlineError
from slimline.progress import console


def _int_list(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SlimlineError(f"{what} must be comma-separated integers like 1,8,32, not {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise SlimlineError(f"{what} must be positive integers, not {text!r}")
    return vals


def _artifact(model: str, weights: Path | None, workdir: Path) -> Any:
    """An artifact folder as is; a zoo name, factory or .onnx file saved as an artifact under ``workdir``."""
    from slimline.artifact import Artifact, save_torch
    from slimline.bench.harness import is_artifact_dir

    p = Path(model)
    if is_artifact_dir(p):
        return Artifact.load(p)
    if p.suffix in (".onnx", ".xml"):
        from slimline.bench.targets import file_artifact

        return file_artifact(p, workdir)
    from slimline.bench.targets import model_meta
    from slimline.models import load_model

    net = load_model(model, weights)
    record = {"step": "baseline", "model": model, "weights": str(weights) if weights else None}
    return save_torch(net, workdir / "baseline", model_meta(model, None), [record])


def _context(out_dir: Path, seed: int) -> Any:
    from slimline.context import RunContext

    return RunContext(run_dir=out_dir.parent, seed=seed, out_dir=out_dir)


@app.command()
@friendly
def fuse(
    model: str = typer.Argument(..., help="artifact folder, zoo name, package.module:factory or .onnx file"),
    output: Path = typer.Option(..., "--output", "-o", help="artifact folder to write"),
    weights: Path | None = typer.Option(None, help="weights for a zoo/factory model"),
    layout: str = typer.Option("auto", help="PyTorch layout: auto (measure both), nchw or channels_last"),
    fold_bn: bool = typer.Option(True, "--fold-bn/--no-fold-bn", help="fold BatchNorm into Conv/Linear weights"),
    fx: bool = typer.Option(True, "--fx/--no-fx", help="torch.fx Conv+BN+activation fusion at load time"),
    layout_batch: int = typer.Option(8, min=1, help="batch size of the layout timing"),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="ONNX: run onnxslim/onnxsim"),
    ort_level: str = typer.Option("extended", help="ONNX: ONNX Runtime offline level: none, basic, extended, all"),
    tolerance: float = typer.Option(1e-4, help="max absolute output difference allowed"),
    input_shape: list[str] = typer.Option(
        [],
        "--input-shape",
        help="ONNX parity inputs, repeatable: NAME=1x3x320x320 per input (batch axis: the parity batch); "
        "needed when a dynamic dimension has no default",
    ),
    seed: int = typer.Option(0),
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Fold BatchNorm, fuse Conv+BN+activation, choose the layout (PyTorch); simplify + offline-optimize (ONNX).

    Example: slimline fuse cifar_resnet56 --weights ../shared/data/cifar10/resnet56-4bfd9763.th -o out/r56_fused

    JSON keys: the fuse step's record: fold_bn {folded, pairs, modules_before, modules_after, max_abs_diff},
    fx_fuse {nodes_before, nodes_after, fused_counts, max_abs_diff}, layout {median_ms, chosen},
    runtime_config; ONNX: original, simplify, ort_offline, parity {model, ort_model: {file, max_abs_diff,
    outputs {name: max_abs_diff}, against}}, parity_inputs {name: shape} (or parity_not_checked: why), dw_pw;
    summary.
    """
    from slimline.models import factories_named, trusted_factories
    from slimline.pipeline import apply_stage
    from slimline.signature import parse_input_shapes
    from slimline.steps.fuse import Fuse, FuseOptions

    cfg = FuseOptions(
        fold_bn=fold_bn,
        fx_fuse=fx,
        layout=layout,
        layout_batch=layout_batch,
        simplify=simplify,
        ort_level=ort_level,
        tolerance=tolerance,
        input_shapes=parse_input_shapes(input_shape),
    )
    trust = trusted_factories(*factories_named([model]), trust_code=trust_code)
    with trust, tempfile.TemporaryDirectory(prefix="slimline-fuse-") as tmp:
        art = _artifact(model, weights, Path(tmp))
        made, record = apply_stage(Fuse(cfg), art, _context(output, seed), "fuse takes every kind")
    console.print(f"fuse: {record.get('summary', record.get('note', ''))}", highlight=False)
    if made is not None:
        console.print(f"wrote {made.path}")
    dump_json(json_path, record)


@app.command()
@friendly
def tune(
    artifact: Path = typer.Argument(..., help="artifact folder (its runtime_config is updated)"),
    target: str = typer.Option("latency", help="latency (batch 1) or throughput (under --p99-ms)"),
    p99_ms: float | None = typer.Option(None, "--p99-ms", help="throughput target: p99 latency bound per call"),
    runtime: list[str] = typer.Option(
        None, "--runtime", "-r", help="runtime to tune (repeatable; default: all available)"
    ),
    batch_sizes: str = typer.Option("1,2,4,8,16,32", help="throughput target: batch sizes to try"),
    threads: str | None = typer.Option(None, help="thread counts to try, e.g. 1,2,4 (default: 1,2,4.. up to the CPUs)"),
    rounds: int = typer.Option(3, min=1, help="timing rounds per comparison"),
    exhaustive: bool = typer.Option(False, help="try the whole grid instead of one option at a time"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write a tuned copy here instead of in place"),
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Search threads, layout/fusion, streams and batch size per runtime; store the best in the artifact.

    Example: slimline tune runs/demo/05_export_onnx --target throughput --p99-ms 50

    JSON keys: per runtime: target, p99_ms, defaults, best, best_stats {median_ms, p99_ms, throughput,
    batch_size}, default_stats, kept_defaults, gain_vs_defaults, runtime_config, trials.
    """
    from slimline.artifact import Artifact
    from slimline.fileio import write_json
    from slimline.models import trusted_factories
    from slimline.optimize.tune import DEFAULT_BATCHES, copy_artifact, summary, tuned_meta
    from slimline.optimize.tune import tune as tune_api

    art = Artifact.load(artifact)
    with trusted_factories(trust_code=trust_code):
        results = tune_api(
            art,
            runtime or None,
            target,
            p99_ms,
            batch_sizes=_int_list(batch_sizes, "--batch-sizes") or list(DEFAULT_BATCHES),
            threads=_int_list(threads, "--threads"),
            rounds=rounds,
            exhaustive=exhaustive,
            on_trial=lambda line: console.print(f"  [dim]{line}[/]", highlight=False),
        )
    meta = tuned_meta(art.meta, results)
    record = {
        "step": "tune",
        "target": target,
        "p99_ms": p99_ms,
        "runtimes": {rt: r.to_dict() for rt, r in results.items()},
        "summary": summary(results),
    }
    if output is not None:
        out = copy_artifact(art, output, meta, [*art.lineage, record])
    else:
        art.meta, art.lineage = meta, [*art.lineage, record]
        write_json(art.path / "artifact.json", art.to_json())
        out = art
    for rt, r in results.items():
        b = r.best_stats
        if "error" in b:
            console.print(f"{rt}: {b['error']}")
            continue
        gain = r.gain()
        console.print(
            f"{rt}: {r.runtime_config()}  median {b['median_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms, "
            f"{b['throughput']:.1f}/s"
            + (f"  ({gain:.2f}x vs defaults)" if gain else "")
            + ("  [defaults kept]" if r.kept_defaults else ""),
            highlight=False,
        )
    console.print(f"runtime_config written to {out.path / 'artifact.json'}")
    dump_json(json_path, record)


@app.command()
@friendly
def predict(
    artifact: Path = typer.Argument(..., help="artifact folder"),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="dataset name, named arrays (.npz/.npy, a folder of them or of .wav files), or raw text for a text "
        "artifact (.txt one a line, .jsonl/.tsv, fortunes)",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="predictions file: .npy (classes, or logits with --logits) or .parquet; for named "
        "arrays .npz (every output by name)",
    ),
    split: str = typer.Option("test", help="train or test"),
    data_dir: Path | None = typer.Option(None, help="where the dataset lies"),
    preprocess: str | None = preprocess_option(),
    limit: int | None = typer.Option(None, min=1, help="only the first N samples"),
    runtime: str | None = typer.Option(None, help="runtime (default: the artifact's own)"),
    workers: int = typer.Option(1, min=1, help="worker processes, each with its own session"),
    threads: int | None = typer.Option(None, min=1, help="threads in total, shared out between the workers"),
    batch_size: int | None = typer.Option(None, min=1, help="default: the tuned batch size, else 64"),
    shard_size: int = typer.Option(1000, min=1, help="samples per shard (the unit of resuming)"),
    logits: bool = typer.Option(False, help="write logits instead of (npy) / besides (parquet) classes"),
    restart: bool = typer.Option(False, help="discard finished shards of an earlier run"),
    keep_shards: bool = typer.Option(False, help="keep the shard folder after writing the output"),
    download: bool = DOWNLOAD_OPTION,
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Predict a whole dataset with worker processes; ordered output; an interrupted run resumes.

    Example: slimline predict runs/demo/03_fuse --data fashion-mnist --out preds.npy --workers 2

    Any ONNX/OpenVINO artifact: slimline predict ART -d inputs.npz --out outputs.npz feeds the arrays by input
    name and writes every output by name (one worker, no shards). A text artifact (exported with its tokenizer)
    takes raw text: slimline predict ART -d texts.txt --out embeddings.npz.

    JSON keys: output, n, shards, shards_reused, workers, threads_per_worker, runtime, batch_size,
    format, top1 (when the data has labels); outputs (name: shape) instead of the shard keys for named arrays.
    """
    from slimline.optimize.predict import predict as predict_api

    res = predict_api(
        artifact,
        data,
        out,
        split=split,
        data_dir=data_dir,
        preprocess=preprocess,
        limit=limit,
        runtime=runtime,
        workers=workers,
        threads=threads,
        batch_size=batch_size,
        shard_size=shard_size,
        logits=logits,
        resume=not restart,
        keep_shards=keep_shards,
        download=download,
        trust_code=trust_code,
    )
    line = f"wrote {res['output']}: {res['n']} samples"
    if "outputs" in res:
        line += f", outputs {', '.join(res['outputs'])}"
    line += f", {res['shards']} shards ({res['shards_reused']} reused)"
    if "top1" in res:
        line += f", top-1 {res['top1']:.2f}%"
    console.print(line, highlight=False)
    dump_json(json_path, res)
