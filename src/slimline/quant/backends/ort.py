"""ONNX Runtime quantization: static QDQ (calibrated) or dynamic (weights only, activations at run time).

Static QDQ defaults to uint8 activations and int8 per-channel weights (U8S8), the combination ONNX
Runtime's x86 int8 kernels are built for; whether int8 beats fp32 depends on the CPU (the kernels pay
off with VNNI/AMX; without VNNI 7-bit weights are chosen, see :func:`resolve_reduce_range`).
``benchmarks/resnet18_peers`` measures int8 against fp32 on the machine it runs on. Dynamic
quantization suits Linear/attention-heavy models; on convolution-heavy ones its ConvInteger path is
slower than fp32 on CPUs, so it warns.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import RecipeError
from slimline.quant.backends import BACKENDS
from slimline.quant.backends.base import (
    HEAVY_ONNX_OPS,
    Calibration,
    FloatModel,
    QuantBackend,
    QuantConfig,
    QuantizationError,
    QuantResult,
    QuantWarning,
    calibration_feeds,
    calibration_key,
    prepare_onnx,
    resolve_onnx_nodes,
    working_directory,
)

_METHODS = {"minmax": "MinMax", "default": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
# a transformer's static int8: the weighted operators only; Q/DQ around its residual Adds and LayerNorms loses most
TRANSFORMER_OPS = ["MatMul", "Gemm", "Gather"]


def _reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """Feeds calibration batches (every input by name); ``set_range`` lets ONNX Runtime calibrate in chunks
        (bounded memory)."""

        def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
            self.batches = batches
            self.set_range(0, len(batches))

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= self.end:
                return None
            self.pos += 1
            return self.batches[self.pos - 1]

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pos, self.end = start_index, min(end_index, len(self.batches))

    return BatchReader


def resolve_reduce_range(setting: bool | None) -> tuple[bool, str]:
    """``None`` (auto): 7-bit weights on x86 CPUs without VNNI, as ONNX Runtime advises for U8S8.

    Without VNNI the uint8 x int8 kernels (vpmaddubsw) can saturate int16 sums, so the int8 kernels can
    lose accuracy that the same QDQ graph run in float keeps; 7-bit weights leave the sums room.
    """
    if setting is not None:
        return setting, "set in the options"
    import platform

    from slimline.environment import cpu_info

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False, "not an x86 CPU"
    flags = cpu_info()["flags"]
    if any(flags.get(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8")):
        return False, "the CPU has VNNI: int8 products accumulate without saturation"
    return True, "x86 CPU without VNNI: 7-bit weights avoid int16 saturation in U8S8 kernels (ONNX Runtime's advice)"


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


# operators an int8 tensor passes through unchanged: a DequantizeLinear before them still feeds int8
_PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Pad", "Slice")


def float_heavy_nodes(proto: Any) -> list[dict[str, str]]:
    """Compute-heavy nodes whose activation or weight does not come through a DequantizeLinear (still float).

    The activation may reach the node through operators that keep int8 values as they are (max
    pooling, reshapes: NNCF quantizes before them); the weight must come straight from one.
    """
    producers = {o: n for n in proto.graph.node for o in n.output}

    def source(name: str) -> Any:
        p = producers.get(name)
        while p is not None and p.op_type in _PASS_THROUGH and p.input:
            p = producers.get(p.input[0])
        return p

    out = []
    for n in proto.graph.node:
        if n.op_type not in HEAVY_ONNX_OPS:
            continue
        inputs = [source(n.input[0]), producers.get(n.input[1]) if len(n.input) > 1 else None]
        if not all(p is not None and p.op_type == "DequantizeLinear" for p in inputs):
            out.append({"name": n.name, "op": n.op_type})
    return out


def conv_weight_share(proto: Any) -> float:
    """Fraction of the compute-heavy ops' weights that belong to convolutions."""
    sizes = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    conv = other = 0
    for n in proto.graph.node:
        if n.op_type in HEAVY_ONNX_OPS and len(n.input) > 1:
            s = sizes.get(n.input[1], 0)
            if n.op_type in ("Conv", "ConvTranspose"):
                conv += s
            else:
                other += s
    return conv / max(1, conv + other)


