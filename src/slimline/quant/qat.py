"""Quantization-aware training: fine-tune with fake quantization in the graph, export int8 QDQ ONNX.

:func:`prepare_qat` folds BatchNorm into the convolutions (as inference does), then wraps every
Conv/Linear so that its input, its weight and (by default) its output pass through fake
quantization. Gradients pass through the rounding unchanged (the straight-through estimator of
PyTorch's fake-quant kernels); activation ranges start from calibration, weight steps from the
least-squared-error clip of each channel, and with ``learn_ranges`` both are trained too (LSQ+:
learnable activation scale and zero-point, learnable per-channel weight step). The wrapped model is an
ordinary ``nn.Module``: :func:`slimline.train.fit` trains it, no second loop.

:func:`export_qat_onnx` writes the model as QDQ ONNX: QuantizeLinear/DequantizeLinear pairs on
activations, int8 weight initializers feeding DequantizeLinear, which ONNX Runtime fuses into
QLinearConv / QLinearMatMul kernels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimline.quant.fakequant import QUANTIZABLE, _batches, _replace, fold_batchnorm
from slimline.quant.numerics import QScheme, make_observer

_EPS = 1e-8


@dataclass
class QATConfig:
    per_channel: bool = True
    activation_symmetric: bool = False  # False: uint8 with zero-point (ONNX Runtime's fast U8S8 path)
    reduce_range: bool | None = None  # 7-bit weights; None: on x86 without VNNI (see backends.ort)
    calibration: str = "minmax"  # how the activation ranges start
    learn_ranges: bool = True  # LSQ+: learn activation ranges and per-channel weight steps
    weight_init: str = "mse"  # weight steps start at min-max, or at the least-squared-error clip ("mse")
    quantize_outputs: bool = True  # also quantize Conv/Linear outputs (lets ONNX Runtime fuse QLinearConv)
    exclude: list[str] = field(default_factory=list)  # layers left in float

    def weight_limits(self) -> tuple[int, int]:
        from slimline.quant.backends.ort import resolve_reduce_range

        reduce, _ = resolve_reduce_range(self.reduce_range)
        return (-63, 63) if reduce else (-127, 127)


class ActQuant(nn.Module):
    """Per-tensor activation fake quantization; learnable scale and zero-point in training (LSQ+)."""

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int, learn: bool) -> None:
        super().__init__()
        self.qmin, self.qmax, self.learn = qmin, qmax, learn
        self.scale = nn.Parameter(torch.tensor([float(scale)]), requires_grad=learn)
        self.zero_point = nn.Parameter(torch.tensor([float(zero_point)]), requires_grad=learn)

    def qparams(self) -> tuple[float, int]:
        scale = max(float(self.scale.detach().abs()), _EPS)
        zp = int(np.clip(round(float(self.zero_point.detach())), self.qmin, self.qmax))
        return scale, zp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.learn:
            with torch.no_grad():
                self.scale.abs_().clamp_(min=_EPS)
                self.zero_point.clamp_(self.qmin, self.qmax)
            grad_factor = 1.0 / float(np.sqrt(x[0].numel() * self.qmax))
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, self.scale, self.zero_point, self.qmin, self.qmax, grad_factor
            )
        scale, zp = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, self.qmin, self.qmax)


class QATLayer(nn.Module):
    """A Conv/Linear with fake-quantized input, weight (symmetric, per-channel or per-tensor) and output."""

    w_zero: torch.Tensor  # a buffer: the weights' zero point (0), shaped like w_scale

    @property
    def layer_weight(self) -> torch.Tensor:
        """The wrapped Conv/Linear's weight."""
        return cast(torch.Tensor, self.layer.weight)

    def __init__(
        self,
        layer: nn.Module,
        act_in: ActQuant | None,
        act_out: ActQuant | None,
        per_channel: bool,
        weight_limits: tuple[int, int],
        relu: bool = False,
        learn_weight_scale: bool = False,
        weight_init: str = "minmax",
    ) -> None:
        super().__init__()
        self.layer, self.act_in, self.act_out = layer, act_in, act_out
        self.per_channel = per_channel
        self.relu = relu  # the ReLU that followed this layer, moved inside so the output is quantized after it
        self.wmin, self.wmax = weight_limits
        self.exporting = False
        self._export_scale = torch.ones(1)
        # LSQ: a learned step per channel (or tensor), started at min-max or at the least-squared-error clip
        self.learn_weight_scale, self.weight_init = learn_weight_scale, weight_init
        init = self.mse_scale() if weight_init == "mse" else self.minmax_scale()
        self.w_scale = nn.Parameter(init, requires_grad=learn_weight_scale)
        self.register_buffer("w_zero", torch.zeros(len(self.w_scale)), persistent=False)

    def minmax_scale(self) -> torch.Tensor:
        w = self.layer_weight.detach()
        amax = w.abs().reshape(w.shape[0], -1).amax(1) if self.per_channel else w.abs().amax().reshape(1)
        return (amax / self.wmax).clamp(min=_EPS)

    @torch.no_grad()
    def mse_scale(self, grid: int = 100) -> torch.Tensor:
        """Per channel (or tensor), the step among ``grid`` shrinks of min-max with the least squared error."""
        w = self.layer_weight.detach()
        w = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
        base = (w.abs().amax(1) / self.wmax).clamp(min=_EPS)  # C
        alphas = torch.linspace(1.0 / grid, 1.0, grid).reshape(-1, 1, 1)  # A x 1 x 1
        s = alphas * base.reshape(1, -1, 1)  # A x C x 1
        err = ((torch.clamp(torch.round(w / s), self.wmin, self.wmax) * s - w) ** 2).sum(2)  # A x C
        return (alphas.reshape(-1)[err.argmin(0)] * base).clamp(min=_EPS)

    def weight_scale(self) -> torch.Tensor:
        if self.learn_weight_scale or self.weight_init == "mse":
            return self.w_scale.detach().abs().clamp(min=_EPS)
        return self.minmax_scale()

    def quantized_weight(self) -> torch.Tensor:
        w = self.layer_weight
        if self.exporting:
            # scales as constants (so the exporter emits QuantizeLinear on a constant, folded afterwards);
            # the weight's integers already lie in [wmin, wmax] and ONNX takes int8's full range
            scale, lo, hi = self._export_scale, -128, 127
        elif self.training and self.learn_weight_scale:
            with torch.no_grad():
                self.w_scale.abs_().clamp_(min=_EPS)
            grad_factor = 1.0 / float(np.sqrt(w[0].numel() * self.wmax))  # LSQ's step-gradient scale
            if self.per_channel:
                return torch._fake_quantize_learnable_per_channel_affine(
                    w, self.w_scale, self.w_zero, 0, self.wmin, self.wmax, grad_factor
                )
            return torch._fake_quantize_learnable_per_tensor_affine(
                w, self.w_scale, self.w_zero, self.wmin, self.wmax, grad_factor
            )
        else:
            scale, lo, hi = self.weight_scale(), self.wmin, self.wmax
        if self.per_channel:
            zp = torch.zeros(len(scale), dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, lo, hi)
        return torch.fake_quantize_per_tensor_affine(w, float(scale), 0, lo, hi)

    def start_export(self) -> None:
        with torch.no_grad():
            # snap the weight onto its integer grid first (clipping at the learned range), so the export's
            # full-range rounding changes nothing
            scale = self.weight_scale()
            self.exporting = False
            training, self.training = self.training, False
            self.layer_weight.copy_(self.quantized_weight())
            self.training = training
            self._export_scale = scale
        self.exporting = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_in is not None:
            x = self.act_in(x)
        w = self.quantized_weight()
        if isinstance(self.layer, nn.Linear):
            y = F.linear(x, w, self.layer.bias)
        else:
            y = self.layer._conv_forward(x, w, self.layer.bias)  # type: ignore[operator]
        if self.relu:
            y = F.relu(y)
        return self.act_out(y) if self.act_out is not None else y


