"""Shared fixtures: paths to the real data beside the repo, tiny models, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SLIMLINE_PROGRESS", "0")
os.environ.setdefault("NNCF_CI", "1")  # NNCF: no telemetry


def pytest_sessionstart(session: pytest.Session) -> None:
    """OpenVINO counts a missing consent file as consent: switch telemetry off for the whole run."""
    from slimline.runtimes.openvino import disable_telemetry

    disable_telemetry()


ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    for cand in (os.environ.get("SLIMLINE_SHARED"), ROOT.parent / "shared", ROOT / "shared"):
        if cand and (Path(cand) / "data" / "cifar10").is_dir():
            return Path(cand)
    return ROOT.parent / "shared"


SHARED = _shared()
CIFAR_DIR = SHARED / "data" / "cifar10"
RESNET56 = CIFAR_DIR / "resnet56-4bfd9763.th"
RESNET20 = CIFAR_DIR / "resnet20-12fca82f.th"


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    if not CIFAR_DIR.is_dir():
        pytest.skip(f"shared CIFAR-10 data not found at {CIFAR_DIR}")
    return CIFAR_DIR
