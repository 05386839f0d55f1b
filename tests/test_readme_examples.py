"""The README's code blocks marked ``<!-- runnable -->`` run as written, from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_RUNNABLE = re.compile(r"<!--\s*runnable\s*-->\s*\n```python\n(.*?)```", re.S)


def runnable_blocks(text: str) -> list[str]:
    """The code of every ```python block that directly follows a ``<!-- runnable -->`` comment."""
    return _RUNNABLE.findall(text)


def test_finds_marked_blocks_only() -> None:
    text = "```python\nskipped()\n```\n<!-- runnable -->\n```python\nprint(1)\n```\n"
    assert runnable_blocks(text) == ["print(1)\n"]


def test_readme_has_a_runnable_python_example() -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md should hold at least one ```python block marked <!-- runnable -->"


@pytest.mark.parametrize("index", range(len(runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8")))))
def test_readme_block_runs(index: int) -> None:
    code = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[index]
    if "../shared/data" in code and not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data (the sample data beside the clone) is not here")
    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": src, "SLIMLINE_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README block {index} failed:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), "a README example should print what it shows"