def _act_scheme(cfg: QATConfig) -> QScheme:
    return QScheme("uint8", symmetric=False) if not cfg.activation_symmetric else QScheme("int8", symmetric=True)


@torch.inference_mode()
def _calibrate_ranges(
    model: nn.Module, names: list[str], data: Any, cfg: QATConfig, batch_size: int, relu_after: dict[str, bool]
) -> dict[str, tuple[Any, Any]]:
    scheme = _act_scheme(cfg)
    obs = {n: (make_observer(cfg.calibration, scheme), make_observer(cfg.calibration, scheme)) for n in names}
    hooks = []
    for n in names:

        def hook(mod: nn.Module, inp: Any, out: Any, n: str = n) -> None:
            obs[n][0].update(inp[0])
            obs[n][1].update(F.relu(out) if relu_after.get(n) else out)

        hooks.append(model.get_submodule(n).register_forward_hook(hook))
    try:
        for x in _batches(data, batch_size):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: (o[0].compute(), o[1].compute()) for n, o in obs.items()}


def _is_relu(gm: nn.Module, node: Any) -> bool:
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu, torch.relu_)
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU)
    return False


def _plan(model: nn.Module, names: list[str], quantize_outputs: bool) -> dict[str, dict[str, Any]]:
    """Where the quantizers go, read from the FX graph of the folded model.

    A layer whose only user is a ReLU takes the ReLU inside and quantizes after it (range [0, max], as
    inference engines fuse Conv+ReLU); a layer fed only by another quantized layer's output needs no
    input quantizer of its own. Without a graph (an untraceable model) every layer gets both.
    """
    plan = {n: {"relu": False, "quant_input": True, "relu_node": None} for n in names}
    if not isinstance(model, torch.fx.GraphModule):
        return plan
    layer_nodes = {node.target: node for node in model.graph.nodes if node.op == "call_module" and node.target in plan}
    for name, node in layer_nodes.items():
        users = list(node.users)
        if len(users) == 1 and _is_relu(model, users[0]):
            plan[name]["relu"] = True
            plan[name]["relu_node"] = users[0]
    if quantize_outputs:
        for name, node in layer_nodes.items():
            src = node.args[0] if node.args else None
            if not isinstance(src, torch.fx.Node):
                continue
            if src.op == "call_module" and src.target in plan and len(src.users) == 1:
                plan[name]["quant_input"] = False
            elif (
                _is_relu(model, src)
                and len(src.users) == 1
                and isinstance(src.args[0], torch.fx.Node)
                and src.args[0].target in plan
                and plan[src.args[0].target]["relu"]
            ):
                plan[name]["quant_input"] = False
    return plan


