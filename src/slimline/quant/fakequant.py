"""Simulated quantization in PyTorch: per-layer error (SQNR) and sensitivity without any backend.

Every Conv/Linear layer (BatchNorm folded in first, as every backend does) is wrapped so that its
input activation and its weight pass through quantize-dequantize. Ranges come from observers
(:mod:`slimline.quant.numerics`) run over calibration batches. Then:

* ``layer_errors``: each layer's own SQNR, on its weights, its input and its output, measured in one
  pass where each layer computes both its float and its quantized output from the same float input;
* ``sensitivity``: the network-output SQNR and top-1 agreement with float when *only* that layer is
  quantized, one pass per layer. The lower the output SQNR, the more sensitive the layer: this is
  the ranking the accuracy-aware mode uses to choose which layers to keep in float.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimline.quant.numerics import (
    ACTIVATION_SCHEME,
    WEIGHT_SCHEME,
    Observer,
    QScheme,
    fake_quantize,
    make_observer,
    sqnr_db,
)

QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
Mode = Literal["float", "calibrate", "quant", "measure"]


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, bool]:
    """A copy of ``model`` (eval mode) with every Conv->BatchNorm pair folded into the Conv.

    Uses torch.fx's fuser, which keeps the Conv layers' names. Returns (model, folded); when the
    model cannot be traced, the copy is returned unfolded (the simulation is then a little optimistic
    for layers followed by BatchNorm).
    """
    from torch.fx.experimental.optimization import fuse

    m = copy.deepcopy(model).eval()
    try:
        fused = fuse(m, inplace=False)
    except Exception:  # noqa: BLE001 - symbolic tracing fails in many ways on dynamic models
        return m, False
    src = getattr(model, "slimline_source", None)
    if src is not None:
        fused.slimline_source = src  # type: ignore[assignment]
    return fused.eval(), True


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv/Linear layers, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE) and n]


def _weight_axis(layer: nn.Module) -> int:
    return 0  # output channels for ConvNd and Linear weights


class SimLayer(nn.Module):
    """A Conv/Linear whose input and weight go through fake quantization when ``mode == "quant"``."""

    def __init__(self, layer: nn.Module, name: str, act_observer: Observer, weight_observer: Observer) -> None:
        super().__init__()
        self.layer = layer
        self.name = name
        self.act_observer = act_observer
        self.weight_observer = weight_observer
        self.mode: Mode = "float"
        self.quant_input = True
        self.quant_weight = True
        self.act_qparams: tuple[torch.Tensor, torch.Tensor] | None = None
        self.w_qparams: tuple[torch.Tensor, torch.Tensor] | None = None
        self.stats: dict[str, float] = {}
        self._noise = 0.0
        self._signal = 0.0
        self._in_noise = 0.0
        self._in_signal = 0.0

    @property
    def layer_weight(self) -> torch.Tensor:
        """The wrapped Conv/Linear's weight."""
        return cast(torch.Tensor, self.layer.weight)

    def _forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return F.linear(x, w, layer.bias)
        return layer._conv_forward(x, w, layer.bias)  # type: ignore[operator]

    def freeze(self) -> None:
        """Compute the activation and weight quantization parameters from the observers."""
        self.act_qparams = self.act_observer.compute()
        self.weight_observer.update(self.layer_weight.detach())
        self.w_qparams = self.weight_observer.compute()

    def quantized_weight(self) -> torch.Tensor:
        assert self.w_qparams is not None, "call freeze() (QuantSim.calibrate) first"
        return fake_quantize(self.layer_weight, *self.w_qparams, self.weight_observer.scheme)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        assert self.act_qparams is not None, "call freeze() (QuantSim.calibrate) first"
        return fake_quantize(x, *self.act_qparams, self.act_observer.scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "calibrate":
            self.act_observer.update(x)
            return self.layer(x)
        if self.mode == "quant":
            xq = self.quantized_input(x) if self.quant_input else x
            w = self.quantized_weight() if self.quant_weight else self.layer_weight
            return self._forward(xq, w)
        if self.mode == "measure":
            out = self.layer(x)
            xq = self.quantized_input(x)
            q_out = self._forward(xq, self.quantized_weight())
            self._signal += float(out.square().sum())
            self._noise += float((out - q_out).square().sum())
            self._in_signal += float(x.square().sum())
            self._in_noise += float((x - xq).square().sum())
            return out
        return self.layer(x)

    def reset_measure(self) -> None:
        self._noise = self._signal = self._in_noise = self._in_signal = 0.0

    def measured(self) -> dict[str, float]:
        def db(signal: float, noise: float) -> float:
            if noise == 0:
                return math.inf
            return 10 * math.log10(signal / noise) if signal > 0 else -math.inf

        w = self.layer_weight.detach()
        return {
            "weight_sqnr_db": sqnr_db(w, self.quantized_weight().detach()),
            "input_sqnr_db": db(self._in_signal, self._in_noise),
            "output_sqnr_db": db(self._signal, self._noise),
        }


@dataclass
class LayerReport:
    name: str
    type: str
    params: int
    weight_sqnr_db: float = math.nan
    input_sqnr_db: float = math.nan
    output_sqnr_db: float = math.nan  # the layer's own output, fed the float input
    model_sqnr_db: float = math.nan  # network logits when only this layer is quantized
    top1_agreement: float = math.nan  # percent of samples whose top-1 is unchanged
    rank: int = 0  # 1 = most sensitive

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass
class SensitivityReport:
    layers: list[LayerReport]
    all_quantized_sqnr_db: float
    all_quantized_agreement: float
    folded_batchnorm: bool
    activation_scheme: dict[str, Any]
    weight_scheme: dict[str, Any]
    calibration: str
    samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Layer names, most sensitive first."""
        return [r.name for r in sorted(self.layers, key=lambda r: r.rank)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration,
            "activation_scheme": self.activation_scheme,
            "weight_scheme": self.weight_scheme,
            "samples": self.samples,
            "folded_batchnorm": self.folded_batchnorm,
            "all_quantized": {
                "model_sqnr_db": self.all_quantized_sqnr_db,
                "top1_agreement": self.all_quantized_agreement,
            },
            "layers": [r.to_dict() for r in sorted(self.layers, key=lambda r: r.rank)],
            **self.extra,
        }


def _batches(data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Float NCHW tensors from an ArrayDataset, a numpy array / tensor, or an iterable of batches."""
    from slimline.data.base import ArrayDataset

    if isinstance(data, ArrayDataset):
        for x, _ in data.batches(batch_size):
            yield x
    elif isinstance(data, np.ndarray | torch.Tensor):
        t = torch.as_tensor(data).float()
        for i in range(0, len(t), batch_size):
            yield t[i : i + batch_size]
    else:
        for b in data:
            yield torch.as_tensor(b[0] if isinstance(b, tuple | list) else b).float()


class QuantSim:
    """A folded copy of ``model`` with every Conv/Linear wrapped for simulated quantization.

    >>> sim = QuantSim(model, calibration="percentile")
    >>> sim.calibrate(calib_ds)
    >>> report = sim.sensitivity(calib_ds.take(128))
    """

    def __init__(
        self,
        model: nn.Module,
        activation_scheme: QScheme = ACTIVATION_SCHEME,
        weight_scheme: QScheme = WEIGHT_SCHEME,
        calibration: str = "minmax",
        weight_calibration: str = "minmax",
        layers: Iterable[str] | None = None,
        fold: bool = True,
        batch_size: int = 64,
        **observer_kwargs: Any,
    ) -> None:
        self.model, self.folded = fold_batchnorm(model) if fold else (copy.deepcopy(model).eval(), False)
        self.activation_scheme, self.weight_scheme = activation_scheme, weight_scheme
        self.calibration, self.batch_size = calibration, batch_size
        names = list(layers) if layers is not None else quantizable_layers(self.model)
        self.sims: dict[str, SimLayer] = {}
        for name in names:
            layer = self.model.get_submodule(name)
            if not isinstance(layer, QUANTIZABLE):
                raise ValueError(f"{name!r} is a {type(layer).__name__}, not a Conv/Linear layer")
            w_scheme = QScheme(
                weight_scheme.dtype,
                weight_scheme.symmetric,
                weight_scheme.per_channel,
                _weight_axis(layer),
                weight_scheme.narrow,
            )
            sim = SimLayer(
                layer,
                name,
                make_observer(calibration, activation_scheme, **observer_kwargs),
                make_observer(weight_calibration, w_scheme),
            )
            _replace(self.model, name, sim)
            self.sims[name] = sim
        self.calibrated = False
        self.samples = 0

    def set_mode(self, mode: Mode, only: Iterable[str] | None = None) -> None:
        """Put layers in ``mode``; with ``only``, the other layers run in float."""
        chosen = set(self.sims) if only is None else set(only)
        for name, sim in self.sims.items():
            sim.mode = mode if name in chosen else "float"

    @torch.inference_mode()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.inference_mode()
    def calibrate(self, data: Any) -> QuantSim:
        self.set_mode("calibrate")
        n = 0
        for x in _batches(data, self.batch_size):
            self.model(x)
            n += len(x)
        if n == 0:
            raise ValueError("no calibration data")
        for sim in self.sims.values():
            sim.freeze()
        self.set_mode("float")
        self.calibrated, self.samples = True, n
        return self

    def _collect(self, data: Any, mode: Mode, only: Iterable[str] | None = None) -> torch.Tensor:
        self.set_mode(mode, only)
        with torch.inference_mode():
            outs = [self.model(x) for x in _batches(data, self.batch_size)]
        self.set_mode("float")
        return torch.cat(outs)

    def float_logits(self, data: Any) -> torch.Tensor:
        return self._collect(data, "float")

    def quant_logits(self, data: Any, only: Iterable[str] | None = None) -> torch.Tensor:
        """Logits with ``only`` these layers quantized (all when None)."""
        return self._collect(data, "quant", only)

    def layer_errors(self, data: Any) -> dict[str, dict[str, float]]:
        """Each layer's own weight / input / output SQNR (dB), every layer fed float inputs."""
        self._require_calibrated()
        for sim in self.sims.values():
            sim.reset_measure()
        self._collect(data, "measure")
        return {name: sim.measured() for name, sim in self.sims.items()}

    def sensitivity(self, data: Any) -> SensitivityReport:
        """Layer errors plus the network-output effect of quantizing each layer alone, ranked."""
        self._require_calibrated()
        errors = self.layer_errors(data)
        ref = self.float_logits(data)
        reports = []
        for name, sim in self.sims.items():
            out = self.quant_logits(data, only=[name])
            agree = float((out.argmax(1) == ref.argmax(1)).float().mean()) * 100
            reports.append(
                LayerReport(
                    name=name,
                    type=type(sim.layer).__name__,
                    params=sum(p.numel() for p in sim.layer.parameters()),
                    weight_sqnr_db=errors[name]["weight_sqnr_db"],
                    input_sqnr_db=errors[name]["input_sqnr_db"],
                    output_sqnr_db=errors[name]["output_sqnr_db"],
                    model_sqnr_db=sqnr_db(ref, out),
                    top1_agreement=agree,
                )
            )
        # most sensitive first: lowest output SQNR, ties broken by agreement
        for rank, r in enumerate(sorted(reports, key=lambda r: (r.model_sqnr_db, r.top1_agreement)), start=1):
            r.rank = rank
        full = self.quant_logits(data)
        return SensitivityReport(
            layers=reports,
            all_quantized_sqnr_db=sqnr_db(ref, full),
            all_quantized_agreement=float((full.argmax(1) == ref.argmax(1)).float().mean()) * 100,
            folded_batchnorm=self.folded,
            activation_scheme=self.activation_scheme.to_dict(),
            weight_scheme=self.weight_scheme.to_dict(),
            calibration=self.calibration,
            samples=len(ref),
        )

    def _require_calibrated(self) -> None:
        if not self.calibrated:
            raise RuntimeError("QuantSim.calibrate(data) must run before measuring")


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def layer_sensitivity(
    model: nn.Module,
    calibration_data: Any,
    eval_data: Any | None = None,
    calibration: str = "minmax",
    activation_scheme: QScheme = ACTIVATION_SCHEME,
    weight_scheme: QScheme = WEIGHT_SCHEME,
    **kwargs: Any,
) -> SensitivityReport:
    """Calibrate a :class:`QuantSim` on ``calibration_data`` and rank layers on ``eval_data`` (default: the same)."""
    sim = QuantSim(model, activation_scheme, weight_scheme, calibration, **kwargs)
    sim.calibrate(calibration_data)
    return sim.sensitivity(eval_data if eval_data is not None else calibration_data)


_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
    nn.Flatten,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)
