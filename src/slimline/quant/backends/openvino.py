"""OpenVINO: NNCF post-training quantization of the OpenVINO model (``model.xml`` + ``model.bin``).

The float OpenVINO model is read from the fp32 ONNX export (so operator names are the ONNX node
names, which map back to PyTorch modules) or taken as is from an ``openvino`` artifact. With
``format: onnx`` NNCF quantizes the fp32 ONNX model instead and writes QDQ ONNX, which OpenVINO runs
in int8 (the artifact names ``openvino`` as its runtime); the file is smaller than the IR for small
networks, whose int8 IR is mostly XML text. Telemetry of OpenVINO and NNCF is switched off before
either is imported.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

from slimline.errors import RecipeError
from slimline.quant.backends import BACKENDS
from slimline.quant.backends.base import (
    Calibration,
    FloatModel,
    QuantBackend,
    QuantConfig,
    QuantResult,
    calibration_feeds,
)

HEAVY_OV_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
_QUANTIZERS = ("FakeQuantize", "FakeConvert")
# operators int8 passes through unchanged (NNCF may put the FakeQuantize before them)
_PRESERVING = ("Reshape", "Transpose", "Convert", "MaxPool", "Squeeze", "Unsqueeze", "StridedSlice", "Pad")


def import_nncf() -> tuple[Any, Any]:
    """(openvino, nncf) with telemetry off."""
    try:
        from slimline.runtimes.openvino import disable_telemetry, import_openvino
    except ImportError:  # pragma: no cover - the runtime module is part of slimline
        import os

        os.environ.setdefault("NNCF_CI", "1")
        import openvino as ov
    else:
        disable_telemetry()
        ov = import_openvino()
    import nncf

    nncf.set_log_level(logging.ERROR)
    return ov, nncf


def read_float_model(src: FloatModel) -> Any:
    """The float ``openvino.Model``: the IR as given, or converted from the fp32 ONNX export.

    ``convert_model`` (via :func:`slimline.openvino_export.convert_openvino`, telemetry off) runs
    OpenVINO's offline transformations (shape-subgraph folding...), so the int8 IR is as lean as the
    fp32 one; operator names stay the ONNX node names.
    """
    ov, _ = import_nncf()
    core = ov.Core()
    if src.ov_xml is not None:
        return core.read_model(str(src.ov_xml))
    try:
        from slimline.openvino_export import convert_openvino
    except ImportError:  # pragma: no cover - the exporter is part of slimline
        return core.read_model(str(src.onnx()))
    return convert_openvino(src.onnx(), src.input_shape)


def _port_name(port: Any) -> str:
    """An input port's name (``any_name``: the ONNX input name for models read from ONNX)."""
    return str(port.get_any_name())


def _heavy_ops(model: Any) -> list[Any]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() in HEAVY_OV_OPS]


def _is_quantized(op: Any) -> bool:
    """A compute op counts as int8 when its activation input comes through a FakeQuantize."""
    src = op.input_value(0).get_node()
    while src.get_type_name() in _PRESERVING:
        src = src.input_value(0).get_node()
    return src.get_type_name() in _QUANTIZERS


def resolve_ov_names(names: list[str], src: FloatModel, model: Any) -> list[str]:
    """Module names, ONNX node names or OpenVINO operator names -> OpenVINO operator names."""
    heavy = [op.get_friendly_name() for op in _heavy_ops(model)]
    all_names = {op.get_friendly_name() for op in model.get_ordered_ops()}
    mapping = src.node_map() if src.torch_model is not None else {}
    out, unknown = [], []
    for n in names:
        onnx_name = mapping.get(n, n)
        if n in all_names:
            out.append(n)
            continue
        hits = [h for h in heavy if h == onnx_name or h.startswith(onnx_name + "/")]
        if hits:
            out.extend(hits)
        else:
            unknown.append(n)
    if unknown:
        raise RecipeError(
            f"cannot find layer(s) {unknown} in the OpenVINO model to keep in float; give PyTorch "
            f"module names or operator names, e.g. {list(mapping)[:3] + heavy[:3]}"
        )
    return sorted(set(out))


def _nncf_quantize(nncf: Any, model: Any, samples: list[Any], cfg: QuantConfig, excluded: list[str]) -> Any:
    """``nncf.quantize`` with slimline's options, for an ``openvino.Model`` or an ``onnx.ModelProto``."""
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    weights = QuantizationParameters(
        per_channel=cfg.per_channel,
        mode=QuantizationScheme.SYMMETRIC if cfg.weight_symmetric else QuantizationScheme.ASYMMETRIC,
    )
    adv: dict[str, Any] = {"weights_quantization_params": weights}
    estimators = {
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
        "mse": RangeEstimatorParametersSet.HISTOGRAM,
    }
    if cfg.calibration in estimators:
        adv["activations_range_estimator_params"] = estimators[cfg.calibration]
    preset = nncf.QuantizationPreset.PERFORMANCE if cfg.activation_symmetric else nncf.QuantizationPreset.MIXED
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=preset,
            subset_size=len(samples),
            ignored_scope=nncf.IgnoredScope(names=excluded, validate=False) if excluded else None,
            advanced_parameters=AdvancedQuantizationParameters(**adv),
            **({"model_type": nncf.ModelType.TRANSFORMER} if cfg.model_type == "transformer" else {}),
        )