def _absorb_relus(model: nn.Module, plan: dict[str, dict[str, Any]]) -> None:
    """Remove the graph's ReLUs that the layers now apply themselves."""
    if not isinstance(model, torch.fx.GraphModule):
        return
    changed = False
    for p in plan.values():
        node = p.pop("relu_node", None)
        if node is not None and p["relu"]:
            node.replace_all_uses_with(node.args[0])
            model.graph.erase_node(node)
            changed = True
    if changed:
        model.graph.lint()
        model.recompile()


def prepare_qat(
    model: nn.Module, calibration_data: Any, cfg: QATConfig | None = None, batch_size: int = 64
) -> nn.Module:
    """A BatchNorm-folded copy of ``model`` with fake quantization on every Conv/Linear (except ``exclude``)."""
    cfg = cfg or QATConfig()
    folded, _ = fold_batchnorm(model)
    names = [n for n, m in folded.named_modules() if isinstance(m, QUANTIZABLE) and n and n not in set(cfg.exclude)]
    plan = _plan(folded, names, cfg.quantize_outputs)
    relu_after = {n: p["relu"] for n, p in plan.items()}
    ranges = _calibrate_ranges(folded, names, calibration_data, cfg, batch_size, relu_after)
    scheme = _act_scheme(cfg)
    limits = cfg.weight_limits()
    for n in names:
        (s_in, z_in), (s_out, z_out) = ranges[n]
        act_in = (
            ActQuant(float(s_in), int(z_in), scheme.qmin, scheme.qmax, cfg.learn_ranges)
            if plan[n]["quant_input"]
            else None
        )
        act_out = (
            ActQuant(float(s_out), int(z_out), scheme.qmin, scheme.qmax, cfg.learn_ranges)
            if cfg.quantize_outputs
            else None
        )
        _replace(
            folded,
            n,
            QATLayer(
                folded.get_submodule(n),
                act_in,
                act_out,
                cfg.per_channel,
                limits,
                relu=plan[n]["relu"],
                learn_weight_scale=cfg.learn_ranges,
                weight_init=cfg.weight_init,
            ),
        )
    _absorb_relus(folded, plan)
    folded.slimline_qat = {"layers": names, "config": cfg.__dict__ | {"weight_limits": list(limits)}}  # type: ignore[assignment]
    return folded


def qat_layers(model: nn.Module) -> Iterable[QATLayer]:
    return (m for m in model.modules() if isinstance(m, QATLayer))


def export_qat_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, opset: int | None = None) -> Path:
    """Write the fake-quantized model as QDQ ONNX with int8 weight initializers."""
    from slimline.onnx_export import export_onnx

    model.eval()
    layers = list(qat_layers(model))
    for m in layers:
        m.start_export()
    try:
        path = export_onnx(model, input_shape, path, max(13, opset or 17))  # per-axis QuantizeLinear: opset 13
    finally:
        for m in layers:
            m.exporting = False
    fold_weight_quantizers(path)
    return Path(path)


def fold_weight_quantizers(path: str | Path) -> int:
    """Replace QuantizeLinear nodes on constant weights by their int8 result (stored as an initializer).

    Returns how many were folded. ONNX Runtime then sees DequantizeLinear(int8 weight) -> Conv, the
    pattern it runs as an integer convolution, and the file holds 1-byte weights.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consts: dict[str, np.ndarray] = {n: numpy_helper.to_array(t) for n, t in inits.items()}
    const_nodes = {}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute:
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
                    const_nodes[node.output[0]] = node
    folded, drop = 0, []
    for node in g.node:
        if node.op_type != "QuantizeLinear" or any(i not in consts for i in node.input):
            continue
        x, scale = consts[node.input[0]].astype(np.float64), consts[node.input[1]].astype(np.float64)
        zp = consts[node.input[2]] if len(node.input) > 2 else np.zeros((), np.uint8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zpb = scale.reshape(shape), zp.astype(np.int64).reshape(shape)
        else:
            zpb = zp.astype(np.int64)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(x / scale) + zpb, info.min, info.max).astype(zp.dtype)
        name = f"{node.output[0]}_int"
        g.initializer.append(numpy_helper.from_array(q, name))
        for other in g.node:
            for k, inp in enumerate(other.input):
                if inp == node.output[0]:
                    other.input[k] = name
        drop.append(node)
        folded += 1
    for node in drop:
        g.node.remove(node)
    used = {i for n in g.node for i in n.input}
    for name, init in inits.items():
        if name not in used:
            g.initializer.remove(init)
    for out, node in const_nodes.items():
        if out not in used and node in g.node:
            g.node.remove(node)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return folded
