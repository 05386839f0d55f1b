"""Benchmark workers die with their parent, and their temporary folders go with them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slimline.bench.harness import TMP_PREFIX, clean_stale_tmp

SRC = str(Path(__file__).resolve().parents[1] / "src")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped running


def _wait_for(cond, seconds: float) -> bool:  # noqa: ANN001
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _start_bench(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=SRC, SLIMLINE_PROGRESS="0")
    cmd = [
        sys.executable,
        "-c",
        "from slimline.cli import main; main()",
        "bench",
        "small_cnn",
        "-r",
        "torch",
        "-b",
        "1",
        "--min-seconds",
        "60",
        "--no-peak",
        "--workdir",
        str(tmp_path / "work"),
    ]
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found: list[int] = []

    def worker_started() -> bool:
        found[:] = [c for c in _children(parent.pid) if "slimline.bench.worker" in _cmdline(c)]
        return bool(found) or parent.poll() is not None

    assert _wait_for(worker_started, 120), "no benchmark worker started"
    assert found, f"slimline bench exited with code {parent.returncode} before starting a worker"
    return parent, found[0]


def test_sigterm_to_bench_kills_the_worker_and_removes_its_folder(tmp_path: Path) -> None:
    parent, worker = _start_bench(tmp_path)
    try:
        parent.send_signal(signal.SIGTERM)
        assert _wait_for(lambda: not _alive(worker), 10), "the worker outlived slimline bench"
        parent.wait(timeout=30)
        assert not list((tmp_path / "tmp").glob(f"{TMP_PREFIX}*"))
    finally:
        for pid in (worker, parent.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_dies_with_a_parent_killed_outright(tmp_path: Path) -> None:
    parent, worker = _start_bench(tmp_path)
    try:
        parent.kill()  # SIGKILL: no handler runs; PR_SET_PDEATHSIG takes the worker along
        parent.wait(timeout=30)
        assert _wait_for(lambda: not _alive(worker), 10), "the worker outlived slimline bench"
        assert [d.name for d in clean_stale_tmp(tmp_path / "tmp")] != []  # the next bench removes the folder
        assert not list((tmp_path / "tmp").glob(f"{TMP_PREFIX}*"))
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_stale_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live, other = (
        tmp_path / f"{TMP_PREFIX}{dead.pid}-abc",
        tmp_path / f"{TMP_PREFIX}{os.getpid()}-def",
        tmp_path / f"{TMP_PREFIX}xyz",
    )
    for d in (stale, live, other):
        d.mkdir()
    assert clean_stale_tmp(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
