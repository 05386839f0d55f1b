"""What every quantization backend shares: options, the float model in its several forms, results.

Layers are named by their PyTorch module path ("layer1.0.conv1") everywhere in slimline; each
backend maps those names to the node names of its own graph (ONNX: "/layer1/layer1.0/conv1/Conv",
OpenVINO: the same plus suffixes such as "/WithoutBiases").
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from slimline.errors import RecipeError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse", "default")
# Operators that hold almost all of a CNN's / transformer's compute: the ones worth quantizing.
HEAVY_ONNX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU", "Einsum")
_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)


class QuantWarning(UserWarning):
    """A quantization setting or result the user should know about (e.g. a layer left in float)."""


@dataclass
class QuantConfig:
    """Backend-neutral quantization options (each backend rejects what it cannot do)."""

    calibration: str = "minmax"  # minmax | percentile | entropy | mse | default (the backend's own)
    percentile: float = 99.999
    per_channel: bool = True  # weights; activations are always per-tensor
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    mode: Literal["static", "dynamic"] = "static"
    reduce_range: bool | None = None  # 7-bit weights; None: on x86 without VNNI (ONNX Runtime's advice for U8S8)
    batch_size: int = 16  # calibration batch size
    exclude: list[str] = field(default_factory=list)  # module names or backend node names kept in float
    compact_names: bool = True  # ONNX results: short tensor names, no node names in the saved model
    format: Literal["native", "onnx"] = "native"  # openvino: "onnx" writes a QDQ ONNX model (NNCF ONNX backend)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class QuantResult:
    """What a backend wrote into the output folder and what it did."""

    kind: str  # artifact kind: onnx | openvino | torch
    files: dict[str, str]  # role -> file name in the output folder
    excluded: list[str] = field(default_factory=list)  # backend node names kept in float on request
    left_float: list[dict[str, str]] = field(default_factory=list)  # heavy ops the backend did not quantize
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # extra artifact meta (runtime config, named runtime)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, QuantWarning, stacklevel=3)

    def warn_left_float(self, why: str) -> None:
        """One warning naming the heavy operators in ``left_float`` (the first ten), if there are any."""
        if not self.left_float:
            return
        names = ", ".join(f"{n['name']} ({n['op']})" for n in self.left_float[:10])
        more = f" and {len(self.left_float) - 10} more" if len(self.left_float) > 10 else ""
        self.warn(f"left in float ({why}): {names}{more}")

    def record(self) -> dict[str, Any]:
        return {"excluded_nodes": self.excluded, "left_float": self.left_float, "warnings": self.warnings,
                **self.details}


@dataclass
class FloatModel:
    """The float model in the forms the backends need; ONNX is exported on demand."""

    input_shape: tuple[int, ...]
    work_dir: Path
    torch_model: nn.Module | None = None
    onnx_path: Path | None = None
    ov_xml: Path | None = None
    _node_map: dict[str, str] | None = None

    @classmethod
    def from_artifact(cls, artifact: Any, work_dir: Path) -> FloatModel:
        from slimline.artifact import load_torch

        shape = tuple(artifact.meta.get("input_shape") or ())
        if artifact.kind == "torch":
            return cls(shape, work_dir, torch_model=load_torch(artifact))
        if artifact.kind == "onnx":
            return cls(shape, work_dir, onnx_path=artifact.model_file)
        if artifact.kind == "openvino":
            return cls(shape, work_dir, ov_xml=artifact.model_file)
        raise RecipeError(f"cannot quantize a {artifact.kind} artifact")

    def onnx(self) -> Path:
        """The fp32 ONNX model (exported from PyTorch into the work folder when needed)."""
        if self.onnx_path is None:
            if self.torch_model is None:
                raise RecipeError("this backend needs an ONNX or PyTorch model, but only an OpenVINO model is at hand")
            from slimline.onnx_export import export_onnx

            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.onnx_path = export_onnx(self.torch_model, self.input_shape, self.work_dir / "fp32.onnx")
        return self.onnx_path

    def node_map(self) -> dict[str, str]:
        """PyTorch module name -> ONNX node name of its Conv/Gemm/MatMul (empty without a PyTorch model)."""
        if self._node_map is None:
            self._node_map = {} if self.torch_model is None else onnx_layer_nodes(
                self.torch_model, self.onnx(), self.input_shape)
        return self._node_map


def onnx_layer_nodes(model: nn.Module, onnx_path: Path, input_shape: tuple[int, ...]) -> dict[str, str]:
    """Map each Conv/Linear module to the ONNX node computing it.

    The legacy exporter emits nodes in execution order, so the k-th Conv/Gemm/MatMul (with a constant
    weight) is the k-th Conv/Linear call; each pairing is checked against the node's scope name
    ("/layer1/layer1.0/conv1/Conv" ends in the module's own name). Pairs that disagree are dropped.
    """
    import onnx

    order: list[str] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, _LAYER_TYPES) and name:
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: order.append(name)))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    proto = onnx.load(str(onnx_path), load_external_data=False)
    consts = {i.name for i in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = [n for n in proto.graph.node
             if n.op_type in ("Conv", "ConvTranspose", "Gemm") or (n.op_type == "MatMul" and n.input[1] in consts)]
    seen: set[str] = set()
    mapping: dict[str, str] = {}
    for name, node in zip(dedupe(order), nodes, strict=False):
        if name in seen:
            continue
        seen.add(name)
        if _scope_matches(name, node.name):
            mapping[name] = node.name
    if len(mapping) < len(set(order)):  # fall back on scope names for anything unmatched
        taken = set(mapping.values())
        for name in dedupe(order):
            if name in mapping:
                continue
            for node in nodes:
                if node.name not in taken and _scope_matches(name, node.name) and all(
                        p in node.name for p in name.split(".")):
                    mapping[name] = node.name
                    taken.add(node.name)
                    break
    return mapping


def _scope_matches(module: str, node_name: str) -> bool:
    """Whether the exporter's scope name ("/features/features.4/Conv") ends with ``module``'s own name."""
    leaf = module.rsplit(".", 1)[-1]
    parts = node_name.strip("/").split("/")[:-1]  # drop the op part
    if not parts:
        return False
    last = parts[-1]
    return last in (leaf, module) or last.endswith("." + leaf)


def dedupe(items: list[str]) -> list[str]:
    out, seen = [], set()
    for i in items:
        if i not in seen:
            out.append(i)
            seen.add(i)
    return out


def resolve_onnx_nodes(names: list[str], src: FloatModel, graph_nodes: set[str]) -> list[str]:
    """Module names or node names -> ONNX node names; unknown names are an error listing examples."""
    mapping = src.node_map() if src.torch_model is not None else {}
    out, unknown = [], []
    for n in names:
        if n in graph_nodes:
            out.append(n)
        elif n in mapping and mapping[n] in graph_nodes:
            out.append(mapping[n])
        else:
            unknown.append(n)
    if unknown:
        examples = list(mapping)[:3] + sorted(graph_nodes)[:3]
        raise RecipeError(f"cannot find layer(s) {unknown} to keep in float; give PyTorch module names or graph "
                          f"node names, e.g. {examples}")
    return out


def calibration_batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32) for i in range(0, len(x), batch_size)]


class QuantBackend(ABC):
    """A quantization backend: float model + calibration inputs -> quantized model files."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the artifact kind it produces
    calibration_methods: ClassVar[tuple[str, ...]]
    # True when a tensor between two layers stays quantized unless both producer and consumer are float
    # (ONNX Runtime QDQ, PyTorch FX); NNCF quantizes at each operator's input instead.
    shares_tensor_quantization: ClassVar[bool] = True
    formats: ClassVar[tuple[str, ...]] = ("native",)  # what ``QuantConfig.format`` may say

    def check(self, cfg: QuantConfig) -> None:
        """Reject options this backend cannot honour, saying what it can do."""
        if cfg.format not in self.formats:
            raise RecipeError(
                f"the {self.name} backend writes {' or '.join(self.formats)} models, not format {cfg.format!r}"
            )
        if cfg.calibration not in self.calibration_methods:
            raise RecipeError(
                f"the {self.name} backend has no {cfg.calibration!r} calibration; use one of "
                f"{', '.join(self.calibration_methods)} (or another backend)"
            )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @abstractmethod
    def quantize(self, src: FloatModel, calib: np.ndarray, cfg: QuantConfig, keep_float: list[str],
                 out_dir: Path) -> QuantResult:
        """Quantize ``src`` calibrated on ``calib`` (float32 NCHW), keeping ``keep_float`` layers
        (module names) and ``cfg.exclude`` in float; write the files into ``out_dir``."""

    def reset_cache(self) -> None:  # noqa: B027 - optional hook, most backends cache nothing
        """Forget cached calibration (ranges are reused between calls on the same model)."""
