"""The docs site builds with no warning (``mkdocs build --strict``), with its generated reference pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_gen_files"):
        pytest.importorskip(module)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NO_MKDOCS_2_WARNING": "1",
        "DISABLE_MKDOCS_2_WARNING": "true",
    }
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-q",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(tmp_path / "site"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    recipe = (site / "reference" / "recipe.html").read_text(encoding="utf-8")
    assert "val_size" in recipe and "calibration" in recipe.lower()  # recipe models and step configs
    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert "slimline bench" in cli and "--min-runs" in cli
    api = (site / "reference" / "api.html").read_text(encoding="utf-8")
    assert "apply_step" in api and "run_named" in api
    assert (site / "results.html").exists()
