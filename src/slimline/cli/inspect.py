"""``slimline inspect``: what a model is (signature, operators, size, MACs, runtimes that load it)."""

from __future__ import annotations

from pathlib import Path

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.progress import console


@app.command("inspect")
@friendly
def inspect_cmd(
    model: str = typer.Argument(..., help=".onnx file, artifact folder, zoo name or package.module:factory"),
    weights: Path | None = typer.Option(None, help="weights for a zoo name or factory (state_dict or checkpoint)"),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="NAME=DxDx... for one input's dims (repeatable); dynamic dims default to 1"
    ),
    top: int = typer.Option(10, min=1, help="how many operator types to list, most frequent first"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Print a model's inputs and outputs (dynamic axes by name), operators, opset, params, MACs and runtimes.

    Example: slimline inspect model.onnx --input-shape input_ids=1x128
    """
    from slimline.errors import SlimlineError
    from slimline.inspect import format_inspection, inspect_model
    from slimline.signature import parse_input_shapes

    shapes = parse_input_shapes(input_shape or [])
    if "" in shapes:
        raise SlimlineError("inspect: give each shape with its input's name, e.g. --input-shape input=1x3x224x224")
    info = inspect_model(model, weights, {k: tuple(v) for k, v in shapes.items()}, top)
    for line in format_inspection(info):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    dump_json(json_path, info)
