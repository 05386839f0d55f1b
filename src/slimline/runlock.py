"""One writer per run folder: an exclusive ``flock`` on ``RUN_DIR/.slimline.lock`` for the whole run,
and removal of the temporary folders and files an interrupted run left behind."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimline.errors import RunFolderBusy

LOCK_FILE = ".slimline.lock"
# ArtifactWriter's staging folders (.NN_step.<random>), replaced folders (.NN_step.old), atomic-write temporaries
_STAGING = re.compile(r"^\.\d+_[^.]+\..+$")


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    name = Path(argv[0]).name
    if name in ("__main__.py", "-c", "") or name.startswith("python"):
        name = "slimline"
    return " ".join([name, *argv[1:]])


def _holder_text(info: dict[str, Any]) -> str:
    started = time.strftime("%H:%M:%S", time.localtime(info["started"])) if info.get("started") else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {started}: {info.get('command', '?')}"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock until the block ends; raise :class:`RunFolderBusy` at once if another holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
            except (ValueError, OSError):
                info = {}
            raise RunFolderBusy(
                f"{run_dir} is being written by another slimline run ({_holder_text(info)}); "
                "wait for it or use -o for another folder"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": _command_line()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_leftovers(run_dir: Path) -> int:
    """Delete what an interrupted run left in ``run_dir``: staging folders, ``.*.old`` and ``.*.tmp``.

    Call it with the lock held. Checkpoints (``.NN_step.qat-checkpoint.pt``) are kept: a rerun resumes from them.
    """
    removed = 0
    for p in run_dir.iterdir():
        n = p.name
        if not n.startswith(".") or n == LOCK_FILE:
            continue
        staging = p.is_dir() and not p.is_symlink() and _STAGING.match(n) is not None
        if not (staging or n.endswith(".old") or n.endswith(".tmp")):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed
