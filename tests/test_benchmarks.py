"""benchmarks/: one folder per study, each run.sh well formed, results.json gathered in one shape, no internals."""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "benchmarks").glob("*/run.sh"))


def _results_module():  # noqa: ANN202 - a module loaded by path
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "benchmarks" / "results.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scripts_folder_is_gone_and_every_study_has_a_run_sh() -> None:
    assert not (ROOT / "scripts").exists()
    names = {p.name for p in STUDIES}
    assert {"export_parity", "quant_numerics", "prune_resnet56", "cifar_resnet56"} <= names
    for d in (ROOT / "benchmarks").iterdir():
        if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.py")):
            assert (d / "run.sh").is_file(), f"{d.name} has code but no run.sh"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_run_sh_is_well_formed(study: Path) -> None:
    text = (study / "run.sh").read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[1].startswith("# ") and len(lines[1]) > 20, "the first comment line says what it measures"
    assert "set -euo pipefail" in text and 'cd "$(dirname "$0")/../.."' in text
    assert "PY=${PY:-.venv/bin/python}" in text and "SLIMLINE_PROGRESS=0" in text
    assert f"runs/benchmarks/{study.name}" in text
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(study / "run.sh")], check=True)


CODE = sorted((ROOT / "benchmarks").glob("*/*.py"))


@pytest.mark.parametrize("path", CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_benchmark_code_uses_no_hand_built_context(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not {"RunContext", "DataBundle"} & (names | imported), f"{path.name} builds a run context by hand"
    assert "type: ignore" not in path.read_text()


def test_results_gathers_parts_with_environment_and_checks(tmp_path: Path) -> None:
    mod = _results_module()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"n": 3, "checks": {"same": True, "close": False}}))
    b.write_text(json.dumps({"figure": 1.5}))
    target = tmp_path / "out" / "results.json"
    mod.gather("demo", {"a": a}, "benchmarks/demo/run.sh a", out=target)
    mod.gather("demo", {"b": b}, "benchmarks/demo/run.sh b", out=target)  # a part run later joins the file
    doc = json.loads(target.read_text())
    assert doc["study"] == "demo" and doc["command"] == "benchmarks/demo/run.sh b"
    assert doc["parts"] == {"a": {"n": 3, "checks": {"same": True, "close": False}}, "b": {"figure": 1.5}}
    assert doc["checks"] == {"a": {"same": True, "close": False}}
    assert "python" in json.dumps(doc["environment"]).lower()
    with pytest.raises(SystemExit, match="no part file"):
        mod.gather("demo", {"c": tmp_path / "missing.json"}, "x", out=target)
    assert json.loads(target.read_text()) == doc  # nothing written when a part is missing


def test_make_bench_list_lists_every_study() -> None:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-s", "bench-list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for study in STUDIES:
        line = next(ln for ln in out.splitlines() if ln.startswith(f"benchmarks/{study.name}/run.sh"))
        assert (study / "run.sh").read_text().splitlines()[1][2:] in line