@BACKENDS.register("openvino")
class OpenVinoBackend(QuantBackend):
    name = "openvino"
    kind = "openvino"
    # NNCF range estimators: MINMAX, MEAN_QUANTILE (per-sample quantiles), HISTOGRAM (least-error fit)
    calibration_methods = ("minmax", "percentile", "mse", "default")
    formats = ("native", "onnx")  # native: OpenVINO IR; onnx: QDQ ONNX that OpenVINO runs
    shares_tensor_quantization = False  # FakeQuantize sits at each operator's input: ignoring one un-quantizes it

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import_nncf()
        except ImportError as e:
            return False, f"openvino/nncf is not installed ({e}); pip install openvino nncf"
        return True, ""

    def check(self, cfg: QuantConfig) -> None:
        super().check(cfg)
        if cfg.mode != "static":
            raise RecipeError("the openvino backend quantizes statically (NNCF); dynamic mode is onnxruntime's")

    def write(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        self.check(cfg)
        if cfg.format == "onnx":
            return self._quantize_onnx(src, calib, cfg, keep_float, out_dir)
        ov, nncf = import_nncf()
        model = read_float_model(src)
        excluded = resolve_ov_names([*cfg.exclude, *keep_float], src, model)
        # one sample per item: NNCF's statistics (and subset_size) count items, and it advises batch 1; every
        # input is fed by name
        samples = calibration_feeds(calib, [_port_name(p) for p in model.inputs], 1)
        qmodel = _nncf_quantize(nncf, model, samples, cfg, excluded)
        out_dir.mkdir(parents=True, exist_ok=True)
        ov.save_model(qmodel, str(out_dir / "model.xml"), compress_to_fp16=False)
        result = QuantResult("openvino", {"model": "model.xml", "weights": "model.bin"}, excluded=excluded)
        excluded_set = set(excluded)
        quantized = 0
        for op in _heavy_ops(qmodel):
            name = op.get_friendly_name()
            if _is_quantized(op):
                quantized += 1
            elif name not in excluded_set:
                result.left_float.append(
                    {"name": name, "op": op.get_type_name(), "reason": "NNCF did not quantize this operator"}
                )
        result.warn_left_float("NNCF did not quantize them")
        result.details = {
            "preset": "performance" if cfg.activation_symmetric else "mixed",
            "calibration": cfg.calibration,
            "calibration_samples": len(samples),
            "per_channel": cfg.per_channel,
            "quantized_ops": quantized,
            "nncf_version": nncf.__version__,
            "openvino_version": ov.__version__.split("-")[0],
        }
        return result

    def _quantize_onnx(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        """``format: onnx``: NNCF's ONNX backend writes a QDQ ONNX model with int8 weights, which OpenVINO
        reads and runs in int8 (its ONNX frontend turns each Quantize/DequantizeLinear pair into a
        FakeQuantize). Same algorithm as the IR path; the file holds no IR text, which for a small
        network (ResNet-56: 928 XML layers, 421 KB) is a third of the int8 IR's size."""
        import onnx

        from slimline.quant.backends.base import prepare_onnx, resolve_onnx_nodes
        from slimline.quant.backends.ort import count_quantized, float_heavy_nodes

        ov, nncf = import_nncf()
        result = QuantResult("onnx", {"model": "model.onnx"}, meta={"runtime": "openvino"})
        prepared, cfg = prepare_onnx(src.onnx(), src.work_dir, cfg, result)
        proto = onnx.load(str(prepared))
        excluded = resolve_onnx_nodes([*cfg.exclude, *keep_float], src, {n.name for n in proto.graph.node})
        result.excluded = excluded
        inits = {i.name for i in proto.graph.initializer}
        samples = calibration_feeds(calib, [i.name for i in proto.graph.input if i.name not in inits], 1)
        qproto = _nncf_quantize(nncf, proto, samples, cfg, excluded)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "model.onnx"
        onnx.save(qproto, str(out))
        excluded_set = set(excluded)
        for node in float_heavy_nodes(qproto):
            if node["name"] not in excluded_set:
                result.left_float.append(node | {"reason": "NNCF did not quantize this operator"})
        result.warn_left_float("NNCF did not quantize them")
        result.details.update(
            {
                "format": "QDQ ONNX (NNCF ONNX backend), run by OpenVINO",
                "preset": "performance" if cfg.activation_symmetric else "mixed",
                "calibration": cfg.calibration,
                "calibration_samples": len(samples),
                "per_channel": cfg.per_channel,
                "quantized_ops": count_quantized(qproto),
                "nncf_version": nncf.__version__,
                "openvino_version": ov.__version__.split("-")[0],
            }
        )
        if cfg.compact_names:
            from slimline.optimize.onnx_graph import compact_names

            result.details["compact_names"] = compact_names(out, out)
        return result
