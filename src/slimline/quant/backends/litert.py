"""LiteRT: full-integer int8 ``.tflite`` from a PyTorch model (litert-torch, then ai-edge-quantizer).

The fp32 module is converted to ``.tflite`` (:func:`slimline.tflite_export.convert_tflite`, batch 1), then
quantized with ai-edge-quantizer's static recipe: int8 weights per output channel (symmetric), int8
activations (asymmetric, per tensor) from min/max over the calibration samples. ``format: native`` keeps float
graph inputs and outputs (QUANTIZE/DEQUANTIZE at the edges); ``format: int8_io`` makes them int8 too, for
microcontroller-style deployment (the litert runtime quantizes and dequantizes with the recorded scales, so
callers still feed floats). Heavy operators left in float are listed. Activations are always int8 here
(``activation_type`` is not used). The result is checked on the calibration samples against the fp32
``.tflite`` (cosine per sample); the artifact is run by the ``litert`` runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slimline.data.arrays import NamedSamples
from slimline.errors import RecipeError
from slimline.quant.backends import BACKENDS
from slimline.quant.backends.base import (
    Calibration,
    FloatModel,
    QuantBackend,
    QuantConfig,
    QuantizationError,
    QuantResult,
)

VERIFY_SAMPLES = 16


@BACKENDS.register("litert")
class LiteRTBackend(QuantBackend):
    name = "litert"
    kind = "tflite"
    calibration_methods = ("minmax", "default")
    formats = ("native", "int8_io")
    shares_tensor_quantization = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import importlib.util

        missing = [
            p for p in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert") if importlib.util.find_spec(p) is None
        ]
        if missing:
            return False, f"{', '.join(missing)} not installed; pip install 'slimline[edge]'"
        return True, ""

    def check(self, cfg: QuantConfig) -> None:
        super().check(cfg)
        if cfg.mode != "static":
            raise RecipeError("the litert backend does full-integer (static) int8 only; use mode: static")

    def quantize(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        """:meth:`write`, whose own check (runs in LiteRT, cosine against the fp32 .tflite) is the verification."""
        return self.write(src, calib, cfg, keep_float, out_dir)

    def write(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        from slimline.onnx_export import classifier_plan
        from slimline.runtimes.litert import import_interpreter
        from slimline.tflite_export import (
            TFLITE_FILE,
            compact_tensor_names,
            convert_tflite,
            left_float_ops,
            model_feeds,
            quantize_tflite,
            tflite_io,
        )

        if src.torch_model is None:
            raise RecipeError(
                "the litert backend converts PyTorch models to .tflite; quantize the PyTorch artifact "
                "(before export), not an ONNX/OpenVINO one"
            )
        if keep_float or cfg.exclude:
            raise RecipeError(
                "the litert backend cannot keep chosen layers in float yet; drop exclude / "
                "accuracy_aware, or use the onnxruntime or openvino backend"
            )
        if isinstance(calib, NamedSamples):
            raise RecipeError(
                "the litert backend calibrates single-input image models (a dataset name); models "
                "with named inputs: export them with slimline export --format tflite"
            )
        plan = classifier_plan(src.input_shape)
        io_names = tflite_io(plan, 1)
        fp32 = compact_tensor_names(convert_tflite(src.torch_model, plan))  # short names carry into the int8 file
        feeds = model_feeds(plan, io_names["inputs"], {"input": np.asarray(calib, np.float32)})
        int8 = quantize_tflite(fp32, feeds, int8_io=cfg.format == "int8_io")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / TFLITE_FILE).write_bytes(int8)
        result = QuantResult(
            "tflite", {"model": TFLITE_FILE}, meta={"tflite_io": io_names, "layout": "NCHW", "runtime": "litert"}
        )
        result.left_float = left_float_ops(int8)
        result.warn_left_float("ai-edge-quantizer has no int8 kernel for them")
        result.details["scheme"] = {
            "weights": "int8 symmetric per channel",
            "activations": "int8 asymmetric per tensor",
            "io": "int8" if cfg.format == "int8_io" else "float32",
        }
        lite = import_interpreter()
        try:
            got, ref = ([run(f) for f in feeds[:VERIFY_SAMPLES]] for run in (_runner(lite, int8), _runner(lite, fp32)))
        except Exception as e:  # noqa: BLE001 - the interpreter raises several types
            raise QuantizationError(f"the int8 .tflite written by litert does not run in LiteRT: {e}") from e
        cos = [
            float(np.dot(g.ravel(), r.ravel()) / (np.linalg.norm(g) * np.linalg.norm(r) + 1e-12))
            for g, r in zip(got, ref, strict=True)
        ]
        result.verification = {
            "runtime": "litert",
            "loads": "ok",
            "runs": "ok",
            "samples": len(cos),
            "min_cosine": min(cos),
            "mean_cosine": float(np.mean(cos)),
            "against": "fp32 .tflite",
        }
        return result


def _runner(lite: Any, model: bytes) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """One interpreter over ``model``: feed (the model's input names) -> its first output as float32."""
    from slimline.runtimes.litert import _from_model, _to_model

    runner = lite.Interpreter(model_content=model, num_threads=1).get_signature_runner()
    ins, outs = runner.get_input_details(), runner.get_output_details()

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        out = runner(**{k: _to_model(v, ins[k]) for k, v in feed.items()})
        key = next(iter(out))
        return _from_model(out[key], outs[key]).astype(np.float32)

    return run
