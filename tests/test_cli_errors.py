"""Every failure is one line without --debug: OS errors with their path, a full disk, interruption."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slimline.cli import app
from slimline.errors import DiskFull, disk_full_check, os_error_message

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), SLIMLINE_PROGRESS="0")
    return subprocess.run(
        [sys.executable, "-m", "slimline", *args], capture_output=True, text=True, env=env, timeout=300, **kw
    )  # type: ignore[call-overload]


def _one_error_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert "Traceback" not in text, text
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_output_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(
        app, ["train", "-m", "small_cnn_half", "-d", "digits", "--epochs", "1", "-o", str(tmp_path / "afile" / "out")]
    )
    assert res.exit_code == 1
    line = _one_error_line(res.output)
    assert "afile" in line and "not a folder" in line


def test_full_disk_names_the_path_and_free_space(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "size=256k") as small:
        res = _cli("export", "small_cnn", "-o", str(small / "exported"))
        assert res.returncode == 1, res.stderr
        line = _one_error_line(res.stderr)
        assert "disk is full" in line and str(small) in line and "MB free" in line
        assert not any(small.iterdir()), "a failed write leaves nothing behind"


def test_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        res = _cli("export", "small_cnn", "-o", str(ro / "exported"))
        assert res.returncode == 1
        assert "read-only" in _one_error_line(res.stderr)


def test_unexpected_exceptions_are_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise IndexError("list index out of range")

    monkeypatch.setattr("slimline.api.evaluate_model", boom)
    res = runner.invoke(app, ["eval", "-m", "small_cnn", "-d", "digits"])
    assert res.exit_code == 1
    line = _one_error_line(res.output)
    assert "unexpected IndexError" in line and "--debug" in line


def test_disk_full_check_only_blames_the_disk_when_it_is_full(tmp_path: Path) -> None:
    disk_full_check(tmp_path / "x", RuntimeError("unexpected pos"))  # plenty of space: not a disk problem
    with pytest.raises(DiskFull, match="disk is full"):
        disk_full_check(tmp_path / "x", OSError(28, "No space left on device"))
    assert "read-only" in os_error_message(OSError(30, "Read-only file system", "/x"))


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupt_exits_with_one_line(tmp_path: Path, sig: signal.Signals, code: int, word: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), SLIMLINE_PROGRESS="0")
    cmd = [
        sys.executable,
        "-m",
        "slimline",
        "train",
        "-m",
        "small_cnn",
        "-d",
        "digits",
        "--epochs",
        "200",
        "-o",
        str(tmp_path / "t"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "t").exists() and not any(tmp_path.glob(".t*")) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    line = _one_error_line(err)
    assert word in line and "run the same command again" in line.lower()


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"files": {}}', "'kind' is None"),
        ('{"kind": "torch", "files": {"model": "../../etc/passwd"}}', "not a name inside the artifact folder"),
        ("{not json", "is corrupt"),
    ],
)
def test_corrupt_artifact_is_one_line(tmp_path: Path, content: str, says: str) -> None:
    art = tmp_path / "art"
    art.mkdir()
    (art / "artifact.json").write_text(content)
    res = runner.invoke(app, ["eval", "-m", str(art), "-d", "digits"])
    assert res.exit_code == 1
    line = _one_error_line(res.output)
    assert says in " ".join(line.split()) and "unexpected" not in line


def test_empty_weights_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "zero.pt").write_bytes(b"")
    res = runner.invoke(app, ["eval", "-m", "small_cnn", "--weights", str(tmp_path / "zero.pt"), "-d", "digits"])
    assert res.exit_code == 1 and "is empty (0 bytes)" in " ".join(_one_error_line(res.output).split())
