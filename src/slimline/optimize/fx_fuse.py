"""Conv+BN+activation fusion for the PyTorch runtimes, on any model ``torch.fx`` can trace.

The pass works on the traced graph, not on hand-listed module names:

1. Conv/Linear -> BatchNorm: the BatchNorm is folded into the layer (exact, float64, see ``fold_bn``).
2. ``nn.Dropout`` / ``nn.Identity`` calls are dropped (inference only).
3. Conv2d -> [+ residual add] -> activation: replaced by one oneDNN call,
   ``torch.ops.mkldnn._convolution_pointwise`` (the kernels torch.compile's CPU backend uses for the
   same fusion), so the activation and the residual add happen in the convolution's output loop
   instead of extra passes over memory. Activations: ReLU, ReLU6/Hardtanh, SiLU, Sigmoid, Tanh,
   Hardswish, LeakyReLU, GELU (module, functional and method forms). Residual adds need the shapes of
   both operands, so they are fused only when an example input shape is given.
4. Every convolution left (and every fused one) keeps its weight prepacked in oneDNN's blocked layout
   (``_PackedConv``), instead of eager PyTorch's reorder on each call (``benchmarks/resnet18_peers/run.sh
   layout`` measures fused + channels_last ResNet-18 against the machine's GEMM peak).

The fused modules fall back to the unfused computation when oneDNN cannot run it (no mkldnn build,
non-float32 or non-CPU tensors, autograd), so the result is always correct. The returned GraphModule
cannot be saved as a slimline artifact: the runtimes apply this pass at load time when an artifact's
``runtime_config`` says ``{"torch": {"fuse": true}}``.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from slimline.errors import ModelError
from slimline.optimize.fold_bn import BATCHNORMS, _compatible, fold_pair

# activation -> (oneDNN attr, scalars, algorithm, reference function)
_Act = tuple[str, list[float], str, Callable[[torch.Tensor], torch.Tensor]]


def _module_act(m: nn.Module) -> _Act | None:
    if isinstance(m, nn.ReLU):
        return ("relu", [], "", F.relu)
    if isinstance(m, nn.ReLU6):
        return ("hardtanh", [0.0, 6.0], "", F.relu6)
    if isinstance(m, nn.Hardtanh):
        lo, hi = float(m.min_val), float(m.max_val)
        return ("hardtanh", [lo, hi], "", lambda t: F.hardtanh(t, lo, hi))
    if isinstance(m, nn.SiLU):
        return ("swish", [], "", F.silu)
    if isinstance(m, nn.Sigmoid):
        return ("sigmoid", [], "", torch.sigmoid)
    if isinstance(m, nn.Tanh):
        return ("tanh", [], "", torch.tanh)
    if isinstance(m, nn.Hardswish):
        return ("hardswish", [], "", F.hardswish)
    if isinstance(m, nn.LeakyReLU):
        s = float(m.negative_slope)
        return ("leaky_relu", [s], "", lambda t: F.leaky_relu(t, s))
    if isinstance(m, nn.GELU):
        algo = m.approximate
        return ("gelu", [], algo, lambda t: F.gelu(t, approximate=algo))
    return None


def _function_act(node: fx.Node) -> _Act | None:
    """Functional / method activations whose only tensor argument is the first one."""
    t = node.target
    kw = dict(node.kwargs)
    extra = list(node.args[1:])
    if t in (F.relu, torch.relu, torch.relu_) or (node.op == "call_method" and t in ("relu", "relu_")):
        return ("relu", [], "", F.relu) if all(isinstance(a, bool) for a in extra) else None
    if t is F.relu6:
        return ("hardtanh", [0.0, 6.0], "", F.relu6)
    if t in (F.silu,) or (node.op == "call_method" and t == "silu"):
        return ("swish", [], "", F.silu)
    if t in (torch.sigmoid, F.sigmoid) or (node.op == "call_method" and t == "sigmoid"):
        return ("sigmoid", [], "", torch.sigmoid)
    if t in (torch.tanh, F.tanh) or (node.op == "call_method" and t == "tanh"):
        return ("tanh", [], "", torch.tanh)
    if t is F.hardswish:
        return ("hardswish", [], "", F.hardswish)
    if t is F.hardtanh:
        lo = float(cast(float, extra[0] if extra else kw.get("min_val", -1.0)))
        hi = float(cast(float, extra[1] if len(extra) > 1 else kw.get("max_val", 1.0)))
        return ("hardtanh", [lo, hi], "", lambda x: F.hardtanh(x, lo, hi))
    return None


def _mkldnn_ok() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _use_mkldnn(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and conv.weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
    )


def _conv_args(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups  # type: ignore[arg-type]


class _PackedConv(nn.Module):
    """A convolution whose weight is kept reordered into oneDNN's blocked layout.

    Plain eager convolutions reorder the weight on every call; here it is done once per weight
    version and input layout (``torch.ops.mkldnn._reorder_convolution_weight``, what torch.compile's
    CPU backend does when it freezes weights) and reused for any batch size. The packed copy is a
    cache: it is not saved, copied or pickled, and it is rebuilt when the weight changes in place.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self._args = _conv_args(conv)
        self._packed: tuple[tuple[Any, ...], torch.Tensor] | None = None

    def _weight(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        version = -1 if w.is_inference() else w._version  # inference tensors keep no version counter
        key = (w.data_ptr(), version, tuple(x.shape[1:]), x.is_contiguous(memory_format=torch.channels_last))
        if self._packed is None or self._packed[0] != key:
            try:
                packed = torch.ops.mkldnn._reorder_convolution_weight(w.detach(), *self._args, list(x.shape))
            except (RuntimeError, AttributeError):  # an older or mkldnn-less build: use the plain weight
                packed = w
            self._packed = (key, packed)
        return self._packed[1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"] = None  # oneDNN's opaque tensors cannot be copied or pickled
        return state


class ConvAct2d(_PackedConv):
    """``act(conv(x))`` in one oneDNN convolution with a fused post-op (``act`` None: the plain convolution)."""

    attr: str
    _ref: Callable[[torch.Tensor], torch.Tensor] | None

    def __init__(self, conv: nn.Conv2d, act: _Act | None) -> None:
        super().__init__(conv)
        self.attr, self.scalars, self.algorithm, self._ref = act if act else ("none", [], "", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if _use_mkldnn(x, c):
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._weight(x), c.bias, *self._args, self.attr, self.scalars, self.algorithm
            )
        y = c(x)
        return self._ref(y) if self._ref is not None else y

    def extra_repr(self) -> str:
        return f"post_op={self.attr}{self.scalars or ''}"


class ConvAddAct2d(_PackedConv):
    """``act(conv(x) + other)`` (``act`` optional) in one oneDNN convolution with sum and eltwise post-ops."""

    attr: str | None
    _ref: Callable[[torch.Tensor], torch.Tensor] | None

    def __init__(self, conv: nn.Conv2d, act: _Act | None) -> None:
        super().__init__(conv)
        self.attr, self.scalars, self.algorithm, self._ref = act if act else (None, [], "", None)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if _use_mkldnn(x, c) and other.dtype == torch.float32 and other.device.type == "cpu":
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, self._weight(x), c.bias, *self._args, "add", None, self.attr, self.scalars, self.algorithm
            )
        y = c(x) + other
        return self._ref(y) if self._ref is not None else y

    def extra_repr(self) -> str:
        return f"post_ops=add{'+' + self.attr if self.attr else ''}"


@dataclass
class FuseReport:
    nodes_before: int = 0
    nodes_after: int = 0
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    fused: list[dict[str, Any]] = field(default_factory=list)  # {"pattern": ..., "nodes": [...]}
    oneDNN: bool = False  # noqa: N815 - the library's name
    max_abs_diff: float | None = None

    def counts(self) -> dict[str, int]:
        return dict(Counter(f["pattern"] for f in self.fused))

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            "fused_counts": self.counts(),
            "fused": self.fused,
            "oneDNN_post_ops": self.oneDNN,
            "max_abs_diff": self.max_abs_diff,
        }


