"""``slimline`` command line: thin wrappers over the Python API, one module per command group."""

from __future__ import annotations

import importlib

from slimline.cli.app import app, install_signal_handlers

# One line per command module.
_COMMAND_MODULES = (
    "core",
    "export",
    "bench",
    "distill",
    "prune",
    "quantize",
    "optimize",
    "report",
    "inspect",
    "serve",
    "search",
)

for _mod in _COMMAND_MODULES:
    try:
        importlib.import_module(f"slimline.cli.{_mod}")
    except ModuleNotFoundError as _e:
        if _e.name != f"slimline.cli.{_mod}":
            raise


def main() -> None:
    install_signal_handlers()
    app()


__all__ = ["app", "main"]