_PASS_FUNCTIONS = {
    "relu",
    "relu_",
    "relu6",
    "max_pool1d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "flatten",
    "dropout",
    "pad",
    "batch_norm",
    "hardtanh",
    "view",
    "reshape",
    "contiguous",
    "clamp",
}


def input_producers(model: nn.Module) -> dict[str, list[str]]:
    """For each Conv/Linear, the Conv/Linear layers whose output reaches its input through
    single-input, range-preserving operators only (ReLU, pooling, flatten, BatchNorm...).

    Backends that quantize a tensor once for its producer and consumer (ONNX Runtime's QDQ, PyTorch
    FX) keep that tensor quantized unless both ends stay float, so "this layer in float" means these
    layers too. Returns {} when the model cannot be traced.
    """
    try:
        gm = torch.fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception:  # noqa: BLE001 - untraceable models: no grouping
        return {}
    layers = {n for n, m in gm.named_modules() if isinstance(m, QUANTIZABLE) and n}

    def passes(node: torch.fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(gm.get_submodule(str(node.target)), _PASS_MODULES)
        if node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
            return name in _PASS_FUNCTIONS
        return False

    out: dict[str, list[str]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in layers:
            continue
        found: list[str] = []
        src = node.args[0] if node.args else None
        while isinstance(src, torch.fx.Node):
            if src.op == "call_module" and src.target in layers:
                found.append(str(src.target))
                break
            if not passes(src):
                break
            src = src.args[0] if src.args else None
        out[str(node.target)] = found
    return out
