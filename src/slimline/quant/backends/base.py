"""What every quantization backend shares: options, the float model in its several forms, results.

Layers are named by their PyTorch module path ("layer1.0.conv1") everywhere in slimline; each
backend maps those names to the node names of its own graph (ONNX: "/layer1/layer1.0/conv1/Conv",
OpenVINO: the same plus suffixes such as "/WithoutBiases").

:meth:`QuantBackend.quantize` is the one entry point: it calls the backend's ``write`` and then
:func:`verify_result` (ONNX checker, load and run in the runtime, fidelity against fp32), so no backend
reports a model that does not load or run as a success. :func:`prepare_onnx` readies real-world ONNX
exports for the ONNX quantizers (Constant weights to initializers, opset 13 for per-channel weights).
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from slimline.data.arrays import NamedSamples
from slimline.errors import RecipeError, SlimlineError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse", "default")
# Operators that hold almost all of a CNN's / transformer's compute: the ones worth quantizing.
HEAVY_ONNX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU", "Einsum")
_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
# Calibration inputs: float32 NCHW samples for the first input (the image classifiers), or named arrays for
# every input (any model: ``slimline.data.arrays``).
Calibration = np.ndarray | NamedSamples
# One model input feed: an array for the first input, or arrays by input name.
Feed = np.ndarray | Mapping[str, np.ndarray]


class QuantWarning(UserWarning):
    """A quantization setting or result the user should know about (e.g. a layer left in float)."""


class QuantizationError(SlimlineError):
    """A backend wrote an int8 model that is invalid, does not load or does not run, or had nothing to quantize."""


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
    format: Literal["native", "onnx", "int8_io"] = "native"  # openvino: "onnx" writes QDQ ONNX; litert: "int8_io"
    model_type: Literal["auto", "default", "transformer"] = "auto"  # transformer: attention-aware schemes

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
    verification: dict[str, Any] = field(default_factory=dict)  # checker/load/run/fidelity (see verify_result)

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
        return {
            "excluded_nodes": self.excluded,
            "left_float": self.left_float,
            "warnings": self.warnings,
            **self.details,
            "verification": self.verification,
        }


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
            self._node_map = (
                {} if self.torch_model is None else onnx_layer_nodes(self.torch_model, self.onnx(), self.input_shape)
            )
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
    nodes = [
        n
        for n in proto.graph.node
        if n.op_type in ("Conv", "ConvTranspose", "Gemm") or (n.op_type == "MatMul" and n.input[1] in consts)
    ]
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
                if (
                    node.name not in taken
                    and _scope_matches(name, node.name)
                    and all(p in node.name for p in name.split("."))
                ):
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
    """Module names, node names or node-name patterns (``fnmatch``: ``/model.22/dfl/*``) -> ONNX node names;
    unknown names and patterns that match nothing are an error listing examples."""
    import fnmatch

    mapping = src.node_map() if src.torch_model is not None else {}
    out, unknown = [], []
    for n in names:
        if n in graph_nodes:
            out.append(n)
        elif any(c in n for c in "*?[") and (hits := sorted(fnmatch.filter(graph_nodes, n))):
            out.extend(h for h in hits if h not in out)
        elif n in mapping and mapping[n] in graph_nodes:
            out.append(mapping[n])
        else:
            unknown.append(n)
    if unknown:
        examples = list(mapping)[:3] + sorted(graph_nodes)[:3]
        raise RecipeError(
            f"cannot find layer(s) {unknown} to keep in float; give PyTorch module names or graph "
            f"node names, e.g. {examples}"
        )
    return out


def calibration_batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32) for i in range(0, len(x), batch_size)]


def calibration_feeds(calib: Calibration, input_names: list[str], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Calibration batches as feeds of every input by name: named samples as they are (checked against
    ``input_names``), a plain array for the first input (the image classifiers' single input)."""
    if isinstance(calib, NamedSamples):
        missing = [n for n in input_names if n not in calib.arrays]
        if missing:
            raise RecipeError(
                f"the calibration data has no array for input(s) {', '.join(missing)}; the model's "
                f"inputs are {', '.join(input_names)}: save one array per input name"
            )
        return [{n: b[n] for n in input_names} for b in calib.batches(batch_size)]
    if len(input_names) != 1:
        raise RecipeError(
            f"the model has {len(input_names)} inputs ({', '.join(input_names)}) but the calibration "
            "data feeds one; calibrate with named arrays: -d calib.npz (one array per input name)"
        )
    return [{input_names[0]: b} for b in calibration_batches(calib, batch_size)]


def calibration_key(calib: Calibration) -> bytes:
    """A digest of the calibration inputs (for calibration caches)."""
    import hashlib

    if isinstance(calib, NamedSamples):
        return calib.fingerprint()
    return hashlib.sha1(np.ascontiguousarray(calib).tobytes()).digest()


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

    def quantize(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        """Quantize ``src`` calibrated on ``calib`` (float32 NCHW, or named arrays for every input), keeping
        ``keep_float`` layers (module names) and ``cfg.exclude`` in float; write the files into ``out_dir``, then
        check that the result is valid, loads and runs in its runtime and measure its fidelity
        (``result.verification``).

        Raises :class:`QuantizationError` when the written model fails any of those checks."""
        result = self.write(src, calib, cfg, keep_float, out_dir)
        verify_result(self.name, result, src, calib, out_dir)
        return result

    @abstractmethod
    def write(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        """The backend's own work: write the quantized model files into ``out_dir`` (see :meth:`quantize`)."""

    def reset_cache(self) -> None:  # noqa: B027 - optional hook, most backends cache nothing
        """Forget cached calibration (ranges are reused between calls on the same model)."""


# --- preparing an ONNX model for quantization ------------------------------------------------------------

PER_CHANNEL_OPSET = 13  # QuantizeLinear/DequantizeLinear take an ``axis`` (per-channel scales) from opset 13


def onnx_opset(proto: Any) -> int:
    """The model's default-domain (ai.onnx) opset version (0 when it names none)."""
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def constants_to_initializers(proto: Any) -> int:
    """Move the tensors of the main graph's ``Constant`` nodes into initializers; returns how many moved.

    Exports such as Paddle's hold weights in ``Constant`` nodes; quantizers treat only initializers as
    weights, so a Conv fed by a Constant gets an activation quantizer and keeps its float weight.
    """
    from onnx import helper, numpy_helper

    keep, moved = [], 0
    for node in proto.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(attrs) != 1:
            keep.append(node)
            continue
        ((name, attr),) = attrs.items()
        if name == "value":
            tensor = attr.t
        elif name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = helper.get_attribute_value(attr)
            dtype = np.float32 if "float" in name else np.int64
            tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        else:  # sparse tensors and strings stay as they are
            keep.append(node)
            continue
        init = proto.graph.initializer.add()
        init.CopyFrom(tensor)
        init.name = node.output[0]
        moved += 1
    if moved:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
    return moved


def prepare_onnx(path: Path, work_dir: Path, cfg: QuantConfig, result: QuantResult) -> tuple[Path, QuantConfig]:
    """The ONNX model as the quantizers need it, and the options to quantize it with.

    ``Constant`` weights become initializers (so they get int8 weights); for per-channel weights an
    opset below 13 is converted to 13, or, when the conversion fails, the weights go per-tensor (a
    warning and ``per_channel_fallback`` in the record say why). Returns ``path`` itself when nothing
    changed.
    """
    import dataclasses

    import onnx

    proto = onnx.load(str(path))
    changes: dict[str, Any] = {}
    moved = constants_to_initializers(proto)
    if moved:
        changes["constants_to_initializers"] = moved
    opset = onnx_opset(proto)
    if cfg.per_channel and 0 < opset < PER_CHANNEL_OPSET:
        try:
            from onnx import version_converter

            converted = version_converter.convert_version(proto, PER_CHANNEL_OPSET)
            onnx.checker.check_model(converted)
        except Exception as e:  # noqa: BLE001 - any converter failure means: quantize per-tensor instead
            reason = (
                f"per-channel weights need opset {PER_CHANNEL_OPSET} and converting this opset-{opset} model "
                f"failed ({first_line(e)})"
            )
            result.details["per_channel_fallback"] = reason
            result.warn(
                f"{reason}: quantizing weights per-tensor; re-export at opset {PER_CHANNEL_OPSET} for "
                "per-channel weights"
            )
            cfg = dataclasses.replace(cfg, per_channel=False)
        else:
            proto = converted
            changes["opset"] = f"{opset} -> {PER_CHANNEL_OPSET} (per-channel weights need it)"
    if not changes:
        return path, cfg
    result.details["onnx_preparation"] = changes
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / f"{path.stem}.prepared.onnx"
    large = proto.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit
    onnx.save(proto, str(out), save_as_external_data=large, location=f"{out.name}.data" if large else None)
    return out, cfg


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run with ``folder`` (created) as the current directory, for libraries that write temporary files into
    the current directory with no way to say where (ONNX Runtime's symbolic shape inference writes
    ``sym_shape_infer_temp.onnx`` there when it gives up). The current directory is process-wide: slimline
    quantizes one model at a time in the main thread, so nothing else sees the change."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(folder):
        yield


# --- verifying the written model ----------------------------------------------------------------------------

BATCH_COSINE = 0.99  # a batch's outputs vs the same samples one at a time, below which the model is refused
VERIFY_SAMPLES = 8  # calibration samples the written model is run on (one at a time: fixed-batch exports work)
LOW_COSINE = 0.9  # below this (min over samples) the result is kept but a warning says it is far from fp32
Runner = Callable[[Feed], list[np.ndarray]]
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type when it has none), at most ``limit`` chars."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def onnxruntime_runner(path: Path) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # errors reach the caller as exceptions (one line each), not as log lines
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: [np.asarray(o) for o in sess.run(None, dict(x) if isinstance(x, Mapping) else {name: x})]


def openvino_runner(path: Path) -> Runner:
    from slimline.quant.backends.openvino import import_nncf

    ov, _ = import_nncf()
    # f32: the CPU plugin's default on AVX-512 BF16/AMX CPUs is bf16, which would blur the comparison
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    outputs = list(compiled.outputs)

    def run(x: Feed) -> list[np.ndarray]:
        res = compiled(dict(x) if isinstance(x, Mapping) else x)
        return [np.asarray(res[o]) for o in outputs]

    return run


def reference_runner(src: FloatModel) -> Runner:
    """The fp32 model on the runtime that reads it directly (OpenVINO IR, else the ONNX model on ONNX Runtime)."""
    if src.ov_xml is not None:
        return openvino_runner(src.ov_xml)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return openvino_runner(src.onnx())
    return onnxruntime_runner(src.onnx())


def output_fidelity(got: list[list[np.ndarray]], ref: list[list[np.ndarray]]) -> dict[str, Any]:
    """Fidelity of each output (runs of single samples: samples x outputs), by
    :func:`slimline.tasks.generic.output_fidelity`: per-sample cosine, max/mean abs difference, top-k agreement
    of score outputs.

    Returns ``min_cosine`` (worst output and sample), ``mean_cosine`` and ``max_abs_diff`` over all
    outputs, and the same per output index under ``outputs``.
    """
    from slimline.tasks.generic import FidelityShapeError
    from slimline.tasks.generic import output_fidelity as named_fidelity

    def joined(runs: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k in range(len(runs[0]) if runs else 0):
            parts = [np.asarray(r[k]) for r in runs]
            batched = all(p.ndim and p.shape[0] == 1 for p in parts)
            out[str(k)] = np.concatenate(parts) if batched else np.stack(parts)
        return out

    try:
        fid = named_fidelity(joined(got), joined(ref))
    except FidelityShapeError as e:
        raise QuantizationError(
            f"the int8 model's outputs differ in shape from the fp32 model's ({first_line(e)}); "
            "the quantized graph is wrong: report it with the model"
        ) from e
    return fid | {"outputs": list(fid["outputs"].values())}


def result_runtime(result: QuantResult) -> str:
    """The runtime a quantized ONNX/OpenVINO result runs on (the one it names, else its kind's)."""
    return str(result.meta.get("runtime") or ("openvino" if result.kind == "openvino" else "onnxruntime"))


def result_runner(result: QuantResult, out_dir: Path) -> Runner:
    """Run the model ``result`` describes (written into ``out_dir``) on its runtime."""
    model = out_dir / result.files["model"]
    return onnxruntime_runner(model) if result_runtime(result) == "onnxruntime" else openvino_runner(model)


def samples_of(x: Calibration, limit: int) -> list[Feed]:
    """The first ``limit`` items of ``x`` as feeds of one sample (fixed-batch exports run them too): float32
    batches of one, or named arrays of one sample each."""
    if isinstance(x, NamedSamples):
        return list(x.take(limit).batches(1))
    return [np.ascontiguousarray(x[i : i + 1], dtype=np.float32) for i in range(min(len(x), limit))]


def fidelity_vs_fp32(
    result: QuantResult, out_dir: Path, src: FloatModel, x: Calibration, limit: int = 256
) -> dict[str, Any]:
    """Cosine similarity and max abs difference of the quantized model's outputs against fp32's on ``x`` (the
    first ``limit`` items): the measure for models whose outputs are not class logits (detectors...)."""
    samples = samples_of(x, limit)
    run, ref = result_runner(result, out_dir), reference_runner(src)
    fid = output_fidelity([run(s) for s in samples], [ref(s) for s in samples])
    return {"n": len(samples), "runtime": result_runtime(result), **fid}


def _check_batched(run: Runner, calib: Calibration, singles: list[list[np.ndarray]], what: str) -> Any:
    """Run the verification samples as one batch and compare with the same samples run one at a time: a model
    that is right at batch 1 and wrong at batch N (seen with OpenVINO on an int8 transformer) is refused.
    Returns the worst per-sample cosine, or why no batch was run (a fixed-batch export, a single sample)."""
    n = len(singles)
    if n < 2:
        return "not run: fewer than two samples"
    batch: Feed = (
        next(iter(calib.take(n).batches(n)))
        if isinstance(calib, NamedSamples)
        else (np.ascontiguousarray(calib[:n], dtype=np.float32))
    )
    try:
        outs = run(batch)
    except Exception as e:  # noqa: BLE001 - a fixed-batch export cannot run a batch: nothing to compare
        return f"not run: {first_line(e)}"
    worst = 1.0
    for k, out in enumerate(outs):
        parts = [np.asarray(r[k]) for r in singles]
        if not all(p.ndim and p.shape[0] == 1 for p in parts) or np.shape(out)[0] != n:
            return "not compared: an output without a leading batch axis"
        one = np.concatenate(parts).reshape(n, -1).astype(np.float64)
        many = np.asarray(out).reshape(n, -1).astype(np.float64)
        num = (one * many).sum(1)
        den = np.linalg.norm(one, axis=1) * np.linalg.norm(many, axis=1)
        cos = np.where(den > 0, num / np.maximum(den, 1e-30), (np.abs(one - many).max(1) == 0).astype(float))
        worst = min(worst, float(np.nan_to_num(cos, nan=-1.0).min()))
    if worst < BATCH_COSINE:
        raise QuantizationError(
            f"{what} gives other outputs for a batch of {n} than for the same samples one at a time (min cosine "
            f"{worst:.3f}): it is wrong at batch > 1; run it at batch 1, use the other backend, or exclude: [...]"
        )
    return worst


def verify_result(backend: str, result: QuantResult, src: FloatModel, calib: Calibration, out_dir: Path) -> None:
    """Check the model ``backend`` wrote into ``out_dir``: the ONNX checker (ONNX files), loading it in its
    runtime, running it on a few calibration samples and comparing its outputs with the fp32 model's.

    Fills ``result.verification``; raises :class:`QuantizationError` naming the failing stage and its cause.
    """
    if result.kind not in ("onnx", "openvino"):
        result.verification = {"skipped": f"{result.kind} models are checked when they are loaded"}
        return
    model = out_dir / result.files["model"]
    runtime = result_runtime(result)
    where = _RUNTIME_NAMES.get(runtime, runtime)
    what = f"the int8 model written by {backend}"
    fix = "try per_channel: false, or keep the failing operator in float with exclude: [<node name>]"
    ver: dict[str, Any] = {"runtime": runtime}
    if result.kind == "onnx":
        import onnx

        try:
            onnx.checker.check_model(str(model))
        except Exception as e:  # noqa: BLE001 - the checker raises several types
            raise QuantizationError(f"{what} fails the ONNX checker: {first_line(e)}; {fix}") from e
        ver["checker"] = "ok"
    try:
        run = result_runner(result, out_dir)
    except Exception as e:  # noqa: BLE001 - runtimes raise their own types
        raise QuantizationError(f"{what} fails to load in {where}: {first_line(e)}; {fix}") from e
    ver["loads"] = "ok"
    samples = samples_of(calib, VERIFY_SAMPLES)
    try:
        got = [run(x) for x in samples]
    except Exception as e:  # noqa: BLE001
        raise QuantizationError(
            f"{what} loads in {where} but fails to run on the calibration inputs: {first_line(e)}; {fix}"
        ) from e
    ver["runs"] = "ok"
    ver["samples"] = len(samples)
    try:
        ref = [reference_runner(src)(x) for x in samples] if samples else []
    except Exception as e:  # noqa: BLE001 - fidelity needs the fp32 model to run; without it, say why
        ver["fidelity"] = f"not measured: the fp32 model does not run here ({first_line(e)})"
        result.verification = ver
        return
    bad = [
        k
        for gs, rs in zip(got, ref, strict=True)
        for k, (g, r) in enumerate(zip(gs, rs, strict=False))
        if np.isfinite(r).all() and not np.isfinite(g).all()
    ]
    if bad:
        raise QuantizationError(
            f"{what} outputs NaN or infinity (output {bad[0]}) in {where} where the fp32 model "
            f"does not; try calibration: percentile, or exclude: [<node name>]"
        )
    fid = output_fidelity(got, ref)
    ver.update({k: fid[k] for k in ("min_cosine", "mean_cosine", "max_abs_diff")})
    if len(fid["outputs"]) > 1:
        ver["outputs"] = fid["outputs"]
    ver["batched"] = _check_batched(run, calib, got, f"{what} in {where}")
    result.verification = ver
    if fid["min_cosine"] < LOW_COSINE:
        result.warn(
            f"the int8 model's outputs are far from fp32 on the calibration inputs (min cosine "
            f"{fid['min_cosine']:.3f}); try calibration: percentile, per_channel: true or exclude: [...]"
        )
