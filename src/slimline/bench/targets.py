"""What ``slimline bench`` can be given: artifact folders, .onnx/.xml files, or models by name.

A model by name (zoo name or ``package.module:factory``) is built, saved as a torch artifact and
exported (with parity checks) into the forms the requested runtimes need, under ``workdir``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.artifact import Artifact, ArtifactWriter, save_torch
from slimline.bench.harness import BenchTarget, RuntimeSpec, is_artifact_dir
from slimline.errors import SlimlineError

if TYPE_CHECKING:
    from slimline.signature import Signature


def runtime_kinds(runtimes: Sequence[str | RuntimeSpec]) -> set[str]:
    """The artifact kinds the runtimes need natively (their first kind)."""
    from slimline.runtimes import get_runtime

    return {get_runtime(RuntimeSpec.parse(r).name).kinds[0] for r in runtimes}


def model_meta(name: str, input_shape: Sequence[int] | None) -> dict[str, Any]:
    """What a zoo model's artifact records about it (name, input shape, preprocessing); one-line error if unknown."""
    from slimline.models import model_entry

    entry = model_entry(name)
    shape = list(input_shape) if input_shape else (list(entry.input_shape) if entry else None)
    if shape is None:
        raise SlimlineError(f"the input shape of {name!r} is unknown: give --input-shape C,H,W")
    meta: dict[str, Any] = {"model": name, "input_shape": shape}
    if entry is not None:
        meta["num_classes"] = entry.num_classes
    return meta


def prepare_model(
    name: str,
    kinds: set[str],
    workdir: str | Path,
    weights: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> BenchTarget:
    """Build ``name`` and write the artifact kinds in ``kinds`` under ``workdir/<safe name>/``."""
    from slimline.models import load_model
    from slimline.onnx_export import export_onnx_artifact

    meta = model_meta(name, input_shape)
    model = load_model(name, weights)
    folder = Path(workdir) / name.replace(":", "_").replace("/", "_")
    record = {"step": "baseline", "model": name, "weights": str(weights) if weights else None}
    arts: dict[str, Artifact] = {}
    torch_art = save_torch(model, folder / "torch", meta, [record])
    if "torch" in kinds:
        arts["torch"] = torch_art
    if "onnx" in kinds or "openvino" in kinds:
        onnx_art, rec = export_onnx_artifact(model, folder / "onnx", meta, [record], seed=seed)
        _append_record(onnx_art, {"step": "export_onnx", **rec})
        if "onnx" in kinds:
            arts["onnx"] = onnx_art
        if "openvino" in kinds:
            from slimline.openvino_export import export_openvino_artifact

            ov_art, ov_rec = export_openvino_artifact(onnx_art, folder / "openvino", meta, onnx_art.lineage, seed=seed)
            _append_record(ov_art, {"step": "export_openvino", **ov_rec})
            arts["openvino"] = ov_art
    return BenchTarget(name, arts)


def _append_record(art: Artifact, record: dict[str, Any]) -> None:
    from slimline.artifact import ARTIFACT_JSON
    from slimline.fileio import write_json

    art.lineage = [*art.lineage, record]
    write_json(art.path / ARTIFACT_JSON, art.to_json())


def file_artifact(path: Path, workdir: Path) -> Artifact:
    """Wrap a bare .onnx or .xml file as an artifact folder under ``workdir`` (copied)."""
    meta: dict[str, Any] = {"model": str(path)}
    dest = workdir / path.stem
    if path.suffix == ".onnx":
        from slimline.models import load_onnx
        from slimline.signature import Signature

        _record_signature(meta, Signature.from_onnx(load_onnx(path)))
        with ArtifactWriter(dest, "onnx", meta, [{"step": "baseline", "model": str(path)}]) as w:
            shutil.copyfile(path, w.add("model", "model.onnx"))
            data = path.with_name(path.name + ".data")
            if data.exists():
                shutil.copyfile(data, w.add("weights", "model.onnx.data"))
    elif path.suffix == ".xml":
        from slimline.runtimes.openvino import import_openvino
        from slimline.signature import Signature

        ov = import_openvino()
        _record_signature(meta, Signature.from_openvino(ov.Core().read_model(str(path))))
        with ArtifactWriter(dest, "openvino", meta, [{"step": "baseline", "model": str(path)}]) as w:
            shutil.copyfile(path, w.add("model", "model.xml"))
            shutil.copyfile(path.with_suffix(".bin"), w.add("weights", "model.bin"))
    else:
        raise SlimlineError(f"{path} is neither an artifact folder nor a .onnx/.xml file")
    assert w.artifact is not None
    return w.artifact


def _record_signature(meta: dict[str, Any], sig: Signature) -> None:
    """``meta.signature``, and ``meta.input_shape`` (one sample, no batch axis) for a single-input model whose
    other dimensions are all fixed: the image-classifier form. Dynamic dimensions are left to ``--input-shape``."""
    meta["signature"] = sig.to_dict()
    if len(sig.inputs) == 1 and all(isinstance(d, int) for d in sig.inputs[0].shape[1:]):
        meta["input_shape"] = [int(d) for d in sig.inputs[0].shape[1:]]


def resolve_targets(
    items: Sequence[str],
    runtimes: Sequence[str | RuntimeSpec],
    workdir: str | Path,
    weights: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
) -> list[BenchTarget]:
    """Artifact folders as they are; files and model names prepared under ``workdir``."""
    kinds = runtime_kinds(runtimes)
    out = []
    for item in items:
        p = Path(item)
        if is_artifact_dir(p):
            out.append(BenchTarget.from_artifact(Artifact.load(p), name=p.name))
        elif p.suffix in (".onnx", ".xml") and p.exists():
            out.append(BenchTarget.from_artifact(file_artifact(p, Path(workdir)), name=p.name))
        elif p.is_dir():
            raise SlimlineError(f"{p} is a folder but not a slimline artifact (no artifact.json)")
        else:
            out.append(prepare_model(item, kinds, workdir, weights, input_shape))
    return out
