"""The run report: a fake run folder (results.json + real tiny artifacts) in tmp_path, then the HTML and findings."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import slimline
from slimline.artifact import ArtifactWriter, save_torch
from slimline.errors import SlimlineError
from slimline.fileio import write_text
from slimline.models import count_macs, count_params, load_model
from slimline.report import REPORT_HTML, build_report, write_report
from slimline.report.collect import collect
from slimline.report.records import find_curves, find_float_layers, find_layer_errors, find_sensitivity
from slimline.report.stats import diff_ci, pareto_front, significant

META = {"model": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 10, "data": {"name": "fashion-mnist"}}
ENV = {
    "cpu": {"model": "Test CPU 9000", "cores": 2, "flags": {"avx2": True, "avx512f": False}},
    "python": "3.11.7",
    "platform": "Linux-test",
    "torch_threads": 2,
    "versions": {"torch": "2.13.0", "onnxruntime": "1.32.0"},
}


def _torch_artifact(run: Path, name: str, model: str, step: str) -> None:
    save_torch(load_model(model), run / name, META, [{"step": step}])


def _onnx_artifact(run: Path, name: str) -> None:
    """A tiny real ONNX graph (Flatten + Gemm 784 -> 10) so the report can count it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((10, 784), np.float32), "W")
    b = numpy_helper.from_array(np.zeros((10,), np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W", "B"], ["y"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w, b],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with ArtifactWriter(run / name, "onnx", META, [{"step": "quantize"}]) as wr:
        onnx.save(m, wr.add("model", "model.onnx"))


def _eval(
    index: int, evaluated: str, top1: float, n: int = 1000, agreement: float | None = None, runtime: str = "torch"
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "top1": top1,
        "top5": 99.0,
        "n": n,
        "top1_ci95": [top1 - 1.9, top1 + 1.8],
        "runtime": runtime,
    }
    if agreement is not None:
        metrics |= {"top1_agreement": agreement, "logit_cosine": 0.99}
    return {
        "index": index,
        "step": "evaluate",
        "artifact": None,
        "record": {
            "step": "evaluate",
            "index": index,
            "config": {"split": "test"},
            "seconds": 1.0,
            "evaluated": evaluated,
            "split": "test",
            "metrics": metrics,
        },
    }


def _bench_row(artifact: str, runtime: str, bs: int, median: float, p90: float | None = None) -> dict[str, Any]:
    p90 = median * 1.1 if p90 is None else p90
    return {
        "artifact": artifact,
        "artifact_path": f"/somewhere/{artifact}",
        "kind": "torch",
        "runtime": runtime,
        "runtime_name": runtime,
        "options": {},
        "batch_size": bs,
        "status": "ok",
        "error": None,
        "latency_ms": {
            "median": median,
            "p90": p90,
            "p99": median * 1.3,
            "min": median * 0.9,
            "std": 0.1,
            "mean": median * 1.05,
        },
        "throughput": 1000.0 * bs / median,
        "runs": 50,
        "peak_rss_mb": 321.5,
        "file_bytes": 1000,
        "macs": None,
        "gflops": None,
        "efficiency": 0.25 if runtime == "onnxruntime" else None,
        "describe": {"name": runtime},
    }


def make_run(
    tmp_path: Path,
    bench: bool = True,
    sensitivity: bool = True,
    quant: bool = True,
    prune_method: str = "channel",
    name: str = "fake",
) -> Path:
    """00_baseline (small_cnn) -> 03_prune (small_cnn_half) -> 05_quantize (a tiny ONNX graph)."""
    run = tmp_path / "run"
    run.mkdir()
    _torch_artifact(run, "00_baseline", "small_cnn", "baseline")
    _torch_artifact(run, "03_prune", "small_cnn_half", "prune")
    _onnx_artifact(run, "05_quantize")
    stages: list[dict[str, Any]] = [
        {
            "index": 0,
            "step": "baseline",
            "artifact": "00_baseline",
            "record": {"step": "baseline", "model": "small_cnn"},
        },
        _eval(1, "00_baseline", 90.0),
    ]
    sens_record = {
        "step": "sensitivity",
        "index": 2,
        "config": {"ratios": [0.0, 0.5]},
        "seconds": 3.0,
        "metric": "val_top1",
        "curves": {
            "features.0": [[0.0, 90.0], [0.25, 89.5], [0.5, 80.0]],
            "features.3": [[0.0, 90.0], [0.25, 89.9], [0.5, 89.7]],
            "<img src=http://x/y.png>": [[0.0, 90.0], [0.5, 89.0]],  # names go into the SVG: escaped
        },
    }
    stages.append(
        {
            "index": 2,
            "step": "sensitivity",
            "artifact": None,
            "record": sens_record if sensitivity else {"step": "sensitivity", "index": 2, "seconds": 0.1},
        }
    )
    stages.append(
        {
            "index": 3,
            "step": "prune",
            "artifact": "03_prune",
            "record": {
                "step": "prune",
                "index": 3,
                "config": {"method": prune_method, "ratio": 0.5},
                "seconds": 5.0,
                "sparsity": 0.5,
            },
        }
    )
    stages.append(_eval(4, "03_prune", 89.0, agreement=95.0))
    q_record: dict[str, Any] = {"step": "quantize", "index": 5, "config": {"method": "ptq"}, "seconds": 2.0}
    if quant:
        q_record |= {
            "layers": {
                "features.0": {"sqnr_db": 31.5},
                "features.3": {"sqnr_db": 18.25},
                "classifier": {"sqnr_db": 40.0},
            },
            "kept_float": ["classifier"],
        }
    stages.append({"index": 5, "step": "quantize", "artifact": "05_quantize", "record": q_record})
    stages.append(_eval(6, "05_quantize", 88.8, agreement=93.0, runtime="onnxruntime"))
    results: dict[str, Any] = {
        "recipe": {
            "name": name,
            "model": {"name": "small_cnn"},
            "data": {"name": "fashion-mnist", "test_limit": 1000},
            "steps": [],
            "benchmark": {"runtimes": ["torch", "onnxruntime"], "batch_sizes": [1, 8]},
        },
        "environment": ENV,
        "stages": stages,
        "final_artifact": "05_quantize",
    }
    if bench:
        results["benchmark"] = {
            "schema": "slimline.bench/1",
            "environment": ENV,
            "settings": {"runtimes": ["torch", "onnxruntime"], "batch_sizes": [1, 8], "threads": 2, "min_runs": 20},
            "peak_gflops": 40.0,
            "results": [
                _bench_row("00_baseline", "torch", 1, 2.0),
                _bench_row("00_baseline", "torch", 8, 10.0),
                _bench_row("03_prune", "torch", 1, 1.0),
                _bench_row("03_prune", "torch", 8, 5.0),
                _bench_row("05_quantize", "onnxruntime", 1, 0.5),
                _bench_row("05_quantize", "onnxruntime", 8, 1.25),
                {
                    "artifact": "05_quantize",
                    "runtime": "openvino",
                    "batch_size": 1,
                    "status": "unavailable",
                    "error": "runtime 'openvino' is not usable here: test",
                    "latency_ms": None,
                },
            ],
            "skipped": [{"artifact": "00_baseline", "runtime": "onnxruntime", "reason": "onnxruntime runs onnx"}],
        }
    (run / "results.json").write_text(json.dumps(results))
    return run


def _external_refs(html: str) -> list[str]:
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    return [r for r in refs if r.startswith(("http://", "https://", "//"))]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    run = make_run(tmp_path_factory.mktemp("full"))
    rep = build_report(run)
    path = write_text(run / REPORT_HTML, rep.html)
    return path, path.read_text(), rep.summary


def test_stage_table_holds_the_figures(full_report: tuple[Path, str, dict[str, Any]]) -> None:
    path, html, summary = full_report
    assert path.name == REPORT_HTML and path.parent.name == "run"
    for name in ("00_baseline", "03_prune", "05_quantize"):
        assert f'id="stage-{name}"' in html
    assert "90.00%" in html and "89.00%" in html and "88.80%" in html
    # change of 03_prune against 00_baseline: -1 pt; paired bound from 95% agreement on 1000 images
    ci = diff_ci(89.0, 1000, 90.0, 1000, agreement=95.0)
    assert ci["method"].startswith("paired")
    half = 1.959964 * math.sqrt((0.05 - 0.01**2) / 1000) * 100
    assert ci["lo"] == pytest.approx(-1.0 - half, abs=1e-6) and ci["hi"] == pytest.approx(-1.0 + half, abs=1e-6)
    assert "\u22121.00 pt" in html and f"[\u2212{1 + half:.1f}, +{half - 1:.1f}]" in html
    # parameters and MACs counted from the real artifacts
    stages = {s["name"]: s for s in summary["stages"]}
    model = load_model("small_cnn_half")
    assert stages["03_prune"]["params"] == count_params(model)
    assert stages["03_prune"]["macs"] == count_macs(model, (1, 28, 28))
    assert stages["05_quantize"]["params"] == 10 * 784 + 10 and stages["05_quantize"]["macs"] == 7840
    assert stages["05_quantize"]["kind"] == "onnx"
    # latency rows: median, p90 and throughput per runtime and batch size
    row = re.search(r'<tr id="stage-03_prune">.*?</tr>(.*?)<tr id="stage-05_quantize">', html, flags=re.S)
    assert row is not None
    assert "<td>torch</td>" in html
    assert ">5</td>" in row.group(1) and ">5.5</td>" in row.group(1) and ">1600</td>" in row.group(1)
    assert ">321.5</td>" in html  # peak memory
    assert "Test CPU 9000" in html and "avx2" in html  # environment


def test_report_embeds_plots_and_nothing_external(full_report: tuple[Path, str, dict[str, Any]]) -> None:
    _, html, summary = full_report
    n_svg = len(re.findall(r'<svg role="img"', html))
    assert n_svg == 5  # accuracy vs throughput, accuracy per stage, latency, sensitivity, quantization error
    assert all(p["drawn"] for p in summary["plots"])
    assert not _external_refs(html)
    assert "<script" not in html.lower() and "<img" not in html
    assert "Content-Security-Policy" in html
    assert "slimline run" in html and "slimline eval -m" in html and "slimline bench" in html


def test_findings_are_computed_from_the_data(full_report: tuple[Path, str, dict[str, Any]]) -> None:
    _, html, summary = full_report
    texts = [f["text"] for f in summary["findings"]]
    speed = [f for f in summary["findings"] if f["topic"] == "speed" and f["figures"].get("artifact") == "03_prune"]
    assert len(speed) == 1
    assert speed[0]["figures"]["speedup"] == {"1": pytest.approx(2.0), "8": pytest.approx(2.0)}
    assert speed[0]["text"].startswith("channel pruning (50%) on torch: 2.0\u00d7 faster, \u22121.0 pt")
    # quantized ONNX on onnxruntime against the pruned model on torch at the same batch size
    q = [f for f in summary["findings"] if f["topic"] == "speed" and f["figures"].get("artifact") == "05_quantize"]
    assert {f["figures"]["batch_size"]: round(f["figures"]["speedup"], 3) for f in q} == {1: 2.0, 8: 4.0}
    overall = [f for f in summary["findings"] if f["topic"] == "overall"]
    assert overall[-1]["figures"] == {
        "batch_size": 8,
        "artifact": "05_quantize",
        "runtime": "onnxruntime",
        "speedup": pytest.approx(8.0),
        "accuracy_delta": pytest.approx(-1.2),
    }
    sizes = {f["figures"]["artifact"]: f["text"] for f in summary["findings"] if f["topic"] == "size"}
    macs_half, macs_full = (
        count_macs(load_model("small_cnn_half"), (1, 28, 28)),
        count_macs(load_model("small_cnn"), (1, 28, 28)),
    )
    assert f"{(1 - macs_half / macs_full) * 100:.0f}% fewer MACs" in sizes["03_prune"]
    assert f"{macs_half / 7840:,.0f}\u00d7 fewer MACs" in sizes["05_quantize"]
    assert any("Most sensitive layer: features.0" in t for t in texts)
    assert any("largest error is in features.3" in t and "kept in float: classifier" in t for t in texts)
    assert any("25.0% of the measured fp32 GEMM peak" in t for t in texts)
    assert any("Pareto-optimal" in t for t in texts)
    for t in texts[:3]:
        assert t.replace("\u2212", "&#x2212;") in html or t in html or _escaped(t) in html


def _escaped(t: str) -> str:
    import html as _h

    return _h.escape(t, quote=True)


def test_unstructured_pruning_is_no_faster_on_dense_runtimes(tmp_path: Path) -> None:
    run = make_run(tmp_path, sensitivity=False, quant=False, prune_method="magnitude")
    res = json.loads((run / "results.json").read_text())
    rows = res["benchmark"]["results"]
    rows[2]["latency_ms"]["median"], rows[3]["latency_ms"]["median"] = 2.02, 9.9  # same work, noise only
    (run / "results.json").write_text(json.dumps(res))
    _torch_artifact(run, "03_prune", "small_cnn", "prune")  # dense: same shapes (and file size) as the baseline
    rep = build_report(run, count_missing=False)
    speed = next(f for f in rep.summary["findings"] if f["topic"] == "speed" and f["figures"]["artifact"] == "03_prune")
    assert speed["text"].startswith("unstructured pruning (50%) on torch (a dense runtime): 1% faster")
    assert "within the latency spread" in speed["text"]
    assert not any(f["topic"] == "size" and f["figures"]["artifact"] == "03_prune" for f in rep.summary["findings"])


def test_repeated_benchmark_processes_are_shown(tmp_path: Path) -> None:
    """A benchmark with ``repeats``: the spread over processes in the table and the overall finding, and
    the reproduce command carries ``--repeats``."""
    run = make_run(tmp_path, sensitivity=False, quant=False)
    res = json.loads((run / "results.json").read_text())
    res["benchmark"]["settings"]["repeats"] = 3
    rows = res["benchmark"]["results"]
    rows[1]["repeats"] = [790.0, 800.0, 812.5]  # 00_baseline on torch, batch 8 (the kept one: 800)
    rows[5]["repeats"] = [6400.0, 6390.0, 6420.0]  # 05_quantize on onnxruntime, batch 8
    (run / "results.json").write_text(json.dumps(res))
    rep = build_report(run, count_missing=False)
    overall = {f["figures"]["batch_size"]: f["text"] for f in rep.summary["findings"] if f["topic"] == "overall"}
    assert overall[8].endswith(
        "Each measured in 3 fresh processes, the median one kept "
        "(samples/s: 05_quantize 6,390–6,420, 00_baseline 790–812)."
    ), overall[8]
    assert "processes" not in overall[1]  # batch 1 was measured once
    from slimline.report.findings import _processes

    row = {"artifact": "a", "repeats": [1.0, 2.0, 3.0]}
    assert _processes(row, row).endswith("(samples/s: a 1–3).")  # the reference itself the fastest: once
    assert "3 processes: 790.0–812.5" in rep.html  # both ends to the same decimals
    from slimline.report import fmt

    assert fmt.span(516.1, 563.0, 4) == "516.1–563.0"
    assert fmt.span(38.321, 63.91, 4) == "38.32–63.91"
    assert fmt.span(6390.2, 6420.7, 3) == "6,390–6,421"
    bench_cmd = next(c["command"] for c in rep.summary["commands"] if c["command"].startswith("slimline bench"))
    assert bench_cmd.endswith("--repeats 3")
    res["benchmark"]["settings"]["repeats"] = 1
    (run / "results.json").write_text(json.dumps(res))
    bench_cmd = next(
        c["command"] for c in build_report(run, count_missing=False).summary["commands"] if "bench" in c["command"]
    )
    assert "--repeats" not in bench_cmd


def test_missing_data_is_skipped_with_a_note(tmp_path: Path) -> None:
    run = make_run(tmp_path, bench=False, sensitivity=False, quant=False)
    rep = build_report(run, count_missing=False)
    plots = {p["key"]: p for p in rep.summary["plots"]}
    assert not plots["pareto"]["drawn"] and "no benchmark" in plots["pareto"]["note"]
    assert not plots["latency"]["drawn"] and not plots["sensitivity"]["drawn"] and not plots["quant-error"]["drawn"]
    assert plots["accuracy"]["drawn"]
    assert rep.html.count('<svg role="img"') == 1
    assert "not benchmarked" in rep.html and "Skipped:" in rep.html
    assert rep.summary["errors"] == []


def test_odd_records_never_crash_the_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    results = {
        "recipe": {"name": "<script>alert('x')</script>", "data": "not a dict"},
        "stages": [
            {"index": 0, "step": "baseline", "artifact": "00_gone", "record": {"step": "baseline"}},
            {"index": 1, "step": "evaluate", "artifact": None, "record": {"metrics": {"top1": "n/a"}}},
            {"index": 2, "step": "sensitivity", "artifact": None, "record": {"curves": {"a": "oops", "b": [[1]]}}},
            {"index": 3, "step": "quantize", "artifact": None, "record": {"layers": [1, 2, None]}},
            "garbage",
        ],
        "benchmark": {
            "results": [
                {
                    "artifact": "00_gone",
                    "runtime": "torch",
                    "latency_ms": None,
                    "status": "error",
                    "error": "worker exited with code 1",
                },
                "junk",
            ]
        },
        "failed_step": "04_<b>x</b>",
    }
    (run / "results.json").write_text(json.dumps(results))
    path = write_report(run)
    html = path.read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<script" not in html and "<b>x</b>" not in html and "04_&lt;b&gt;x&lt;/b&gt;" in html
    assert "worker exited with code 1" in html and "00_gone: no artifact.json" in html
    assert "Skipped:" in html
    assert not _external_refs(html)


def test_report_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, bench=False, sensitivity=False, quant=False)
    (run / REPORT_HTML).write_text("old report")
    import slimline.fileio

    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(slimline.fileio.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(run)
    assert (run / REPORT_HTML).read_text() == "old report"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    monkeypatch.undo()
    write_report(run)
    assert (run / REPORT_HTML).read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_a_report_bug_never_costs_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline.report.collect

    run = make_run(tmp_path, bench=False, sensitivity=False, quant=False)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("<unforeseen>")

    monkeypatch.setattr(slimline.report.collect, "collect", broken)
    html = write_report(run).read_text()
    assert "could not be built" in html and "KeyError" in html and "&lt;unforeseen&gt;" in html
    assert "<unforeseen>" not in html and not _external_refs(html)


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(SlimlineError, match="no results.json"):
        write_report(tmp_path)
    with pytest.raises(SlimlineError, match="not a folder"):
        write_report(tmp_path / "missing")


def test_cli_report(tmp_path: Path) -> None:
    from slimline.cli import app

    run = make_run(tmp_path, bench=False, sensitivity=False, quant=False)
    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["report", str(run), "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["report"] == str(run / REPORT_HTML) and (run / REPORT_HTML).is_file()
    assert any(f["topic"] == "accuracy" for f in data["findings"])
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 1 and "error:" in bad.output and "Traceback" not in bad.output
    assert "Example:" in CliRunner().invoke(app, ["report", "--help"]).output


def test_every_run_ends_with_a_report(tmp_path: Path) -> None:
    recipe = {
        "name": "tiny",
        "model": "small_cnn_half",
        "data": {"name": "digits", "val_size": 50, "test_limit": 60},
        "steps": ["evaluate"],
        "output_dir": str(tmp_path / "run"),
    }
    results = slimline.run(recipe)
    report = tmp_path / "run" / REPORT_HTML
    assert results["report"] == str(report) and report.is_file()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["report"] == str(report)
    assert 'id="stage-00_baseline"' in report.read_text()


def test_diff_ci_methods() -> None:
    unpaired = diff_ci(90.0, 1000, 90.0, 1000)
    assert unpaired["method"].startswith("unpaired") and unpaired["delta"] == 0
    assert unpaired["hi"] == pytest.approx(1.959964 * math.sqrt(2 * 0.09 / 1000) * 100, rel=1e-6)  # about 2.6 pt
    assert not significant(unpaired)
    same = diff_ci(90.0, 1000, 90.0, 1000, agreement=100.0)  # identical predictions: rule-of-three floor
    assert same["hi"] == pytest.approx(1.959964 * math.sqrt(3 / 1000 / 1000) * 100, rel=1e-6)
    big = diff_ci(80.0, 1000, 90.0, 1000, agreement=85.0)
    assert big["delta"] == pytest.approx(-10.0) and significant(big) and big["hi"] < 0
    assert math.isnan(diff_ci(80.0, 0, 90.0, 1000)["lo"])


def test_pareto_front() -> None:
    pts = [(10.0, 90.0), (20.0, 89.0), (15.0, 85.0), (30.0, 80.0), (20.0, 88.0)]
    assert pareto_front(pts) == [0, 1, 3]


def test_record_readers_accept_common_shapes(tmp_path: Path) -> None:
    assert find_curves({"sensitivity": {"curves": {"l1": {"0.1": 0.9, "0.5": 0.7}}}}) == {
        "l1": [(0.1, 0.9), (0.5, 0.7)]
    }
    assert find_curves({"per_layer": [{"layer": "l2", "ratios": [0.5, 0.1], "top1": [70, 90]}]}) == {
        "l2": [(0.1, 90.0), (0.5, 70.0)]
    }
    (tmp_path / "sensitivity.json").write_text(json.dumps({"curves": {"c": [[0, 1], [1, 0]]}}))
    assert find_curves({"file": "sensitivity.json"}, tmp_path) == {"c": [(0.0, 1.0), (1.0, 0.0)]}
    assert find_curves({"curves": {"x": "nope"}}) is None
    errs = find_layer_errors(
        {"layers": [{"name": "a", "sqnr_db": 20}, {"name": "b", "sqnr_db": 12}], "float_layers": ["b"]}
    )
    assert errs == {"metric": "sqnr_db", "layers": {"a": 20.0, "b": 12.0}, "float_layers": ["b"]}
    assert find_layer_errors({"layers": ["x"]}) is None
    # the sensitivity step's own record: {kind: {baseline, units: {name: {curve: [{ratio, loss, top1}]}}}}
    rec = {
        "split": "val",
        "sensitivity": {
            "channel": {
                "kind": "channel",
                "metric": "loss",
                "baseline": {"loss": 0.3},
                "units": {
                    "conv1": {"curve": [{"ratio": 0.5, "loss": 0.9, "top1": 70.0}, {"ratio": 0.2, "loss": 0.4}]},
                    "block1": {"params": 10, "loss": 2.0},
                },
            }
        },
    }
    assert find_sensitivity(rec) == [
        {"kind": "channel", "metric": "val loss", "curves": {"conv1": [(0.0, 0.3), (0.2, 0.4), (0.5, 0.9)]}}
    ]
    q = {"excluded_nodes": ["/fc/Gemm"], "left_float": [{"name": "/conv9/Conv", "op": "Conv"}], "config": {}}
    assert find_float_layers(q) == ["/fc/Gemm", "/conv9/Conv"]
    data = collect(make_run(tmp_path, bench=False), count_missing=False)
    assert data.reference == "00_baseline" and data.sensitivity[0]["metric"] == "val_top1"


@pytest.mark.slow
def test_report_renders_in_headless_chromium(full_report: tuple[Path, str, dict[str, Any]], tmp_path: Path) -> None:
    """tests/check_report_chromium.py: no console message, every plot laid out and drawn in the screenshot."""
    import importlib.util

    script = Path(__file__).resolve().parent / "check_report_chromium.py"
    spec = importlib.util.spec_from_file_location("check_report_chromium", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    chromium = mod.find_chromium(None)
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    path, _, _ = full_report
    result = mod.check(path, tmp_path / "shot.png", chromium, timeout=120)
    assert result["problems"] == [] and result["console_messages"] == []
    assert result["plots_in_file"] == 5 and len(result["plots"]) == 5
    assert all(ink >= mod.MIN_PLOT_INK for ink in result["screenshot"]["plot_ink"].values())


def test_rows_measured_on_a_busy_machine_are_marked(tmp_path: Path) -> None:
    """A benchmark row whose ``machine_load`` says busy gets a badge and a sentence under the stage table."""
    run = make_run(tmp_path, sensitivity=False, quant=False)
    res = json.loads((run / "results.json").read_text())
    rows = res["benchmark"]["results"]
    rows[1]["machine_load"] = {"other_cpu_s": 1.5, "other_share": 0.63, "busy": True}
    rows[2]["machine_load"] = {"other_cpu_s": 0.01, "other_share": 0.01, "busy": False}
    (run / "results.json").write_text(json.dumps(res))
    rep = build_report(run, count_missing=False)
    assert rep.html.count('<span class="busy" title="other processes used 63% of the CPUs">busy</span>') == 1
    assert "were measured while other processes used up to 63% of the CPUs" in rep.html
    rows[1]["machine_load"]["busy"] = False
    (run / "results.json").write_text(json.dumps(res))
    assert "were measured while other processes" not in build_report(run, count_missing=False).html
