"""Writes the docs site's generated pages at build time (mkdocs-gen-files): the recipe reference from the
pydantic schemas, the CLI reference from the typer app. Nothing here is written twice by hand."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

import mkdocs_gen_files
import typer
from pydantic import BaseModel

from slimline.cli import app
from slimline.recipe import BenchmarkConfig, DataConfig, ModelSpec, Recipe, StepSpec
from slimline.steps import get_step, step_names


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(info: dict[str, Any]) -> str:
    if "anyOf" in info:
        return " or ".join(_type(i) for i in info["anyOf"])
    if "$ref" in info:
        return info["$ref"].rsplit("/", 1)[-1]
    if info.get("type") == "array":
        return f"list[{_type(info.get('items', {}))}]"
    if "enum" in info:
        return " / ".join(repr(v) for v in info["enum"])
    if "const" in info:
        return repr(info["const"])
    return str(info.get("type", "any"))


def model_table(model: type[BaseModel]) -> str:
    """A markdown table of a pydantic model's fields: name, type, default, description."""
    schema = model.model_json_schema()
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    required = set(schema.get("required", []))
    for name, info in schema.get("properties", {}).items():
        default = "required" if name in required else f"`{info.get('default')!r}`"
        rows.append(f"| `{name}` | {_cell(_type(info))} | {_cell(default)} | {_cell(info.get('description', ''))} |")
    if len(rows) == 2:
        rows.append("| (no options) | | | |")
    return "\n".join(rows)


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def recipe_page() -> str:
    parts = [
        "# Recipe reference",
        "",
        "Generated from the pydantic models that validate a recipe (`slimline.recipe`) and from every "
        "registered step's `Config`; an unknown key is refused with a one-line error.",
        "",
    ]
    for title, model in (
        ("Recipe", Recipe),
        ("model:", ModelSpec),
        ("data:", DataConfig),
        ("benchmark:", BenchmarkConfig),
        ("steps: (each item)", StepSpec),
    ):
        parts += [f"## `{title}`", "", _doc(model), "", model_table(model), ""]
    parts += ["## Steps", "", "Each item of `steps:` names one of these, with its options.", ""]
    for name in step_names():
        cls = get_step(name)
        parts += [f"### `{name}`", "", _doc(cls), "", model_table(cls.Config), ""]
    return "\n".join(parts)


def cli_page() -> str:
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="slimline")
    parts = ["# CLI reference", "", "Generated from the typer app (`slimline.cli.app`): each command's `--help`.", ""]
    parts += ["## `slimline`", "", "```text", root.get_help(ctx), "```", ""]
    for name, cmd in getattr(root, "commands", {}).items():
        sub = typer.Context(cmd, info_name=name, parent=ctx)
        parts += [f"## `slimline {name}`", "", "```text", cmd.get_help(sub), "```", ""]
    return "\n".join(parts)


def public_page() -> str:
    """Every name ``slimline.api`` makes public beyond its own functions, by group, with where it lives and the
    first line of its docstring (from ``slimline.api._PUBLIC``: the list is not written twice)."""
    import importlib

    from slimline import api

    parts = [
        "# Public surface",
        "",
        "`slimline.api` re-exports these names (loaded on first use, so no optional extra is imported until "
        "needed). They, the functions on the [Python API](api.md) page and the top-level `slimline` names are "
        "what the benchmark studies use (a test holds them to it); everything else is internal.",
        "",
    ]
    for group, names in api._PUBLIC.items():
        parts += [f"## {group[0].upper()}{group[1:]}", "", "| name | from | what it does |", "|---|---|---|"]
        for name, target in names.items():
            module, _, attr = target.partition(":")
            obj = importlib.import_module(module) if target.endswith(":") else getattr(api, name)
            first = (_doc(obj).splitlines() or [""])[0] if callable(obj) or target.endswith(":") else ""
            parts.append(f"| `{name}` | `{module}{'.' + attr if attr else ''}` | {_cell(first)} |")
        parts.append("")
    return "\n".join(parts)


_COMMAND_LINE = re.compile(r"\bslimline ([a-z][\w-]*)([^`|\n]*)")


def stale_options(text: str) -> list[str]:
    """``slimline <command> --option`` mentions in ``text`` whose command has no such option."""
    root = typer.main.get_command(app)
    commands = getattr(root, "commands", {})
    problems = []
    for m in _COMMAND_LINE.finditer(text):
        cmd = commands.get(m.group(1))
        if cmd is None:
            continue
        known = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", []))} | {"--help"}
        rest = m.group(2).split(" #", 1)[0]
        for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
            if opt not in known:
                problems.append(f"`slimline {m.group(1)}` has no option {opt}")
    return problems


def check_pages() -> None:
    """Warn (an error under ``mkdocs build --strict``) for each option the pages or the README name that the CLI
    lacks, so a renamed option breaks the docs build instead of leaving the docs stale."""
    here = Path(__file__).resolve().parent
    log = logging.getLogger("mkdocs.plugins.slimline_reference")
    readme = here.parent / "README.md"
    for page in [*sorted(here.rglob("*.md")), *([readme] if readme.exists() else [])]:
        for problem in stale_options(page.read_text(encoding="utf-8")):
            log.warning("%s: %s", page.name, problem)


check_pages()
with mkdocs_gen_files.open("reference/recipe.md", "w") as f:
    f.write(recipe_page())
with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(cli_page())
with mkdocs_gen_files.open("reference/public.md", "w") as f:
    f.write(public_page())
