"""A Triton Inference Server model repository from an ONNX or OpenVINO artifact.

Layout: ``REPO/<name>/1/model.onnx`` (platform ``onnxruntime_onnx``) or ``REPO/<name>/1/model.xml`` + ``model.bin``
(backend ``openvino``), and ``REPO/<name>/config.pbtxt`` with the signature (the batch axis left out, other dynamic
axes -1), ``max_batch_size``, dynamic batching and the instance group. The config is built as Triton's own
``ModelConfig`` protobuf message (``tritonclient.grpc.model_config_pb2``) and written in its text format, so a
config this writes is one Triton's schema parses. The repository is written beside its destination and renamed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from slimline.artifact import Artifact
from slimline.errors import ExportError
from slimline.signature import BATCH, Signature, TensorSpec, artifact_signature

TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "bool": "TYPE_BOOL",
}


def model_config_pb2() -> Any:
    """Triton's ``model_config_pb2`` (from ``tritonclient[grpc]``), or an ExportError saying what to install."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except (ImportError, RuntimeError) as e:
        raise ExportError(
            f"--format triton needs Triton's config schema ({e}); install slimline[serve] (tritonclient[grpc])"
        ) from None
    return pb


def batched(signature: Signature) -> bool:
    """True when every input and output has the batch axis first (then Triton may batch requests)."""
    return all(t.shape and t.shape[0] == BATCH for t in (*signature.inputs, *signature.outputs))


def _dims(t: TensorSpec, drop_batch: bool) -> list[int]:
    shape = t.shape[1:] if drop_batch else t.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def model_config(
    signature: Signature,
    name: str,
    platform: str,
    max_batch: int = 32,
    instances: int = 1,
    max_queue_delay_us: int = 5000,
) -> Any:
    """The ``ModelConfig`` message for ``signature``: dynamic batching up to ``max_batch`` when the batch axis
    is first in every tensor (else ``max_batch_size: 0``, no batching), ``instances`` CPU instances."""
    pb = model_config_pb2()
    can_batch = batched(signature)
    cfg = pb.ModelConfig(name=name, max_batch_size=max_batch if can_batch else 0)
    if platform == "openvino":
        cfg.backend = "openvino"
    else:
        cfg.platform = platform

    def add(target: Any, t: TensorSpec) -> None:
        dtype = TRITON_DTYPES.get(t.dtype)
        if dtype is None:
            raise ExportError(
                f"tensor {t.name!r} is {t.dtype}, which Triton has no type for; supported: {', '.join(TRITON_DTYPES)}"
            )
        target.add(name=t.name, data_type=pb.DataType.Value(dtype), dims=_dims(t, can_batch))

    for t in signature.inputs:
        add(cfg.input, t)
    for t in signature.outputs:
        add(cfg.output, t)
    if can_batch:
        cfg.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    cfg.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    return cfg


def parse_config(text: str) -> Any:
    """Parse a ``config.pbtxt`` with Triton's schema; ExportError naming the problem when it does not fit."""
    from google.protobuf import text_format

    pb = model_config_pb2()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"config.pbtxt does not fit Triton's ModelConfig schema: {e}") from None


def export_triton(
    artifact: Artifact,
    repo: str | Path,
    name: str | None = None,
    max_batch: int = 32,
    instances: int = 1,
    max_queue_delay_us: int = 5000,
) -> dict[str, Any]:
    """Write the model repository ``repo`` holding ``artifact`` (onnx or openvino) as model ``name``; the record
    (files, platform, config text) is returned. An existing ``repo/<name>`` is replaced only once the new one
    is complete."""
    from google.protobuf import text_format

    if artifact.kind not in ("onnx", "openvino"):
        raise ExportError(
            f"--format triton takes an onnx or openvino artifact or a model; {artifact.path} is "
            f"{artifact.kind}: export it to onnx first"
        )
    if max_batch < 1 or instances < 1:
        raise ExportError("--format triton: max-batch and instances must be at least 1")
    name = name or artifact.name
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"model name {name!r} is not a folder name Triton takes; give --name")
    signature = artifact_signature(artifact)
    platform = "onnxruntime_onnx" if artifact.kind == "onnx" else "openvino"
    cfg = model_config(signature, name, platform, max_batch, instances, max_queue_delay_us)
    text = text_format.MessageToString(cfg)
    parse_config(text)
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        (tmp / "1").mkdir()
        src = artifact.model_file
        if artifact.kind == "onnx":
            shutil.copy2(src, tmp / "1" / "model.onnx")
            for extra in src.parent.glob(f"{src.name}.data"):  # external weights keep their recorded name
                shutil.copy2(extra, tmp / "1" / extra.name)
        else:
            shutil.copy2(src, tmp / "1" / "model.xml")
            shutil.copy2(src.with_suffix(".bin"), tmp / "1" / "model.bin")
        (tmp / "config.pbtxt").write_text(text)
        if final.exists():
            old = final.with_name(f".{name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(repo)) for p in final.rglob("*") if p.is_file())
    return {
        "repository": str(repo),
        "model": name,
        "platform": platform,
        "files": files,
        "max_batch_size": cfg.max_batch_size,
        "instances": instances,
        "config": text,
    }
