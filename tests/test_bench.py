"""The benchmark harness measures what it claims: timing, isolation, memory, schema, comparison.

No test asserts how fast anything is; a runtime that sleeps 10 ms per call checks the clock.
"""

from __future__ import annotations

import functools
import json
import os
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimline.artifact import Artifact, save_torch
from slimline.bench import SCHEMA, RuntimeSpec, bench_artifacts, latency_stats, measure
from slimline.bench.table import compare_results
from slimline.models import load_model

PLUGIN = "slimline_bench_test_plugins"
PLUGIN_SOURCE = textwrap.dedent(
    '''
    """Runtimes for the harness tests: one sleeps, one holds memory, one is never available."""
    import time

    import numpy as np
    import torch

    from slimline.runtimes import RUNTIMES
    from slimline.runtimes.base import Runtime, Session


    class SleepSession(Session):
        def __init__(self, ms, threads, hog_mb=0):
            self.ms, self.threads = ms, threads
            self.hog = np.ones(hog_mb * 2**20 // 8) if hog_mb else None  # touched pages count in RSS

        def run(self, batch):
            time.sleep(self.ms / 1000)
            return np.zeros((len(batch), 10), np.float32)

        def describe(self):
            return {"name": "test-sleep", "version": "0", "device": "cpu", "precision": "fp32",
                    "threads": torch.get_num_threads(), "threads_option": self.threads}


    @RUNTIMES.register("test-sleep")
    class SleepRuntime(Runtime):
        name = "test-sleep"
        kinds = ("torch",)

        def load(self, artifact, threads=None, ms=10.0, hog_mb=0, **_):
            return SleepSession(float(ms), threads, int(hog_mb))


    @RUNTIMES.register("test-missing")
    class MissingRuntime(Runtime):
        name = "test-missing"
        kinds = ("torch",)

        @classmethod
        def available(cls):
            return False, "test-missing needs the imaginary library; pip install imaginary"

        def load(self, artifact, **_):
            raise AssertionError("never loaded")
    '''
)

RESULT_KEYS = {
    "artifact": str,
    "artifact_path": str,
    "kind": str,
    "runtime": str,
    "runtime_name": str,
    "options": dict,
    "batch_size": int,
    "status": str,
    "latency_ms": dict,
    "throughput": float,
    "runs": int,
    "seconds": float,
    "peak_rss_mb": float,
    "pid": int,
    "file_bytes": int,
    "macs": int,
    "describe": dict,
    "first_run_ms": float,
    "load_seconds": float,
}


