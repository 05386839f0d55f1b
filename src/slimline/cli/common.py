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

PREPROCESS_HELP = (
    "imagefolder: how images become inputs, as YAML/JSON or a .yaml/.json file, e.g. "
    "'{resize: [320, 320], scale: 1/255, mean: [0, 0, 0], std: [1, 1, 1], layout: NCHW, channels: RGB}' "
    "(default: scale 1/255 and ImageNet mean/std, recorded in the artifact)"
)


def preprocess_option() -> Any:
    """``--preprocess`` (a fresh option per command)."""
    return typer.Option(None, "--preprocess", help=PREPROCESS_HELP)


def data_section(
    name: str,
    data_dir: Path | None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: float | None = None,
    download: bool = False,
    preprocess: str | None = None,
) -> dict[str, Any]:
    """A recipe's ``data`` section; a ``val_size`` of 1 or more is a count, below 1 a fraction (None: the default).
    ``name`` may be a ``package.module:function`` factory; ``preprocess`` is YAML/JSON text or a file."""
    from slimline.data import is_factory
    from slimline.data.preprocess import parse_preprocess

    pp = parse_preprocess(preprocess)
    section: dict[str, Any] = {
        "factory" if is_factory(name) else "name": name,
        "preprocess": pp.to_dict() if pp else None,
        "data_dir": str(data_dir) if data_dir else None,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "download": download,
    }
    if val_size is not None:
        section["val_size"] = int(val_size) if val_size >= 1 else val_size
    return section