def _op_name(node: fx.Node, mods: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(mods[str(node.target)]).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target) if node.op == "call_method" else node.op


def graph_ops(gm: fx.GraphModule) -> dict[str, int]:
    """Counts of the graph's computing nodes (modules by class, functions and methods by name)."""
    mods = dict(gm.named_modules())
    c = Counter(_op_name(n, mods) for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method"))
    return dict(sorted(c.items()))


def _compute_nodes(gm: fx.GraphModule) -> int:
    return sum(1 for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method"))


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - torch.fx raises many kinds
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {msg}. Conv+BN+activation fusion needs a traceable "
            "forward (no data-dependent Python control flow); fold BatchNorm only (fold_bn) or set fuse: false"
        ) from e


def _new_name(gm: fx.GraphModule, base: str) -> str:
    name = base.replace(".", "_")
    i = 0
    existing = dict(gm.named_modules())
    while (name if i == 0 else f"{name}_{i}") in existing:
        i += 1
    return name if i == 0 else f"{name}_{i}"


def _fold_bn(gm: fx.GraphModule, report: FuseReport) -> None:
    mods = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods.get(node.target), BATCHNORMS):
            continue
        src = node.args[0] if node.args else None
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        layer, bn = mods.get(src.target), mods[node.target]
        if layer is None or _compatible(layer, bn) is not None or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        fold_pair(layer, bn)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        report.fused.append(
            {"pattern": f"{type(layer).__name__}+{type(bn).__name__}", "nodes": [src.target, node.target]}
        )


