"""Models: a registry of architectures plus loading of users' own models and weights.

``load_model("cifar_resnet56", weights=...)`` builds a zoo model; ``load_model("pkg.mod:factory")``
calls a user's factory; ``load_onnx("model.onnx")`` reads and checks an ONNX file. Weights are
always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimline.errors import ModelError, SlimlineError, first_line
from slimline.models.zoo import MODELS, ModelEntry

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _import_zoo() -> None:
    MODELS.load()


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised zoo model (see ``MODELS.names()``)."""
    _import_zoo()
    entry = MODELS.get(name)
    model = entry.factory(**kwargs)
    model.slimline_source = {"zoo": name, "kwargs": kwargs}  # type: ignore[assignment]
    return model


def model_entry(name: str) -> ModelEntry | None:
    _import_zoo()
    return MODELS.get(name) if name in MODELS else None


# Factories that code named inside an artifact (its model.json) may import: the ones the user named
# (``--model pkg.mod:factory``, a recipe's ``model``), or all of them with ``--trust-code``.
_TRUSTED: ContextVar[tuple[frozenset[str], bool]] = ContextVar(
    "slimline_trusted_factories", default=(frozenset(), False)
)


@contextmanager
def trusted_factories(*factories: str | None, trust_code: bool = False) -> Iterator[None]:
    """Within this block, artifacts naming one of ``factories`` (``pkg.mod:fn``) may import it;
    ``trust_code=True`` allows every factory. Nests: adds to what an outer block allows."""
    names, everything = _TRUSTED.get()
    token = _TRUSTED.set((names | {f for f in factories if f and ":" in f}, everything or trust_code))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def trust_state() -> dict[str, Any]:
    """What is trusted now, as JSON for a worker process: ``{"factories": [...], "trust_code": bool}``."""
    names, everything = _TRUSTED.get()
    return {"factories": sorted(names), "trust_code": everything}


def trust_from(state: dict[str, Any] | None) -> Any:
    """``trusted_factories`` for a ``trust_state()`` received from a parent process."""
    state = state or {}
    return trusted_factories(*(state.get("factories") or ()), trust_code=bool(state.get("trust_code")))


def factories_named(values: Iterable[Any]) -> list[str]:
    """The ``pkg.mod:factory`` strings among ``values`` (names of models the user gave)."""
    return [v for v in values if isinstance(v, str) and ":" in v and not Path(v).exists()]


# slimline's own rebuilders (their kwargs name the float model, which is checked again in turn).
BUILTIN_FACTORIES = frozenset({"slimline.quant.backends.torch_fx:rebuild"})


def check_trusted(spec: str, where: str) -> None:
    """Raise unless factory ``spec``, named inside the artifact file ``where``, may be imported."""
    names, everything = _TRUSTED.get()
    if everything or spec in names or spec in BUILTIN_FACTORIES:
        return
    module = spec.partition(":")[0]
    raise ModelError(
        f"{where} names code to run (module {module!r}, factory {spec!r}); slimline does not import code named "
        f"inside an artifact. Pass --model {spec} if you wrote it, or --trust-code to allow it"
    )


