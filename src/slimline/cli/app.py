"""The typer app and what every command shares: error handling and ``--json`` output."""

from __future__ import annotations

import functools
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from slimline.errors import Interrupted, SlimlineError, os_error_message
from slimline.fileio import write_json
from slimline.progress import console

app = typer.Typer(
    name="slimline",
    help="Make trained models small and fast to deploy, with measured proof.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text renders literally: no markup, no ':name:' emoji codes
)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION = typer.Option(None, "--json", help="also write the printed figures to this JSON file")


def _version(value: bool) -> None:
    if value:
        from slimline import __version__

        print(f"slimline {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="show full tracebacks on errors"),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    _state["debug"] = debug


def friendly(fn: F) -> F:
    """Every failure is one red line and a non-zero exit; ``--debug`` re-raises it with its traceback.

    slimline's own errors say the cause and the fix; OS errors (disk full, read-only, not a folder...) are
    described with their path; anything else is named as unexpected. Ctrl-C and SIGTERM exit 130 / 143.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt as e:
            if _state["debug"]:
                raise
            signum = getattr(e, "signum", signal.SIGINT)
            how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            detail = getattr(e, "detail", "") or "finished steps and files are kept; run the same command again"
            _fail(f"interrupted ({how}): {detail}")
            raise typer.Exit(128 + int(signum)) from None
        except Exception as e:  # noqa: BLE001 - the one place where every failure becomes one line
            if _state["debug"]:
                raise
            _fail(error_line(e))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def error_line(e: BaseException) -> str:
    """The one line a user sees for ``e``."""
    if isinstance(e, SlimlineError):
        return str(e)
    if isinstance(e, OSError):
        return os_error_message(e)
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    if isinstance(e, MemoryError):
        return "out of memory: use a smaller batch size or fewer samples"
    return (
        f"unexpected {type(e).__name__}{': ' + first if first else ''} "
        "(rerun with --debug for the traceback, and report it if the input looks right)"
    )


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def _terminate(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM raises :class:`Interrupted` in the main thread, as Ctrl-C does, so cleanup code runs."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def dump_json(path: Path | None, data: Any) -> None:
    if path is not None:
        write_json(path, data)
        console.print(f"wrote {path}")


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))