def _drop_noops(gm: fx.GraphModule) -> None:
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(mods.get(node.target), nn.Dropout | nn.Identity) and node.args:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def _act_of(node: fx.Node, mods: dict[str, nn.Module]) -> _Act | None:
    if node.op == "call_module":
        return _module_act(mods[str(node.target)])
    if node.op in ("call_function", "call_method"):
        return _function_act(node)
    return None


def _single_conv(node: Any, mods: dict[str, nn.Module], calls: Counter[Any]) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and type(mods.get(str(node.target))) is nn.Conv2d
        and mods[str(node.target)].padding_mode == "zeros"
        and not isinstance(mods[str(node.target)].padding, str)
        and len(node.users) == 1
        and calls[node.target] == 1
        and len(node.args) == 1
        and not node.kwargs
    )


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _fuse_add(gm: fx.GraphModule, report: FuseReport) -> None:
    """conv(x) + other [-> act]  ->  ConvAddAct2d(x, other)."""
    mods = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for add in list(gm.graph.nodes):
        if add.op != "call_function" or add.target not in (operator.add, torch.add, operator.iadd) or add.kwargs:
            continue
        if len(add.args) != 2:
            continue
        for conv_node, other in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
            if not _single_conv(conv_node, mods, calls) or not isinstance(other, fx.Node) or other is conv_node:
                continue
            shape_c, shape_o = _shape(conv_node), _shape(other)
            if shape_c is None or shape_c != shape_o:
                continue
            act_node = next(iter(add.users)) if len(add.users) == 1 else None
            act = _act_of(act_node, mods) if act_node is not None else None
            if act is not None and act[0] not in ("relu", "hardtanh", "swish", "sigmoid", "tanh", "hardswish"):
                act = None
            last = act_node if act is not None and act_node is not None else add
            name = _new_name(gm, f"{conv_node.target}_add" + (f"_{act[0]}" if act else ""))
            gm.add_submodule(name, ConvAddAct2d(mods[conv_node.target], act))
            with gm.graph.inserting_before(last):
                new = gm.graph.call_module(name, (conv_node.args[0], other))
            new.meta = dict(last.meta)
            last.replace_all_uses_with(new)
            if act is not None and act_node is not None:
                gm.graph.erase_node(act_node)
            gm.graph.erase_node(add)
            gm.graph.erase_node(conv_node)
            pattern = "Conv2d+add" + (f"+{act[0]}" if act else "")
            fused_nodes = [str(conv_node.target), add.name] + ([act_node.name] if act and act_node is not None else [])
            report.fused.append({"pattern": pattern, "nodes": fused_nodes})
            break


