"""The main job end to end, on a data slice: `slimline demo --quick`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from slimline.artifact import Artifact
from slimline.cli import app


def test_demo_quick_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "-o", str(out), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    steps = [s["step"] for s in results["stages"]]
    for needed in ("train", "sensitivity", "prune", "fuse", "export_onnx", "quantize", "export_openvino", "evaluate"):
        assert needed in steps
    kinds = {Artifact.load(out / s["artifact"]).kind for s in results["stages"] if s["artifact"]}
    assert kinds == {"torch", "onnx", "openvino"}
    prune = next(s["record"] for s in results["stages"] if s["step"] == "prune")
    assert prune["reduction"]["macs"] >= 0.45 and prune["reload_check"]["passed"]
    bench = results["benchmark"]["results"]
    assert {r["runtime"] for r in bench if r["status"] == "ok"} >= {"torch", "onnxruntime", "openvino"}
    assert all(r["throughput"] > 0 for r in bench if r["status"] == "ok")
    html = (out / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert f"report: {out / 'report.html'}" in res.output
