"""The typer app and what every command shares: error handling and ``--json`` output."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from slimline.errors import SlimlineError
from slimline.fileio import write_json
from slimline.progress import console

app = typer.Typer(
    name="slimline",
    help="Make trained models small and fast to deploy, with measured proof.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION = typer.Option(None, "--json", help="also write the printed figures to this JSON file")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show full tracebacks on errors")) -> None:
    _state["debug"] = debug


def friendly(fn: F) -> F:
    """Print SlimlineErrors as one red line and exit 1 (tracebacks only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SlimlineError as e:
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {e}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def dump_json(path: Path | None, data: Any) -> None:
    if path is not None:
        write_json(path, data)
        console.print(f"wrote {path}")


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))
