"""Writes the docs site's generated pages at build time (mkdocs-gen-files): the recipe reference from the
pydantic schemas, the CLI reference from the typer app. Nothing here is written twice by hand."""

from __future__ import annotations

import inspect
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


with mkdocs_gen_files.open("reference/recipe.md", "w") as f:
    f.write(recipe_page())
with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(cli_page())
