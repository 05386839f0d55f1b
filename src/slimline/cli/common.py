"""Pieces of recipes that several commands build from the same command-line options."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def data_section(
    name: str,
    data_dir: Path | None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: float | None = None,
) -> dict[str, Any]:
    """A recipe's ``data`` section; a ``val_size`` of 1 or more is a count, below 1 a fraction (None: the default)."""
    section: dict[str, Any] = {
        "name": name,
        "data_dir": str(data_dir) if data_dir else None,
        "train_limit": train_limit,
        "test_limit": test_limit,
    }
    if val_size is not None:
        section["val_size"] = int(val_size) if val_size >= 1 else val_size
    return section
