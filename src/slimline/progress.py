"""Rich progress bars and the shared console; quiet when not attached to a terminal in tests."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def progress_enabled() -> bool:
    return os.environ.get("SLIMLINE_PROGRESS", "1") != "0" and "pytest" not in sys.modules


def make_progress(transient: bool = True) -> Progress:
    """A progress bar with description, count, elapsed and remaining time, plus a free text field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=not progress_enabled(),
    )
