"""What machine and libraries a result was measured with."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

_LIBS = ("torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "torch-pruning", "slimline")
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "fma")


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": {f: f in flags for f in _FLAGS}}


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """The machine and software a figure was measured with: CPU and its flags, cores, memory, library versions."""
    versions: dict[str, str | None] = {}
    for lib in _LIBS:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    import torch

    return {
        "cpu": cpu_info(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


# --------------------------------------------------------------------------- child processes


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``).

    Called by a child at its own start rather than in the parent's ``preexec_fn``: a ``preexec_fn``
    runs between fork and exec in a parent that may hold other threads' locks (Python's docs warn it
    can deadlock), while a call in the child is ordinary code. The child may start after its parent
    has already died, so with ``parent_pid`` (the pid the parent had) a changed ``getppid()`` ends it
    at once. Note the signal follows the parent *thread* that started the child. Returns False where
    the call is not available (not Linux).
    """
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)  # the parent is gone already: nobody waits for this result
    return True


# --------------------------------------------------------------------------- load from other processes

BUSY_SHARE = 0.10
"""A measurement is marked busy when other processes used more than this share of all CPUs' time
during it: 10% of a machine's CPUs is already one busy core of ten, enough to shift the thread
scheduling of a multi-threaded runtime by a few percent."""


@dataclass(frozen=True)
class CpuSample:
    """Busy jiffies of the whole machine (``/proc/stat``) and this process's CPU seconds, at one wall time."""

    busy_jiffies: int
    own_cpu_s: float
    wall_s: float
    ncpus: int


def _clk_tck() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def parse_proc_stat(text: str) -> tuple[int, int] | None:
    """(busy jiffies summed over all CPUs, number of CPUs) from ``/proc/stat`` text; None if absent.

    Busy is user + nice + system + irq + softirq + steal (not idle or iowait; guest time is already
    counted in user and nice).
    """
    busy, ncpus = None, 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu" and len(parts) >= 9:
            v = [int(p) for p in parts[1:9]]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        elif parts[0].startswith("cpu") and parts[0][3:].isdigit():
            ncpus += 1
    return None if busy is None else (busy, max(ncpus, 1))


def cpu_load_sample(stat_path: str = "/proc/stat") -> CpuSample | None:
    """The machine's busy CPU time and this process's own (all its threads), now; None off Linux."""
    import time

    try:
        with open(stat_path) as f:
            parsed = parse_proc_stat(f.read())
    except OSError:
        return None
    if parsed is None:
        return None
    return CpuSample(parsed[0], time.process_time(), time.perf_counter(), parsed[1])


def other_load(
    before: CpuSample | None, after: CpuSample | None, clk_tck: int | None = None, threshold: float = BUSY_SHARE
) -> dict[str, Any] | None:
    """CPU time other processes took between two samples: ``{other_cpu_s, other_share, busy}``.

    ``other_cpu_s`` = the machine's busy seconds minus this process's own; ``other_share`` = that over
    wall time x CPUs (at least 0); ``busy`` when the share is above ``threshold`` (:data:`BUSY_SHARE`).
    None when either sample is missing.
    """
    if before is None or after is None:
        return None
    tck = clk_tck or _clk_tck()
    other = (after.busy_jiffies - before.busy_jiffies) / tck - (after.own_cpu_s - before.own_cpu_s)
    other = max(0.0, other)
    wall = after.wall_s - before.wall_s
    share = other / (wall * after.ncpus) if wall > 0 else 0.0
    share = max(0.0, share)
    return {"other_cpu_s": round(other, 4), "other_share": round(share, 4), "busy": share > threshold}
