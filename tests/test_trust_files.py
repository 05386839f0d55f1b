"""Files and folders slimline writes get the user's umask, like any ``open()``/``mkdir``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimline.artifact import ArtifactWriter
from slimline.fileio import current_umask, write_json, write_text


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "fmode", "dmode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]
)
def test_written_files_and_artifacts_follow_umask(
    tmp_path: Path, umask: None, mask: int, fmode: int, dmode: int
) -> None:
    os.umask(mask)
    assert current_umask() == mask
    j = write_json(tmp_path / "rec" / "results.json", {"a": 1})
    t = write_text(tmp_path / "report.html", "<html></html>")
    with ArtifactWriter(tmp_path / "art", "onnx", {}, []) as w:
        w.add("model", "model.onnx").write_bytes(b"x")
    assert _mode(j) == fmode and _mode(t) == fmode
    assert _mode(tmp_path / "art") == dmode
    assert _mode(tmp_path / "art" / "artifact.json") == fmode
    assert _mode(tmp_path / "art" / "model.onnx") == fmode
