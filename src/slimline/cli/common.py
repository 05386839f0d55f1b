"""Pieces of recipes that several commands build from the same command-line options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

DOWNLOAD_OPTION = typer.Option(
    False, "--download", help="download the dataset if it is not found locally (off: nothing leaves this machine)"
)
TRUST_CODE_OPTION = typer.Option(
    False,
    "--trust-code",
    help="allow artifacts to import the package.module:factory named in their model.json (off: only factories "
    "you name yourself)",
)


def data_section(
    name: str,
    data_dir: Path | None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: float | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """A recipe's ``data`` section; a ``val_size`` of 1 or more is a count, below 1 a fraction (None: the default)."""
    section: dict[str, Any] = {
        "name": name,
        "data_dir": str(data_dir) if data_dir else None,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "download": download,
    }
    if val_size is not None:
        section["val_size"] = int(val_size) if val_size >= 1 else val_size
    return section