@BACKENDS.register("onnxruntime")
class OrtBackend(QuantBackend):
    name = "onnxruntime"
    kind = "onnx"
    calibration_methods = ("minmax", "percentile", "entropy", "default")

    def __init__(self) -> None:
        self._pre: dict[tuple[Path, bool], tuple[Path, bool, QuantResult]] = {}
        self._cache: dict[str, Path] = {}

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as e:
            return False, f"onnxruntime is not installed ({e}); pip install onnxruntime"
        return True, ""

    def check(self, cfg: QuantConfig) -> None:
        super().check(cfg)
        if cfg.mode == "dynamic" and cfg.activation_type != "uint8":
            raise RecipeError(
                "onnxruntime dynamic quantization computes uint8 activations; leave activation_type: uint8"
            )

    def reset_cache(self) -> None:
        self._cache.clear()

    def _preprocess(self, src: FloatModel, cfg: QuantConfig, result: QuantResult) -> tuple[Path, QuantConfig]:
        """Constant weights to initializers and the opset per-channel needs (:func:`prepare_onnx`), then shape
        inference + graph cleanup (ONNX Runtime's quant_pre_process), once per model and per-channel setting."""
        fp32, work = src.onnx().absolute(), src.work_dir.absolute()  # absolute: ORT runs in another folder
        key = (fp32, cfg.per_channel)
        if key not in self._pre:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            notes = QuantResult("onnx", {})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantWarning)  # repeated below into each result
                prepared, pcfg = prepare_onnx(fp32, work, cfg, notes)
            pre = work / f"{fp32.stem}.{'pc' if pcfg.per_channel else 'pt'}.pre.onnx"
            try:
                with working_directory(work / "cwd"):
                    quant_pre_process(str(prepared), str(pre), skip_symbolic_shape=False)
            except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation; quantize the raw model
                logging.getLogger("slimline").info("quant_pre_process failed (%s); quantizing the raw export", e)
                pre = prepared
            self._pre[key] = (pre, pcfg.per_channel, notes)
        pre, per_channel, notes = self._pre[key]
        result.details.update(notes.details)
        for message in notes.warnings:
            result.warn(message)
        return pre, dataclasses.replace(cfg, per_channel=per_channel)

    def write(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        import onnx
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        self.check(cfg)
        for name in ("onnxruntime", "root"):
            logging.getLogger(name).setLevel(logging.ERROR)  # ORT's 'consider pre-processing' chatter
        result = QuantResult("onnx", {"model": "model.onnx"})
        pre, cfg = self._preprocess(src, cfg, result)
        proto = onnx.load(str(pre), load_external_data=False)
        graph_nodes = {n.name for n in proto.graph.node}
        excluded = resolve_onnx_nodes([*cfg.exclude, *keep_float], src, graph_nodes)
        result.excluded = excluded
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir.absolute() / "model.onnx"
        reduce_range, why = resolve_reduce_range(cfg.reduce_range)
        result.details["reduce_range_reason"] = why
        wtype, atype = getattr(QuantType, _TYPES[cfg.weight_type]), getattr(QuantType, _TYPES[cfg.activation_type])
        if cfg.mode == "dynamic":
            share = conv_weight_share(proto)
            if share > 0.5:
                result.warn(
                    f"dynamic quantization on a convolution-heavy model ({100 * share:.0f}% of the weights are in "
                    "convolutions): ONNX Runtime runs dynamically quantized convolutions (ConvInteger) slower "
                    "than fp32 (several times slower on ResNet-18). Use mode: static for CNNs."
                )
            with working_directory(src.work_dir / "cwd"):  # ORT writes temporary files into the cwd
                quantize_dynamic(
                    str(pre),
                    str(out),
                    per_channel=cfg.per_channel,
                    reduce_range=reduce_range,
                    weight_type=wtype,
                    nodes_to_exclude=excluded,
                    extra_options={"WeightSymmetric": cfg.weight_symmetric},
                )
            result.details.update({"mode": "dynamic", "weight_type": cfg.weight_type, "conv_weight_share": share})
            if not has_int8_weights(onnx.load(str(out), load_external_data=False)):
                raise QuantizationError(
                    f"dynamic quantization found nothing to quantize in {src.onnx().name} (it quantizes the "
                    f"constant weights of MatMul, Conv, Attention, LSTM and Gather; this model has only "
                    f"{op_summary(proto)}); use mode: static"
                )
        else:
            if cfg.activation_type == "int8" and cfg.weight_type == "int8":
                result.details["note"] = "S8S8: ONNX Runtime's x86 kernels favour U8S8 (uint8 activations)"
            inits = {i.name for i in proto.graph.initializer}
            feeds_in = [i for i in proto.graph.input if i.name not in inits]
            # an export whose inputs all have one fixed batch (usually 1) is calibrated in batches of that size
            firsts = [next(iter(i.type.tensor_type.shape.dim), None) for i in feeds_in]
            fixed = {d.dim_value if d is not None and d.HasField("dim_value") else 0 for d in firsts}
            batch = fixed.pop() if len(fixed) == 1 and 0 not in fixed else cfg.batch_size
            batches = calibration_feeds(calib, [i.name for i in feeds_in], batch)
            reader = _reader_class()(batches)
            method = getattr(CalibrationMethod, _METHODS[cfg.calibration])
            extra = {
                "ActivationSymmetric": cfg.activation_symmetric,
                "WeightSymmetric": cfg.weight_symmetric,
                "CalibStridedMinMax": _largest_divisor(len(batches), 4),
                "CalibPercentile": cfg.percentile,
            }
            cache = self._cache_path(src, pre, calib, cfg)
            # ORT prints calibration progress and may write temporary files into the current folder
            with working_directory(src.work_dir / "cwd"), contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(pre),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=cfg.per_channel,
                    reduce_range=reduce_range,
                    activation_type=atype,
                    weight_type=wtype,
                    nodes_to_exclude=excluded,
                    op_types_to_quantize=TRANSFORMER_OPS if cfg.model_type == "transformer" else None,
                    calibrate_method=method,
                    extra_options=extra,
                    calibration_cache_path=str(cache),
                )
            result.details.update(
                {
                    "mode": "static",
                    "format": "QDQ",
                    "activation_type": cfg.activation_type,
                    "weight_type": cfg.weight_type,
                    "calibration": cfg.calibration,
                    "calibration_samples": int(len(calib)),
                    "per_channel": cfg.per_channel,
                    "reduce_range": reduce_range,
                    "model_type": cfg.model_type,
                }
            )
        qproto = onnx.load(str(out), load_external_data=False)
        excluded_set = set(excluded)
        for node in float_heavy_nodes(qproto):
            if node["name"] in excluded_set:
                continue
            node["reason"] = "onnxruntime did not quantize this operator"
            result.left_float.append(node)
        result.warn_left_float("onnxruntime cannot quantize them here")
        result.details["quantized_ops"] = count_quantized(qproto)
        if cfg.compact_names:
            from slimline.optimize.onnx_graph import compact_names

            result.details["compact_names"] = compact_names(out, out)
        return result

    def _cache_path(self, src: FloatModel, pre: Path, calib: Calibration, cfg: QuantConfig) -> Path:
        """Calibration ranges do not depend on which nodes stay float: compute them once per setting."""
        key_src = f"{pre}|{cfg.calibration}|{cfg.percentile}|{cfg.activation_symmetric}|{cfg.batch_size}|"
        key = hashlib.sha1(key_src.encode() + calibration_key(calib)).hexdigest()
        if key not in self._cache:
            self._cache[key] = src.work_dir.absolute() / f"calibration-{key[:12]}.json"
            self._cache[key].unlink(missing_ok=True)
        return self._cache[key]


def count_quantized(proto: Any) -> dict[str, int]:
    producers = {o: n for n in proto.graph.node for o in n.output}
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type in ("ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearConv", "QLinearMatMul"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        elif n.op_type in HEAVY_ONNX_OPS and len(n.input) > 1:
            p = producers.get(n.input[1])
            if p is not None and p.op_type == "DequantizeLinear":
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def has_int8_weights(proto: Any) -> bool:
    """Whether any initializer holds 8-bit integers (a quantized weight)."""
    from onnx import TensorProto

    return any(i.data_type in (TensorProto.INT8, TensorProto.UINT8) for i in proto.graph.initializer)


def op_summary(proto: Any, most: int = 6) -> str:
    """``'Add (4), Relu (3), ...'``: the graph's commonest operator types."""
    counts = collections.Counter(n.op_type for n in proto.graph.node).most_common()
    text = ", ".join(f"{op} ({n})" for op, n in counts[:most])
    return text + (f" and {len(counts) - most} more types" if len(counts) > most else "") if counts else "no operators"
