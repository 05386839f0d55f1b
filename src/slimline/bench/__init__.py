"""Benchmarks: every artifact x runtime x batch size measured in its own fresh subprocess.

Each combination runs ``python -m slimline.bench.worker`` (so threads, caches and memory of one do
not disturb another): load the artifact on the runtime, warm up, then time calls until both a
minimum count and a minimum time are reached. Nothing here asserts speeds; tests check that the
harness measures what it claims.

Results document (``slimline bench --json``, ``benchmark.json`` in a run folder, the
``benchmark`` key of a run's ``results.json``)::

    schema        "slimline.bench/1"
    created       ISO-8601 UTC time
    environment   slimline.environment.environment() (cpu {model, cores, flags {avx2, avx512f,
                  avx512_vnni, avx_vnni, amx_tile, amx_int8, ...}}, python, platform, versions
                  {torch, onnxruntime, openvino, ...}) plus threads (the --threads asked for)
    settings      {runtimes, batch_sizes, threads, warmup, min_runs, min_seconds, max_seconds, repeats,
                  input_shapes (--input-shape per input name; "" for a bare C,H,W)}
    peak_gflops   measured fp32 GEMM peak in GFLOP/s (null when not measured): the higher of a
                  measurement before and one after the combinations
    peak          slimline.bench.peak.measure_peak() output: fp32_gflops, int8_gops, fp32 {...},
                  int8 {...}, and before/after (the other measurement's fp32_gflops)
    skipped       [{artifact, runtime, reason}] pairs whose kinds do not fit (printed as "skipped:" lines)
    compare       (slimline bench --compare OLD.json only) {against, rows: [{artifact, runtime,
                  batch_size, old_throughput, new_throughput, throughput_ratio, old_median_ms,
                  new_median_ms, latency_ratio}]}, matched on (artifact, runtime, batch_size)
    results       one object per artifact x runtime x batch size:
      artifact      model name (artifact folder name, or the model spec given)
      artifact_path folder of the artifact that was run
      kind          torch | onnx | openvino
      runtime       the runtime as given, e.g. "torch:channels_last"
      runtime_name  registered runtime name, e.g. "torch"
      options       runtime options parsed from the spec, e.g. {"channels_last": true}
      batch_size    items per call
      tuned_batch   true when this batch size is the one ``tune`` chose for the artifact and runtime
                    (measured in addition to the batch sizes asked for)
      status        ok | unavailable | error  (error: the reason; other figures null)
      error         null, or what went wrong / why the runtime is unusable
      latency_ms    {median, p90, p99, min, std, mean} per call, milliseconds
      throughput    items/s = batch_size x runs / wall time of the timed loop
      repeats       (only with repeats > 1) every process's throughput; the other figures are those
                    of the process with the median throughput
      runs, seconds timed calls and their wall time
      first_run_ms  the first warm-up call (includes torch.compile's compile)
      load_seconds  time to load the artifact into the runtime
      peak_rss_mb   peak resident memory of the worker process (VmHWM; ru_maxrss off Linux), MiB
      pid           the worker process
      file_bytes    bytes on disk of the model files (not ONNX Runtime's offline-optimized copy)
      macs          multiply-accumulates per item (slimline.bench.macs), null if unknown
      macs_method   how they were counted
      gflops        achieved 2 x macs x throughput / 1e9
      efficiency    gflops / peak_gflops (fp32 GEMM peak), null if either is unknown
      describe      the session's describe(): name, version, device, precision, threads, options
      input_shapes  {input name: shape} of one sample (batch axis at 1) that the worker fed: a single float
                    input as a standard-normal batch through run(), any other signature as
                    Signature.example_feeds through run_named() (ids below the smallest embedding table)
      machine_load  CPU time other processes took during the timed loop (slimline.environment.other_load):
                    {other_cpu_s, other_share (of wall time x CPUs), busy (share > BUSY_SHARE, 10%)};
                    null off Linux. The tables and the report mark busy rows
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimline.bench.harness import (
    SCHEMA,
    BenchTarget,
    RuntimeSpec,
    bench_artifacts,
    bench_targets,
    latency_stats,
    measure,
    median_process,
    run_in_subprocess,
)

if TYPE_CHECKING:
    from slimline.pipeline import RunContext
    from slimline.recipe import BenchmarkConfig

BENCHMARK_JSON = "benchmark.json"


def bench_run(ctx: RunContext, cfg: BenchmarkConfig) -> dict[str, Any]:
    """Benchmark a run's artifacts (all, or ``cfg.artifacts`` by folder name); writes ``benchmark.json``."""
    from slimline.bench.table import error_lines, results_table, skipped_lines
    from slimline.errors import RecipeError
    from slimline.fileio import write_json
    from slimline.progress import console

    arts = list(ctx.artifacts)
    if cfg.artifacts is not None:
        names = {a.name for a in arts}
        missing = [n for n in cfg.artifacts if n not in names]
        if missing:
            raise RecipeError(f"benchmark.artifacts names {missing}, but the run's artifacts are {sorted(names)}")
        arts = [a for a in arts if a.name in cfg.artifacts]
    console.print(
        f"[bold]benchmark[/] {len(arts)} artifact(s) x {len(cfg.runtimes)} runtime(s) x "
        f"batch {', '.join(map(str, cfg.batch_sizes))}"
        + (f", {cfg.repeats} rounds of fresh processes" if cfg.repeats > 1 else "")
    )
    doc = bench_targets([BenchTarget.from_artifact(a) for a in arts], cfg.runtimes, **cfg.kwargs())
    write_json(ctx.run_dir / BENCHMARK_JSON, doc)
    console.print(results_table(doc, title=f"benchmark: {ctx.run_dir.name}"))
    for line in error_lines(doc):
        console.print(f"[red]not measured:[/] {line}", highlight=False)
    for line in skipped_lines(doc):
        console.print(f"[yellow]skipped:[/] {line}", highlight=False)
    return doc


__all__ = [
    "BENCHMARK_JSON",
    "SCHEMA",
    "BenchTarget",
    "RuntimeSpec",
    "bench_artifacts",
    "bench_run",
    "bench_targets",
    "latency_stats",
    "measure",
    "median_process",
    "run_in_subprocess",
]