def import_factory(spec: str, what: str = "model", error: type[SlimlineError] = ModelError) -> Callable[..., Any]:
    """The callable ``package.module:function`` names (the working folder is importable). Call it only for a name
    the user gave (or :func:`check_trusted` passed): importing runs the module's code."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise error(f"user {what} must be given as 'package.module:factory', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise error(
            f"cannot import {mod_name!r} for {what} {spec!r}: {e}. "
            "Run from the folder that holds it or add it to PYTHONPATH"
        ) from e
    factory = getattr(module, fn_name, None)
    if not callable(factory):
        raise error(f"{mod_name!r} has no callable {fn_name!r} (for {what} {spec!r})")
    return factory


def _call_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    model = import_factory(spec)(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_from_source(source: dict[str, Any], where: str = "the artifact") -> nn.Module:
    """Rebuild an architecture from the ``slimline_source`` saved with an artifact.

    A zoo name is always built. A ``factory`` is imported only when trusted (see :func:`trusted_factories`):
    a folder of files is data, and must not run code just by being loaded.
    """
    if not isinstance(source, dict):
        raise ModelError(f"{where}: 'source' must be a mapping, not {type(source).__name__}")
    kwargs = dict(source.get("kwargs") or {})
    if "zoo" in source:
        return build_model(str(source["zoo"]), **kwargs)
    if "factory" in source:
        check_trusted(str(source["factory"]), where)
        model = _call_factory(str(source["factory"]), kwargs)
        model.slimline_source = dict(source)  # type: ignore[assignment]
        return model
    raise ModelError(f"cannot rebuild a model from {source!r}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state_dict or a checkpoint dict holding one; strip ``module.`` prefixes."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"weights file {p} does not exist")
    if p.is_file() and p.stat().st_size == 0:
        raise ModelError(f"weights file {p} is empty (0 bytes): it was not written completely; save it again")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        raise ModelError(
            f"cannot read weights from {p}: {first_line(e)}. "
            "slimline loads weights with weights_only=True: save a state_dict (torch.save(model.state_dict(), f))"
        ) from e
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p} holds no state_dict (a dict of tensors, or a checkpoint with one under {_STATE_KEYS})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights strictly; on mismatch name the first few offending keys and shapes."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:5])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:5])})")
        raise ModelError(f"weights in {path} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def load_model(spec: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A zoo name or ``package.module:factory``, optionally with a weights file, in eval mode."""
    if spec.endswith(".onnx"):
        raise ModelError(f"{spec} is an ONNX file: use slimline.models.load_onnx, or give it to a recipe as 'model'")
    _import_zoo()
    if ":" in spec:
        model = _call_factory(spec, kwargs)
        model.slimline_source = {"factory": spec, "kwargs": kwargs}  # type: ignore[assignment]
    elif spec in MODELS:
        model = build_model(spec, **kwargs)
    else:
        raise ModelError(
            f"unknown model {spec!r}: give a zoo name ({', '.join(MODELS.names())}), "
            "'package.module:factory', or a .onnx file"
        )
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_onnx(path: str | Path) -> Any:
    """Read an ONNX file and run the ONNX checker on it; errors say what is wrong."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise ModelError(f"ONNX file {p} does not exist")
    try:
        proto = onnx.load(str(p))
        onnx.checker.check_model(str(p))
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, ValidationError, ...
        raise ModelError(f"{p} is not a valid ONNX model: {first_line(e)}") from e
    return proto


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    example_input: torch.Tensor | tuple[Any, ...] | None = None,
) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2) on a batch of 1 of ``input_shape``, or on
    ``example_input`` (a tensor, or a tuple of positional inputs, e.g. integer token ids) as given.

    ``torch.utils.flop_counter`` counts the matrix products; LSTM/GRU/RNN layers (single fused ops it may
    count as 0) and ``nn.MultiheadAttention`` (whose fast path and fused attention it may not see) are
    counted from their weights and input shapes instead, replacing what the counter saw inside them.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from slimline.bench.macs import attention_macs, rnn_macs

    if example_input is None:
        if input_shape is None:
            raise ModelError("count_macs needs an input_shape or an example_input")
        example_input = torch.zeros(1, *input_shape)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    fc = FlopCounterMode(display=False)
    extra = 0
    seen: dict[nn.Module, int] = {}

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen[module] = fc.get_total_flops()

    def after(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        nonlocal extra
        counted = (fc.get_total_flops() - seen.pop(module, 0)) // 2
        if isinstance(module, nn.RNNBase):
            expected = rnn_macs(module, args)
        else:
            expected = attention_macs(module, args, kwargs)  # type: ignore[arg-type]
        extra += max(expected - counted, 0)

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            handles.append(m.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(m.register_forward_hook(after, with_kwargs=True))
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder layer would hide its attention module
    try:
        with torch.no_grad(), fc:
            model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(fc.get_total_flops() // 2 + extra)


__all__ = [
    "MODELS",
    "ModelEntry",
    "build_model",
    "build_from_source",
    "count_macs",
    "count_params",
    "import_factory",
    "load_model",
    "load_onnx",
    "load_weights",
    "model_entry",
    "read_state_dict",
    "trust_state",
    "trusted_factories",
]
