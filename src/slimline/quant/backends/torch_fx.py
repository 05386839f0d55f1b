"""PyTorch-native int8: FX graph mode quantization with the x86 (fbgemm/oneDNN) kernels.

In torch 2.13 ``torch.ao.quantization.quantize_fx`` (prepare_fx / convert_fx) works, with a
deprecation notice; the PT2E path (``torch.ao.quantization.quantize_pt2e`` and the X86 inductor
quantizer) no longer imports there: it moved to the separate ``torchao`` package, which slimline
does not depend on. :func:`pt2e_status` checks this at run time.

The result is a ``torch`` artifact whose architecture is rebuilt by :func:`rebuild` (the float
model from its own recipe, then prepare_fx/convert_fx with the same settings) before the int8
state_dict is loaded with ``weights_only=True``: no pickled code, and the shared ``torch`` runtime,
evaluation and bench run it like any other torch artifact.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.errors import RecipeError
from slimline.quant.backends import BACKENDS
from slimline.quant.backends.base import Calibration, FloatModel, QuantBackend, QuantConfig, QuantResult

REBUILD = "slimline.quant.backends.torch_fx:rebuild"
_FLOAT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def pt2e_status() -> tuple[bool, str]:
    """Whether the PT2E quantization API imports here (it does not in torch >= 2.10 without torchao)."""
    try:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: F401
    except ImportError as e:
        return False, f"torch {torch.__version__}: PT2E quantization does not import ({e}); it lives in torchao now"
    return True, ""


def _qconfig_mapping(settings: dict[str, Any], keep_float: list[str]) -> Any:
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import (
        HistogramObserver,
        MinMaxObserver,
        PerChannelMinMaxObserver,
    )

    reduce_range = settings.get("reduce_range", True)
    act_qscheme = torch.per_tensor_symmetric if settings["activation_symmetric"] else torch.per_tensor_affine
    act_cls = MinMaxObserver if settings["calibration"] == "minmax" else HistogramObserver
    activation = act_cls.with_args(dtype=torch.quint8, qscheme=act_qscheme, reduce_range=reduce_range)
    if settings["per_channel"]:
        qs = torch.per_channel_symmetric if settings["weight_symmetric"] else torch.per_channel_affine
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=qs)
    else:
        qs = torch.per_tensor_symmetric if settings["weight_symmetric"] else torch.per_tensor_affine
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=qs)
    mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=weight))
    for name in keep_float:
        mapping.set_module_name(name, None)
    return mapping


def _prepare(model: nn.Module, settings: dict[str, Any], keep_float: list[str], input_shape: tuple[int, ...]) -> Any:
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        try:
            return prepare_fx(
                copy.deepcopy(model).eval(), _qconfig_mapping(settings, keep_float), (torch.zeros(1, *input_shape),)
            )
        except Exception as e:  # noqa: BLE001 - symbolic tracing fails in many ways
            raise RecipeError(
                f"PyTorch FX cannot trace this model for quantization: {str(e).splitlines()[0]}. "
                "Use backend: onnxruntime or openvino, or remove data-dependent control flow"
            ) from e


def _convert(prepared: Any) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval()


def rebuild(
    float_source: dict[str, Any],
    float_layers: dict[str, Any],
    input_shape: list[int],
    settings: dict[str, Any],
    keep_float: list[str],
) -> nn.Module:
    """The int8 architecture of a saved torch-backend artifact (its weights are loaded afterwards)."""
    from slimline.artifact import apply_layer_specs
    from slimline.models import build_from_source

    model = build_from_source(float_source, where="the float model named by a torch-backend int8 artifact")
    apply_layer_specs(model, float_layers)
    prepared = _prepare(model, settings, keep_float, tuple(input_shape))
    with torch.inference_mode():
        prepared(torch.zeros(2, *input_shape))  # observers need one batch before convert
    return _convert(prepared)


@BACKENDS.register("torch")
class TorchFxBackend(QuantBackend):
    name = "torch"
    kind = "torch"
    # MinMaxObserver, or HistogramObserver (least-L2-error range search) for mse / default
    calibration_methods = ("minmax", "mse", "default")

    def check(self, cfg: QuantConfig) -> None:
        super().check(cfg)
        if cfg.mode != "static":
            raise RecipeError("the torch backend quantizes statically (FX graph mode); dynamic mode is onnxruntime's")
        if cfg.activation_type != "uint8" or cfg.weight_type != "int8":
            raise RecipeError("PyTorch's x86 kernels take uint8 activations and int8 weights; leave the defaults")
        if "x86" not in torch.backends.quantized.supported_engines:
            engines = torch.backends.quantized.supported_engines
            raise RecipeError(f"this torch build has no x86 quantized engine ({engines})")

    def write(
        self, src: FloatModel, calib: Calibration, cfg: QuantConfig, keep_float: list[str], out_dir: Path
    ) -> QuantResult:
        from slimline.artifact import layer_specs

        self.check(cfg)
        if src.torch_model is None:
            raise RecipeError("the torch backend quantizes PyTorch models; this artifact is not one")
        if not isinstance(calib, np.ndarray):
            raise RecipeError(
                "the torch backend calibrates on an image dataset; for named arrays (.npz) use "
                "-b onnxruntime or -b openvino"
            )
        model = src.torch_model
        names = {n for n, _ in model.named_modules() if n}
        keep = [*cfg.exclude, *keep_float]
        unknown = [n for n in keep if n not in names]
        if unknown:
            raise RecipeError(f"no module(s) {unknown} in the model to keep in float; e.g. {sorted(names)[:5]}")
        source = getattr(model, "slimline_source", None)
        if source is None:
            raise RecipeError("the model has no slimline_source; load it with slimline.load_model")
        settings = {
            "calibration": cfg.calibration,
            "activation_symmetric": cfg.activation_symmetric,
            "per_channel": cfg.per_channel,
            "weight_symmetric": cfg.weight_symmetric,
            "reduce_range": True if cfg.reduce_range is None else cfg.reduce_range,
        }
        prepared = _prepare(model, settings, keep, src.input_shape)
        with torch.inference_mode():
            for i in range(0, len(calib), cfg.batch_size):
                prepared(torch.from_numpy(np.ascontiguousarray(calib[i : i + cfg.batch_size])))
        qmodel = _convert(prepared)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(qmodel.state_dict(), out_dir / "weights.pt")
        arch = {
            "source": {
                "factory": REBUILD,
                "kwargs": {
                    "float_source": source,
                    "float_layers": layer_specs(model),
                    "input_shape": list(src.input_shape),
                    "settings": settings,
                    "keep_float": keep,
                },
            },
            "layers": {},
        }
        (out_dir / "model.json").write_text(json.dumps(arch, indent=1))
        result = QuantResult("torch", {"model": "weights.pt", "architecture": "model.json"}, excluded=keep)
        keep_set = set(keep)
        for name, m in qmodel.named_modules():
            if type(m) in _FLOAT_LAYERS and name not in keep_set:
                result.left_float.append(
                    {"name": name, "op": type(m).__name__, "reason": "FX quantization left this layer in float"}
                )
        if result.left_float:
            result.warn(
                "left in float (PyTorch FX did not quantize them): "
                + ", ".join(f"{n['name']} ({n['op']})" for n in result.left_float[:10])
            )
        ok, why = pt2e_status()
        result.details = {
            "api": "torch.ao.quantization.quantize_fx",
            "engine": "x86",
            "settings": settings,
            "calibration_samples": int(len(calib)),
            "pt2e_available": ok,
            **({"pt2e_note": why} if not ok else {}),
        }
        result.meta = {"precision": "int8"}
        return result
