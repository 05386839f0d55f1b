"""ONNX Runtime quantization: static QDQ (calibrated) or dynamic (weights only, activations at run time).

Static QDQ defaults to uint8 activations and int8 per-channel weights (U8S8): measurements reported
for this project on another machine had U8S8 3x faster than fp32 on ResNet-18 and S8S8 no faster.
On the 2-core AVX2 machine without VNNI used for scripts/quant_resnet18.py U8S8 did not beat fp32
(int8 kernels pay off with VNNI/AMX), and 7-bit weights are chosen there (see
:func:`resolve_reduce_range`). Dynamic quantization suits Linear/attention-heavy models; on
convolution-heavy ones its ConvInteger path is slower than fp32 (2.6x to 30x on ResNet-18,
depending on the machine), so it warns.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import RecipeError
from slimline.quant.backends import BACKENDS
from slimline.quant.backends.base import (
    HEAVY_ONNX_OPS,
    FloatModel,
    QuantBackend,
    QuantConfig,
    QuantResult,
    calibration_batches,
    resolve_onnx_nodes,
)

_METHODS = {"minmax": "MinMax", "default": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}


def _reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """Feeds calibration batches; ``set_range`` lets ONNX Runtime calibrate in chunks (bounded memory)."""

        def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
            self.input_name, self.batches = input_name, batches
            self.set_range(0, len(batches))

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= self.end:
                return None
            self.pos += 1
            return {self.input_name: self.batches[self.pos - 1]}

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pos, self.end = start_index, min(end_index, len(self.batches))

    return BatchReader


def resolve_reduce_range(setting: bool | None) -> tuple[bool, str]:
    """``None`` (auto): 7-bit weights on x86 CPUs without VNNI, as ONNX Runtime advises for U8S8.

    Without VNNI the uint8 x int8 kernels (vpmaddubsw) can saturate int16 sums; measured here on
    cifar_resnet20 (AVX2, no VNNI): 91.6% top-1 for the QDQ graph run in float, 90.5% through the int8
    kernels, 91.9% with reduce_range.
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
        self._pre: dict[Path, Path] = {}
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
            raise RecipeError("onnxruntime dynamic quantization computes uint8 activations; "
                              "leave activation_type: uint8")

    def reset_cache(self) -> None:
        self._cache.clear()

    def _preprocess(self, src: FloatModel) -> Path:
        """Shape inference + graph cleanup (ONNX Runtime's quant_pre_process), once per model."""
        fp32 = src.onnx()
        if fp32 not in self._pre:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = src.work_dir / f"{fp32.stem}.pre.onnx"
            try:
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
            except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation; quantize the raw model
                logging.getLogger("slimline").info("quant_pre_process failed (%s); quantizing the raw export", e)
                pre = fp32
            self._pre[fp32] = pre
        return self._pre[fp32]

    def quantize(self, src: FloatModel, calib: np.ndarray, cfg: QuantConfig, keep_float: list[str],
                 out_dir: Path) -> QuantResult:
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
        pre = self._preprocess(src)
        proto = onnx.load(str(pre), load_external_data=False)
        graph_nodes = {n.name for n in proto.graph.node}
        excluded = resolve_onnx_nodes([*cfg.exclude, *keep_float], src, graph_nodes)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "model.onnx"
        result = QuantResult("onnx", {"model": "model.onnx"}, excluded=excluded)
        reduce_range, why = resolve_reduce_range(cfg.reduce_range)
        result.details["reduce_range_reason"] = why
        wtype, atype = getattr(QuantType, _TYPES[cfg.weight_type]), getattr(QuantType, _TYPES[cfg.activation_type])
        if cfg.mode == "dynamic":
            share = conv_weight_share(proto)
            if share > 0.5:
                result.warn(
                    f"dynamic quantization on a convolution-heavy model ({100 * share:.0f}% of the weights are in "
                    "convolutions): ONNX Runtime runs dynamically quantized convolutions (ConvInteger) slower "
                    "than fp32 (ResNet-18: 2.6x slower in scripts/quant_resnet18.py on a 2-core AVX2 machine, "
                    "30x slower measured on another). Use mode: static for CNNs."
                )
            quantize_dynamic(str(pre), str(out), per_channel=cfg.per_channel, reduce_range=reduce_range,
                             weight_type=wtype, nodes_to_exclude=excluded,
                             extra_options={"WeightSymmetric": cfg.weight_symmetric})
            result.details = {"mode": "dynamic", "weight_type": cfg.weight_type, "conv_weight_share": share}
        else:
            if cfg.activation_type == "int8" and cfg.weight_type == "int8":
                result.details["note"] = "S8S8: ONNX Runtime's x86 kernels favour U8S8 (uint8 activations)"
            batches = calibration_batches(calib, cfg.batch_size)
            reader = _reader_class()(proto.graph.input[0].name, batches)
            method = getattr(CalibrationMethod, _METHODS[cfg.calibration])
            extra = {
                "ActivationSymmetric": cfg.activation_symmetric,
                "WeightSymmetric": cfg.weight_symmetric,
                "CalibStridedMinMax": _largest_divisor(len(batches), 4),
                "CalibPercentile": cfg.percentile,
            }
            cache = self._cache_path(src, pre, calib, cfg)
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
                quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
                                reduce_range=reduce_range, activation_type=atype, weight_type=wtype,
                                nodes_to_exclude=excluded, calibrate_method=method, extra_options=extra,
                                calibration_cache_path=str(cache))
            result.details.update({"mode": "static", "format": "QDQ", "activation_type": cfg.activation_type,
                                   "weight_type": cfg.weight_type, "calibration": cfg.calibration,
                                   "calibration_samples": int(len(calib)), "per_channel": cfg.per_channel,
                                   "reduce_range": reduce_range})
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

    def _cache_path(self, src: FloatModel, pre: Path, calib: np.ndarray, cfg: QuantConfig) -> Path:
        """Calibration ranges do not depend on which nodes stay float: compute them once per setting."""
        key_src = f"{pre}|{cfg.calibration}|{cfg.percentile}|{cfg.activation_symmetric}|{cfg.batch_size}|"
        key = hashlib.sha1(key_src.encode() + hashlib.sha1(np.ascontiguousarray(calib).tobytes()).digest()).hexdigest()
        if key not in self._cache:
            self._cache[key] = src.work_dir / f"calibration-{key[:12]}.json"
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