def _fuse_act(gm: fx.GraphModule, report: FuseReport) -> None:
    """conv(x) -> act  ->  ConvAct2d(x); a convolution with no activation after it -> ConvAct2d(x) with
    no post-op (prepacked weights only)."""
    mods = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for conv_node in list(gm.graph.nodes):
        if not _single_conv(conv_node, mods, calls):
            continue
        user = next(iter(conv_node.users))
        act = _act_of(user, mods) if user.args and user.args[0] is conv_node else None
        last = user if act is not None else conv_node
        name = _new_name(gm, f"{conv_node.target}_{act[0] if act else 'packed'}")
        gm.add_submodule(name, ConvAct2d(mods[conv_node.target], act))
        with gm.graph.inserting_before(last):
            new = gm.graph.call_module(name, (conv_node.args[0],))
        new.meta = dict(last.meta)
        last.replace_all_uses_with(new)
        if act is not None:
            gm.graph.erase_node(user)
        gm.graph.erase_node(conv_node)
        pattern, nodes = (
            (f"Conv2d+{act[0]}", [str(conv_node.target), user.name])
            if act
            else ("Conv2d(prepacked)", [str(conv_node.target)])
        )
        report.fused.append({"pattern": pattern, "nodes": nodes})


def fx_fuse(
    model: nn.Module,
    input_shape: tuple[int, ...] | list[int] | None = None,
    post_ops: bool = True,
    check: bool = True,
    tolerance: float | None = None,
) -> tuple[fx.GraphModule, FuseReport]:
    """Trace ``model`` (a copy; the original is untouched) and fuse Conv+BN(+add)+activation.

    ``input_shape`` ([C, H, W]) enables residual-add fusion and, with ``check``, a comparison against
    the original on a random batch of 2 (``report.max_abs_diff``; above ``tolerance`` it raises).
    ``post_ops=False`` folds BatchNorm and drops no-ops only.
    """
    gm = trace(copy.deepcopy(model).eval())  # folding changes the copy's layers; ``model`` stays the reference
    report = FuseReport(nodes_before=_compute_nodes(gm), ops_before=graph_ops(gm))
    _fold_bn(gm, report)
    _drop_noops(gm)
    gm.graph.lint()
    gm.recompile()
    example = None
    if input_shape is not None:
        from torch.fx.passes.shape_prop import ShapeProp

        example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    report.oneDNN = post_ops and _mkldnn_ok()
    if report.oneDNN:
        if example is not None:
            _fuse_add(gm, report)
        _fuse_act(gm, report)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    report.nodes_after = _compute_nodes(gm)
    report.ops_after = graph_ops(gm)
    gm.eval()
    if check and example is not None:
        was_training = model.training
        with torch.inference_mode():
            ref = model.eval()(example)
            got = gm(example)
        model.train(was_training)
        report.max_abs_diff = float((got.double() - ref.double()).abs().max())
        limit = tolerance if tolerance is not None else 1e-4 * max(1.0, float(ref.abs().max()))
        if not report.max_abs_diff <= limit:
            raise ModelError(
                f"the fused model differs from the original by {report.max_abs_diff:.3g} (> {limit:.3g}); "
                "run without fusion (fuse: false) and report the model"
            )
    return gm, report


def fuse_for_inference(model: nn.Module, input_shape: tuple[int, ...] | list[int] | None = None) -> nn.Module:
    """What the torch runtimes call when ``fuse`` is on: the fused GraphModule.

    The ``fuse`` step checked the fusion against the original when it set the option, so this
    does not compare again (the fused modules fall back to the exact unfused computation wherever
    oneDNN cannot run them).
    """
    gm, _ = fx_fuse(model, tuple(input_shape) if input_shape else None, check=False)
    gm.slimline_source = getattr(model, "slimline_source", None)  # type: ignore[assignment]
    return gm
