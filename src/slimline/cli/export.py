"""``slimline export``: a model (zoo name, factory, artifact folder or .onnx) to ONNX, OpenVINO IR or TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import TRUST_CODE_OPTION
from slimline.errors import SlimlineError
from slimline.progress import console


def _source(
    model: str, weights: Path | None, input_shape: list[int] | None, named_inputs: bool = False
) -> tuple[Any, dict[str, Any], list]:
    """(nn.Module or onnx Artifact, meta, lineage) for whatever the user named (``named_inputs``: the inputs come
    from named --input-shape options, not a classifier's C,H,W)."""
    from slimline.artifact import Artifact, load_torch
    from slimline.bench.harness import is_artifact_dir
    from slimline.bench.targets import model_meta
    from slimline.models import load_model

    p = Path(model)
    if is_artifact_dir(p):
        art = Artifact.load(p)
        meta = dict(art.meta)
        if input_shape:  # a new classifier input: the recorded signature no longer holds
            meta["input_shape"] = input_shape
            meta.pop("signature", None)
        if art.kind == "torch":
            return load_torch(art), meta, list(art.lineage)
        if art.kind == "onnx":
            return art, meta, list(art.lineage)
        raise SlimlineError(f"{p} is already an {art.kind} artifact")
    if p.suffix == ".onnx":
        from slimline.models import load_onnx

        dims = load_onnx(p).graph.input[0].type.tensor_type.shape.dim
        shape = input_shape or (
            [d.dim_value for d in dims[1:]] if all(d.HasField("dim_value") for d in dims[1:]) else None
        )
        meta = {"model": model, "input_shape": shape} if shape else {"model": model}
        return Artifact("onnx", p.parent, {"model": p.name}, meta, []), meta, [{"step": "baseline", "model": model}]
    meta = {"model": model} if named_inputs else model_meta(model, input_shape)
    return (
        load_model(model, weights),
        meta,
        [{"step": "baseline", "model": model, "weights": str(weights) if weights else None}],
    )


@app.command()
@friendly
def export(
    model: str = typer.Argument(..., help="zoo name, package.module:factory, artifact folder, or .onnx (for openvino)"),
    fmt: str = typer.Option(
        "onnx",
        "--format",
        "-f",
        help="onnx, openvino, tflite (LiteRT; slimline[edge]) or triton (a Triton model repository)",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="artifact folder to write"),
    weights: Path | None = typer.Option(None, help="weights for a zoo/factory model"),
    input_shape: list[str] | None = typer.Option(
        None, help="C,H,W of one sample (default: the zoo entry's), or NAME=1x128 per input, batch included"
    ),
    input_dtype: list[str] | None = typer.Option(None, help="NAME=int64 (default float32) per named input"),
    dynamic: list[str] | None = typer.Option(
        None, help="NAME=0:batch,1:sequence: the dynamic axes of a named input (default 0:batch)"
    ),
    opset: int | None = typer.Option(None, help="ONNX opset (default: suited to the installed onnxruntime)"),
    rtol: float = typer.Option(1e-4, help="max relative difference to the source on a random batch"),
    via: str = typer.Option("direct", help="openvino from PyTorch: 'direct' or through 'onnx'"),
    seed: int = typer.Option(0, help="seed of the random parity batch"),
    nhwc: bool = typer.Option(False, "--nhwc", help="tflite: take the image input channels-last (N, H, W, C)"),
    max_batch: int = typer.Option(32, help="triton: max_batch_size and dynamic batching limit"),
    instances: int = typer.Option(1, help="triton: CPU model instances"),
    trust_code: bool = TRUST_CODE_OPTION,
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Export to ONNX (dynamic axes, checker, parity with PyTorch), OpenVINO IR (.xml + .bin) or TFLite (.tflite,
    fixed shapes at batch 1; int8: slimline quantize --backend litert).

    Example: slimline export cifar_resnet56 --weights ../shared/data/cifar10/resnet56-4bfd9763.th -o out/r56

    Triton: slimline export runs/q56/02_quantize -f triton -o model_repository writes
    model_repository/02_quantize/{1/model.onnx or model.xml+bin, config.pbtxt} (see docs/howto/serving.md).

    A model taking token ids (inputs in forward order; named dims are dynamic):
    slimline export mypkg.text:tiny_bert -o out/bert --input-shape ids=1x128 --input-dtype ids=int64
    --input-shape mask=1x128 --input-dtype mask=bool --dynamic ids=0:batch,1:sequence --dynamic mask=0:batch,1:sequence

    JSON keys: format, artifact (folder), files, parity {max_abs_diff, max_rel_diff, tolerance, against},
    file_bytes; onnx: opset, external_data; openvino: source, openvino_version; tflite: layout, model_batch,
    litert_torch_version.
    """
    from slimline.artifact import Artifact
    from slimline.models import trusted_factories
    from slimline.signature import artifact_signature, parse_input_shapes, signature_from_options

    shapes = parse_input_shapes(input_shape or [])
    sample = shapes.pop("", None)
    if sample is not None and shapes:
        raise SlimlineError("--input-shape: give either C,H,W (one input) or NAME=... for every input, not both")
    signature = signature_from_options(shapes, input_dtype or [], dynamic or []) if shapes else None
    if fmt == "triton":
        from slimline.cli.triton import export_repository

        return export_repository(
            model, output, weights, sample, signature, opset, rtol, seed, max_batch, instances, trust_code, json_path
        )
    if signature is None and (input_dtype or dynamic):
        raise SlimlineError("--input-dtype and --dynamic need the inputs named: add --input-shape NAME=1x128 per input")
    with trusted_factories(trust_code=trust_code):
        source, meta, lineage = _source(model, weights, sample, named_inputs=signature is not None)
    if isinstance(source, Artifact) and signature is not None:
        # an ONNX file names its own inputs and outputs: NAME=shape only fixes its dynamic dims for the export
        known = {t.name for t in artifact_signature(source).inputs}
        unknown = sorted(set(shapes) - known)
        if unknown:
            raise SlimlineError(
                f"--input-shape names {', '.join(unknown)}, which {model} does not have; its inputs: "
                f"{', '.join(sorted(known))}"
            )
        signature = None
    if signature is not None:
        meta["signature"] = signature.to_dict()
    kw: dict[str, Any] = {"rtol": rtol, "seed": seed, "signature": signature, "shapes": shapes or None}
    if fmt == "onnx":
        if isinstance(source, Artifact):
            raise SlimlineError(f"{model} is already ONNX")
        from slimline.onnx_export import export_onnx_artifact

        art, record = export_onnx_artifact(source, output, meta, lineage, opset=opset, **kw)
    elif fmt == "openvino":
        from slimline.openvino_export import export_openvino_artifact

        art, record = export_openvino_artifact(source, output, meta, lineage, via=via, **kw)
    elif fmt == "tflite":
        if isinstance(source, Artifact):
            raise SlimlineError(f"TFLite export converts PyTorch models; {model} is ONNX: export the PyTorch model")
        from slimline.tflite_export import export_tflite_artifact

        art, record = export_tflite_artifact(source, output, meta, lineage, nhwc=nhwc, **kw)
    else:
        raise SlimlineError(f"--format must be onnx, openvino, tflite or triton, not {fmt!r}")
    art.lineage = [*lineage, {"step": f"export_{fmt}", **record}]
    from slimline.fileio import write_json

    write_json(art.path / "artifact.json", art.to_json())
    par = record["parity"]
    console.print(
        f"wrote [bold]{art.path}[/] ({', '.join(art.files.values())}, {record['file_bytes'] / 1e6:.2f} MB); "
        f"max abs diff {par['max_abs_diff']:.2e}, max rel diff {par['max_rel_diff']:.2e} vs {par['against']}",
        highlight=False,
    )
    dump_json(json_path, record | {"artifact": str(art.path), "files": art.files})
