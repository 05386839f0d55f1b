"""benchmarks/: one folder per study, each run.sh well formed, results.json gathered in one shape, no internals."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
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


CODE = sorted((ROOT / "benchmarks").glob("**/*.py"))


@pytest.mark.parametrize("path", CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_benchmark_code_uses_no_hand_built_context(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not {"RunContext", "DataBundle"} & (names | imported), f"{path.name} builds a run context by hand"
    assert "type: ignore" not in path.read_text()


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT / "benchmarks")))
def test_benchmark_code_imports_only_the_public_api(path: Path) -> None:
    """Studies use what users use: ``slimline`` and ``slimline.api`` (its ``__all__``), nothing internal."""
    import slimline
    import slimline.api

    allowed = {"slimline": set(slimline.__all__) | {"api"}, "slimline.api": set(slimline.api.__all__)}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name in allowed or not alias.name.startswith("slimline"), f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slimline"):
            assert node.module in allowed, f"line {node.lineno}: from {node.module} import ...: use slimline.api"
            for alias in node.names:
                assert alias.name in allowed[node.module], f"line {node.lineno}: {alias.name} is not public"


def test_the_public_api_resolves_every_name_it_lists() -> None:
    import slimline.api

    tree = ast.parse(Path(slimline.api.__file__).read_text())
    typed = {  # the names mypy sees (under TYPE_CHECKING) are the lazy ones, no more, no fewer
        a.asname or a.name
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for imp in node.body
        if isinstance(imp, ast.ImportFrom)
        for a in imp.names
    }
    assert typed == set(slimline.api._LAZY)

    for name in slimline.api.__all__:
        obj = getattr(slimline.api, name)
        if callable(obj) and not isinstance(obj, type(pytest)):
            assert (obj.__doc__ or "").strip(), f"public {name} has no docstring (the docs list its first line)"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = slimline.api.nope


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


_RUN_SH = re.compile(r"benchmarks/([\w-]+)/run\.sh(?: ([a-z][\w-]*))?")
_FIGURE = re.compile(r"\d(?:[\d,.]*)\s*(?:%|ms\b|MB\b|img/s|items/s|req/s|rps|GFLOP/s|×|x\b)")


def _known_parts(study: str) -> set[str] | None:
    """The parts a study's run.sh accepts (``run_parts STUDY "KNOWN" ...``), or None when it takes no part name."""
    m = re.search(r'run_parts \S+ "([^"]*)"', (ROOT / "benchmarks" / study / "run.sh").read_text())
    return set(m.group(1).split()) | {"all"} if m else None


def _figure_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """Each paragraph or table of ``text`` with a measured figure: (line, block, the run.sh cited for it, if any).

    A block's command is the last ``benchmarks/<name>/run.sh`` named in it or before it under the same heading."""
    out: list[tuple[int, str, str | None]] = []
    current: str | None = None
    block: list[str] = []
    start = 0

    def close() -> None:
        nonlocal current
        body = "\n".join(block)
        cites = _RUN_SH.findall(body)
        if cites:
            current = cites[-1][0]
        if _FIGURE.search(body):
            out.append((start, body, current))

    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        if line.startswith("#"):
            if block:
                close()
            block, current = [], None
            continue
        is_table = line.startswith("|")
        if not line.strip() or (block and is_table != block[-1].startswith("|")):
            if block:
                close()
            block = []
        if line.strip():
            if not block:
                start = i
            block.append(line)
    if block:
        close()
    return out


def test_every_figure_in_results_names_the_benchmark_that_made_it() -> None:
    text = (ROOT / "docs" / "results.md").read_text()
    for study, part in _RUN_SH.findall(text):
        assert (ROOT / "benchmarks" / study / "run.sh").is_file(), f"docs/results.md cites benchmarks/{study}/run.sh"
        known = _known_parts(study)
        if part and known is not None:
            assert part in known, f"benchmarks/{study}/run.sh has no part {part!r} (it has {sorted(known)})"
    blocks = _figure_blocks(text)
    assert len(blocks) >= 10
    for line, body, command in blocks:
        assert command is not None, f"docs/results.md line {line}: a figure with no benchmarks/ command: {body[:80]!r}"
        rows = body.splitlines()
        if rows[0].startswith("|") and "command" in rows[0]:  # a table citing one command per row
            for row in rows[2:]:
                assert _RUN_SH.search(row), f"docs/results.md line {line}: row {row[:50]!r} cites no benchmarks/ run.sh"
    readme_rows = [b for b in _figure_blocks((ROOT / "README.md").read_text()) if "| command |" in b[1]]
    assert readme_rows, "the README's headline figures table has a command column"
    for _, body, _ in readme_rows:
        for row in body.splitlines()[2:]:
            assert _RUN_SH.search(row), f"README headline row {row[:50]!r} cites no benchmarks/ run.sh"
    for span in re.findall(r"`(slimline [^`]*)`", text):
        assert len(span.split()) <= 2, f"docs/results.md cites `{span}`: cite the benchmarks/ run.sh that runs it"


def test_the_results_check_catches_an_uncited_figure() -> None:
    blocks = _figure_blocks("## A\n\nSee `benchmarks/edge/run.sh`.\n\n| a | 3 ms |\n\n## B\n\n| b | 92.6% |\n")
    assert [(b[0], b[2]) for b in blocks] == [(5, "edge"), (9, None)]
