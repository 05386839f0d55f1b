"""``slimline export --format triton``: an ONNX/OpenVINO artifact, or any model exported to ONNX first, as a
Triton model repository."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from slimline.cli.app import dump_json
from slimline.progress import console


def export_repository(
    model: str,
    output: Path,
    weights: Path | None,
    sample: list[int] | None,
    signature: Any,
    opset: int | None,
    rtol: float,
    seed: int,
    max_batch: int,
    instances: int,
    trust_code: bool,
    json_path: Path | None,
) -> None:
    """Write the repository ``output``; a torch model or artifact goes through an ONNX export (parity checked)."""
    from slimline.artifact import Artifact
    from slimline.bench.harness import is_artifact_dir
    from slimline.cli.export import _source
    from slimline.models import trusted_factories
    from slimline.triton_export import export_triton

    p = Path(model)
    with tempfile.TemporaryDirectory(prefix=".slimline-triton-") as tmp:
        if is_artifact_dir(p) and Artifact.load(p).kind in ("onnx", "openvino"):
            art, name = Artifact.load(p), p.name
        else:
            from slimline.onnx_export import export_onnx_artifact

            with trusted_factories(trust_code=trust_code):
                source, meta, lineage = _source(model, weights, sample, named_inputs=signature is not None)
            if isinstance(source, Artifact):
                art = source
            else:
                if signature is not None:
                    meta["signature"] = signature.to_dict()
                art, _ = export_onnx_artifact(
                    source,
                    Path(tmp) / "onnx",
                    meta,
                    lineage,
                    opset=opset,
                    rtol=rtol,
                    seed=seed,
                    signature=signature,
                    shapes=None,
                )
            name = p.name.removesuffix(".onnx") if p.suffix == ".onnx" or is_artifact_dir(p) else model
        record = export_triton(art, output, name.replace(":", "_").replace(".", "_"), max_batch, instances)
    console.print(
        f"wrote Triton model repository [bold]{output}[/]: {', '.join(record['files'])} "
        f"({record['platform']}, max_batch_size {record['max_batch_size']}, {instances} instance(s))",
        highlight=False,
    )
    dump_json(json_path, {k: v for k, v in record.items() if k != "config"} | {"format": "triton"})
