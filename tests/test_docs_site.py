"""The docs site builds with no warning (``mkdocs build --strict``), with its generated reference pages, and a
page naming an option the CLI lacks fails the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_gen_files"):
        pytest.importorskip(module)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NO_MKDOCS_2_WARNING": "1",
        "DISABLE_MKDOCS_2_WARNING": "true",
    }
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)]
    return subprocess.run(cmd, cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = _build(ROOT / "mkdocs.yml", site)
    assert done.returncode == 0, done.stderr[-3000:]
    recipe = (site / "reference" / "recipe.html").read_text(encoding="utf-8")
    assert "val_size" in recipe and "calibration" in recipe.lower()  # recipe models and step configs
    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert "slimline bench" in cli and "--min-runs" in cli
    api = (site / "reference" / "api.html").read_text(encoding="utf-8")
    assert "apply_step" in api and "run_named" in api
    assert (site / "results.html").exists()


def test_a_page_naming_a_missing_option_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "stale.md").write_text("# Stale\n\n`slimline bench model.onnx --min-rounds 5`\n")
    done = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "`slimline bench` has no option --min-rounds" in done.stderr