@pytest.fixture(scope="module")
def torch_art(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    d = tmp_path_factory.mktemp("bench")
    return save_torch(load_model("small_cnn"), d / "small", {"input_shape": [1, 28, 28], "num_classes": 10}, [])


@pytest.fixture()
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return PLUGIN


def test_latency_stats_are_the_usual_statistics() -> None:
    times = [0.001, 0.002, 0.003, 0.004, 0.100]
    s = latency_stats(times, batch_size=4, total_s=0.2)
    ms = np.array(times) * 1e3
    lat = s["latency_ms"]
    assert lat["median"] == pytest.approx(3.0) and lat["min"] == pytest.approx(1.0)
    assert lat["p90"] == pytest.approx(np.percentile(ms, 90)) and lat["p99"] == pytest.approx(np.percentile(ms, 99))
    assert lat["std"] == pytest.approx(ms.std(ddof=1)) and lat["mean"] == pytest.approx(ms.mean())
    assert s["throughput"] == pytest.approx(4 * 5 / 0.2) and s["runs"] == 5


def test_measure_reports_a_10ms_call_as_10ms() -> None:
    calls = []

    def sleepy(batch: np.ndarray) -> None:
        calls.append(len(batch))
        time.sleep(0.010)

    m = measure(sleepy, np.zeros((8, 3)), warmup=2, min_runs=10, min_seconds=0.25)
    assert m["runs"] >= 10 and m["seconds"] >= 0.25  # both minimums reached
    assert len(calls) == m["runs"] + 2  # warm-up calls are not timed
    lat = m["latency_ms"]
    assert 9.9 <= lat["min"] <= lat["median"] < 25  # sleep never returns early; a busy machine adds a little
    assert m["throughput"] == pytest.approx(8 * m["runs"] / m["seconds"])
    assert m["throughput"] == pytest.approx(8 * 1000 / lat["mean"], rel=0.05)  # loop overhead is negligible
    assert m["first_run_ms"] >= 9.9


def test_measure_stops_at_max_seconds() -> None:
    m = measure(lambda b: time.sleep(0.01), [0], warmup=0, min_runs=1000, min_seconds=0, max_seconds=0.1)
    assert m["capped"] is True and 3 <= m["runs"] < 1000


def test_runtime_spec_parsing() -> None:
    assert RuntimeSpec.parse("torch") == RuntimeSpec("torch", "torch")
    s = RuntimeSpec.parse("torch:channels_last")
    assert (s.name, s.options, s.label) == ("torch", {"channels_last": True}, "torch:channels_last")
    s = RuntimeSpec.parse("openvino:hint=throughput,streams=2,precision=f32")
    assert s.options == {"hint": "throughput", "streams": 2, "precision": "f32"}
    assert RuntimeSpec.parse("torch-compile:freezing=false").options == {"freezing": False}


def test_subprocess_isolation_timing_memory_and_schema(torch_art: Artifact, plugin: str) -> None:
    """Each combination runs in its own process: a 10 ms runtime is timed at ~10 ms, an 800 MB one does
    not raise the memory of the next, an unavailable or failing runtime is a message, and the JSON has every key."""
    from slimline.models import count_macs

    small_macs = count_macs(load_model("small_cnn"), (1, 28, 28))
    ballast = np.ones(600 * 2**20 // 8)  # the parent's peak must not show up in the workers' figures
    doc = bench_artifacts(
        [torch_art.path],
        ["test-sleep", "test-sleep:hog_mb=800", "test-missing", "test-sleep:ms=oops"],
        [2],
        threads=1,
        warmup=2,
        min_runs=10,
        min_seconds=0.2,
        peak=50.0,
        plugins=[plugin],
    )
    assert doc["schema"] == SCHEMA and doc["peak_gflops"] == 50.0
    assert {"environment", "settings", "peak", "results", "skipped", "created"} <= set(doc)
    assert {"cpu", "versions", "threads"} <= set(doc["environment"]) and doc["environment"]["threads"] == 1
    json.loads(json.dumps(doc))  # plain JSON
    sleep, hog, missing, broken = doc["results"]
    for r in (sleep, hog):
        assert r["status"] == "ok" and r["error"] is None, r
        for key, typ in RESULT_KEYS.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert set(r["latency_ms"]) == {"median", "p90", "p99", "min", "std", "mean"}
        assert r["batch_size"] == 2 and r["runs"] >= 10 and r["seconds"] >= 0.2
        assert 9.9 <= r["latency_ms"]["min"] <= r["latency_ms"]["median"] < 25
        assert r["throughput"] == pytest.approx(2 * r["runs"] / r["seconds"])
        assert r["describe"]["threads"] == 1 and r["describe"]["threads_option"] == 1  # threads reached the child
        assert r["file_bytes"] == torch_art.size_bytes()
        assert r["macs"] == small_macs and r["macs_method"] == "torch.utils.flop_counter"
        assert r["gflops"] == pytest.approx(2 * r["macs"] * r["throughput"] / 1e9)
        assert r["efficiency"] == pytest.approx(r["gflops"] / 50.0)
    assert hog["options"] == {"hog_mb": 800} and hog["runtime"] == "test-sleep:hog_mb=800"
    assert len({sleep["pid"], hog["pid"], os.getpid()}) == 3  # fresh processes
    # the 800 MiB stayed in its own process, and no worker inherits the parent's 600 MiB peak
    assert hog["peak_rss_mb"] >= 800 and sleep["peak_rss_mb"] <= hog["peak_rss_mb"] - 700
    assert sleep["peak_rss_mb"] < 600 <= ballast.nbytes / 2**20
    assert missing["status"] == "unavailable" and missing["pid"] is None and missing["latency_ms"] is None
    assert "pip install imaginary" in missing["error"]
    # a runtime that fails inside the worker is a result with the reason, not a crash of the benchmark
    assert broken["status"] == "error" and "ValueError" in broken["error"] and broken["pid"]


def test_tuned_batch_size_is_measured_too(tmp_path: Path, plugin: str) -> None:
    """An artifact whose runtime config has a tuned batch size is also measured at that size."""
    meta = {"input_shape": [1, 28, 28], "num_classes": 10, "runtime_config": {"test-sleep": {"batch_size": 3}}}
    art = save_torch(load_model("small_cnn"), tmp_path / "tuned", meta, [])
    kw = {"threads": 1, "warmup": 0, "min_runs": 2, "min_seconds": 0.0, "peak": False, "plugins": [plugin]}
    doc = bench_artifacts([art.path], ["test-sleep"], [1], **kw)
    assert [(r["batch_size"], r["tuned_batch"]) for r in doc["results"]] == [(1, False), (3, True)]
    assert all(r["status"] == "ok" for r in doc["results"])
    doc = bench_artifacts([art.path], ["test-sleep"], [1, 3], **kw)  # asked for already: measured once
    assert [(r["batch_size"], r["tuned_batch"]) for r in doc["results"]] == [(1, False), (3, True)]
    doc = bench_artifacts([art.path], ["test-sleep"], [1], tuned_batch=False, **kw)
    assert [r["batch_size"] for r in doc["results"]] == [1]


def test_repeats_keep_the_median_process(tmp_path: Path, plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``repeats``: each combination in several fresh processes; the one with the median throughput is kept."""
    from slimline.bench import median_process

    ok = [{"status": "ok", "throughput": t, "pid": i} for i, t in enumerate([200.0, 176.0, 204.0])]
    mid = median_process(ok)
    assert mid["pid"] == 0 and mid["throughput"] == 200.0 and mid["repeats"] == [200.0, 176.0, 204.0]
    assert median_process(ok[:2])["throughput"] == 176.0  # even count: the lower middle
    assert median_process(ok[:1]) == ok[0] and "repeats" not in median_process(ok[:1])
    failed = {"status": "error", "error": "boom", "throughput": None}
    assert median_process([ok[0], failed, ok[2]])["error"] == "boom"  # one failure fails the combination

    art = save_torch(load_model("small_cnn"), tmp_path / "m", {"input_shape": [1, 28, 28], "num_classes": 10}, [])
    kw = {"threads": 1, "warmup": 0, "min_runs": 2, "min_seconds": 0.0, "peak": False, "plugins": [plugin]}
    doc = bench_artifacts([art.path], ["test-sleep"], [1], repeats=3, **kw)
    (r,) = doc["results"]
    assert r["status"] == "ok" and len(r["repeats"]) == 3 and doc["settings"]["repeats"] == 3
    assert r["throughput"] == sorted(r["repeats"])[1]
    (single,) = bench_artifacts([art.path], ["test-sleep"], [1], **kw)["results"]
    assert "repeats" not in single
    from slimline.bench import harness

    calls: list[dict] = []
    real = harness.run_in_subprocess
    monkeypatch.setattr(harness, "run_in_subprocess", lambda spec, timeout: calls.append(spec) or real(spec, timeout))
    (broken,) = bench_artifacts([art.path], ["test-sleep:ms=oops"], [1], repeats=3, **kw)["results"]
    assert broken["status"] == "error" and len(calls) == 1  # a failing combination is not run again


def test_repeats_run_in_rounds(tmp_path: Path, plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated processes run in rounds (every combination, then every combination again), so a slow spell
    touches all alike; a combination that fails drops out of later rounds; each result is reported once,
    when its last process ends."""
    from slimline.bench import harness

    art = save_torch(load_model("small_cnn"), tmp_path / "m", {"input_shape": [1, 28, 28], "num_classes": 10}, [])
    order: list[tuple[str, int]] = []

    def fake(spec: dict, timeout: float | None) -> dict:
        order.append((spec["runtime"], spec["batch_size"]))
        if spec["batch_size"] == 2:
            return {"status": "error", "error": "boom", "throughput": None}
        return {"status": "ok", "throughput": 100.0 + len(order), "latency_ms": {"median": 1.0}}

    monkeypatch.setattr(harness, "run_in_subprocess", fake)
    reported: list[int] = []
    kw = {"threads": 1, "peak": False, "plugins": [plugin], "on_result": lambda r: reported.append(r["batch_size"])}
    doc = bench_artifacts([art.path], ["test-sleep"], [1, 2, 4], repeats=3, **kw)
    assert [bs for _, bs in order] == [1, 2, 4, 1, 4, 1, 4]  # rounds, not one combination's processes in a row
    b1, b2, b4 = doc["results"]
    assert b1["repeats"] == [101.0, 104.0, 106.0] and b1["throughput"] == 104.0
    assert b4["repeats"] == [103.0, 105.0, 107.0] and b4["throughput"] == 105.0
    assert b2["status"] == "error" and b2["error"] == "boom"
    assert reported == [2, 1, 4]  # the failure at once, the others as their third process ends


def test_artifacts_with_the_same_folder_name_are_told_apart(tmp_path: Path) -> None:
    from slimline.bench.harness import BenchTarget, distinct_names

    a = save_torch(load_model("small_cnn"), tmp_path / "run_a" / "01_quantize", {"input_shape": [1, 28, 28]}, [])
    b = save_torch(load_model("small_cnn"), tmp_path / "run_b" / "01_quantize", {"input_shape": [1, 28, 28]}, [])
    c = save_torch(load_model("small_cnn"), tmp_path / "run_b" / "02_fuse", {"input_shape": [1, 28, 28]}, [])
    names = [t.name for t in distinct_names([BenchTarget.from_artifact(x) for x in (a, b, c)])]
    assert names == ["run_a/01_quantize", "run_b/01_quantize", "02_fuse"]


def test_compare_ratios() -> None:
    def doc(tput: float, med: float) -> dict:
        return {
            "results": [
                {
                    "artifact": "m",
                    "runtime": "torch",
                    "batch_size": 1,
                    "status": "ok",
                    "throughput": tput,
                    "latency_ms": {"median": med},
                }
            ]
        }

    (row,) = compare_results(doc(30.0, 10.0), doc(20.0, 20.0))
    assert row["throughput_ratio"] == pytest.approx(1.5) and row["latency_ratio"] == pytest.approx(0.5)
    assert compare_results(doc(30.0, 10.0), {"results": []}) == []


def test_cli_bench_json_and_compare(torch_art: Artifact, tmp_path: Path) -> None:
    """`slimline bench` on real runtimes: a torch artifact folder and an ONNX file, compared with an earlier JSON."""
    from slimline.cli import app
    from slimline.onnx_export import export_onnx

    model = load_model("small_cnn")
    onnx_file = export_onnx(model, (1, 28, 28), tmp_path / "small.onnx")
    old = {
        "results": [
            {
                "artifact": "small",
                "runtime": "torch",
                "batch_size": 2,
                "status": "ok",
                "throughput": 1e9,
                "latency_ms": {"median": 1e-6},
            }
        ]
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            str(torch_art.path),
            str(onnx_file),
            "-r",
            "torch",
            "-r",
            "onnxruntime",
            "-b",
            "2",
            "-t",
            "1",
            "--min-runs",
            "3",
            "--min-seconds",
            "0",
            "--warmup",
            "1",
            "--peak-gflops",
            "100",
            "--compare",
            str(tmp_path / "old.json"),
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    by = {(x["artifact"], x["runtime"]): x for x in doc["results"]}
    assert set(by) == {("small", "torch"), ("small.onnx", "onnxruntime")}
    assert all(x["status"] == "ok" and x["runs"] >= 3 for x in by.values())
    assert by[("small.onnx", "onnxruntime")]["macs"] == by[("small", "torch")]["macs"]  # graph count == flop counter
    assert by[("small.onnx", "onnxruntime")]["describe"]["threads"] == 1
    (row,) = doc["compare"]["rows"]
    assert row["throughput_ratio"] == pytest.approx(by[("small", "torch")]["throughput"] / 1e9)
    assert "compared with" in r.output and "items/s" in r.output


def test_bench_run_from_a_recipe(
    torch_art: Artifact, plugin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slimline.bench as bench_pkg
    from slimline.bench import bench_run, harness
    from slimline.errors import RecipeError
    from slimline.pipeline import DataBundle, RunContext
    from slimline.recipe import BenchmarkConfig, DataConfig

    monkeypatch.setattr(harness, "_peak", lambda *a: {"fp32_gflops": 10.0})
    monkeypatch.setattr(bench_pkg, "bench_targets", functools.partial(harness.bench_targets, plugins=[plugin]))
    ctx = RunContext(run_dir=tmp_path, data=DataBundle(DataConfig(name="digits")), artifacts=[torch_art])
    __import__(plugin)  # registers test-sleep here too: a recipe's runtimes are checked when it is read
    cfg = BenchmarkConfig(
        runtimes=["test-sleep", "onnxruntime"], batch_sizes=[1], min_runs=3, min_seconds=0.001, warmup=1, repeats=2
    )
    doc = bench_run(ctx, cfg)
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["results"] == doc["results"] and len(doc["results"]) == 1  # onnxruntime has no ONNX artifact here
    assert len(doc["results"][0]["repeats"]) == 2  # the recipe's repeats reach the harness
    with pytest.raises(ValueError, match="repeats"):
        BenchmarkConfig(repeats=0)
    assert doc["results"][0]["efficiency"] == pytest.approx(doc["results"][0]["gflops"] / 10.0)
    assert doc["skipped"][0]["runtime"] == "onnxruntime"
    with pytest.raises(RecipeError, match="benchmark.artifacts names"):
        bench_run(ctx, BenchmarkConfig(artifacts=["nope"]))


def test_peak_measures_both_precisions() -> None:
    from slimline.bench.peak import measure_peak

    p = measure_peak(threads=1, seconds=0.2, sizes=(64, 128))
    assert p["fp32_gflops"] > 0 and p["threads"] == 1
    assert p["fp32"]["gflops"] == max(
        v["best_gflops"] for lib in p["fp32"]["libraries"].values() for v in lib["per_size"].values()
    )
    assert p["int8_gops"] is None or p["int8_gops"] > 0
    assert set(p["int8"].get("per_size", {"64": 0, "128": 0})) == {"64", "128"}


def test_results_table_shows_figures_and_reasons() -> None:
    from rich.console import Console

    from slimline.bench.table import error_lines, results_table

    ok = {
        "artifact": "m",
        "runtime": "torch:channels_last",
        "batch_size": 16,
        "status": "ok",
        "latency_ms": {"median": 123.4, "p90": 130.0, "p99": 140.0},
        "throughput": 129.7,
        "gflops": 4.2,
        "efficiency": 0.25,
        "peak_rss_mb": 321.0,
        "file_bytes": 46_800_000,
    }
    bad = {"artifact": "m", "runtime": "openvino", "batch_size": 16, "status": "unavailable", "error": "no openvino"}
    doc = {"results": [ok, bad], "peak_gflops": 16.8, "settings": {"threads": 2}}
    for width, has_p99 in ((80, False), (160, True)):
        con = Console(width=width, record=True)
        con.print(results_table(doc, width=width))
        text = con.export_text()
        assert "123" in text and "129.7" in text and "25%" in text and "46.8" in text and "n/a" in text
        assert ("p99" in text) is has_p99 and "16.8 GFLOP/s" in text.replace("\n", " ")
    assert error_lines(doc) == ["m | openvino | batch 16: unavailable: no openvino"]


def test_an_artifact_naming_its_runtime_is_benched_on_it(tmp_path: Path) -> None:
    from slimline.bench.harness import BenchTarget, _pick_kind, _skip_reason

    ov_kinds = ["openvino", "onnx"]
    ir = BenchTarget("ir", {"openvino": Artifact("openvino", tmp_path, {"model": "m.xml"}, {})})
    plain = BenchTarget("plain", {"onnx": Artifact("onnx", tmp_path, {"model": "m.onnx"}, {})})
    for_ov = BenchTarget("qdq", {"onnx": Artifact("onnx", tmp_path, {"model": "m.onnx"}, {"runtime": "openvino"})})
    assert _pick_kind("openvino", ov_kinds, ir, True) == "openvino"
    assert _pick_kind("openvino", ov_kinds, plain, True) is None  # ONNX files go to ONNX Runtime when IRs exist
    assert _pick_kind("openvino", ov_kinds, plain, False) == "onnx"
    assert _pick_kind("openvino", ov_kinds, for_ov, True) == "onnx"  # quantized for OpenVINO: benched on it
    assert _pick_kind("onnxruntime", ["onnx"], for_ov, True) == "onnx"  # and on ONNX Runtime as any ONNX model
    assert "no benched artifact is openvino" in _skip_reason("openvino", ov_kinds, plain)  # the real reason
    assert _skip_reason("onnxruntime", ["onnx"], ir) == "onnxruntime runs onnx artifacts; this is openvino"


def test_machine_load_from_proc_stat(tmp_path: Path) -> None:
    """Other processes' CPU time = the machine's busy jiffies minus this process's own CPU time."""
    from slimline.environment import BUSY_SHARE, CpuSample, cpu_load_sample, other_load, parse_proc_stat

    text = "cpu  100 10 50 1000 7 3 2 5 0 0\ncpu0 50 5 25 500 3 1 1 2 0 0\ncpu1 50 5 25 500 4 2 1 3 0 0\nintr 1\n"
    assert parse_proc_stat(text) == (100 + 10 + 50 + 3 + 2 + 5, 2)  # idle and iowait are not busy
    assert parse_proc_stat("intr 1\n") is None
    stat = tmp_path / "stat"
    stat.write_text(text)
    assert cpu_load_sample(str(stat)).busy_jiffies == 170  # type: ignore[union-attr]
    assert cpu_load_sample(str(tmp_path / "absent")) is None
    # 2 s on 4 CPUs; the machine was busy 300 jiffies = 3 s at 100 Hz, 1 s of it this process's own
    before, after = CpuSample(1000, 10.0, 50.0, 4), CpuSample(1300, 11.0, 52.0, 4)
    assert other_load(before, after, clk_tck=100) == {"other_cpu_s": 2.0, "other_share": 0.25, "busy": True}
    quiet = CpuSample(1110, 11.0, 52.0, 4)  # 1.1 s busy, 1 s of it ours
    load = other_load(before, quiet, clk_tck=100)
    assert load is not None and load["other_share"] == pytest.approx(0.0125) and not load["busy"]
    assert other_load(before, CpuSample(1050, 11.0, 52.0, 4), clk_tck=100)["other_cpu_s"] == 0.0  # type: ignore[index]
    assert other_load(None, after) is None and 0 < BUSY_SHARE < 1


def test_a_measurement_records_the_machine_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline import environment
    from slimline.bench.table import is_busy, results_table

    samples = iter([environment.CpuSample(0, 0.0, 0.0, 2), environment.CpuSample(10_000, 0.0, 1.0, 2)])
    monkeypatch.setattr(environment, "cpu_load_sample", lambda *a: next(samples))
    monkeypatch.setattr(environment, "_clk_tck", lambda: 10_000)
    m = measure(lambda b: None, [0], warmup=1, min_runs=3, min_seconds=0.0)
    assert m["machine_load"] == {"other_cpu_s": 1.0, "other_share": 0.5, "busy": True}
    doc = {"results": [{"artifact": "a", "runtime": "torch", "batch_size": 1, "status": "ok", "file_bytes": 1, **m}]}
    assert is_busy(doc["results"][0])
    from rich.console import Console

    con = Console(width=200, record=True)
    con.print(results_table(doc, width=200))
    text = con.export_text()
    assert "busy" in text and "other processes used up to 50% of the CPUs" in text
