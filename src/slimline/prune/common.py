"""What every pruning method shares: finding layers by name, sizes, and naming the layer that failed."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from slimline.errors import ModelError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES) -> list[str]:
    """Names of the Conv2d/Linear layers of ``model`` in definition order."""
    return [n for n, m in model.named_modules() if n and isinstance(m, types)]


def match_names(names: Iterable[str], patterns: Iterable[str] | None, what: str = "layer") -> list[str]:
    """The names that match any of ``patterns`` (exact names or fnmatch globs such as ``layer3.*``).

    A pattern that matches nothing is an error that lists some valid names, so a typo never
    silently protects or excludes nothing.
    """
    names = list(names)
    out: list[str] = []
    for pat in patterns or []:
        hits = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat) or n.startswith(pat + ".")]
        if not hits:
            sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ModelError(f"no {what} matches {pat!r}; valid names are e.g. {sample}")
        out.extend(h for h in hits if h not in out)
    return out


def model_size(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    from slimline.models import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, tuple(input_shape))}


def reduction(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Fraction removed of each size figure (0.5 = half of it is gone)."""
    return {k: 1.0 - after[k] / before[k] if before[k] else 0.0 for k in before if k in after}


def example_input(input_shape: tuple[int, ...] | list[int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *input_shape, generator=g)


def failing_layer(model: nn.Module, exc: BaseException) -> str | None:
    """The innermost named submodule of ``model`` on the traceback of ``exc`` (None: the model itself).

    A frame belongs to a module when its ``self`` (its ``forward``, or the ``__call__`` that runs its
    hooks) or a hook's ``module`` argument is that module, so a failure inside a tracing hook is
    pinned on the layer being traced.
    """
    names = {id(m): n for n, m in model.named_modules() if n}
    found: str | None = None
    tb = exc.__traceback__
    while tb is not None:
        loc = tb.tb_frame.f_locals
        for key in ("self", "module"):
            obj = loc.get(key)
            if isinstance(obj, nn.Module) and id(obj) in names:
                found = names[id(obj)]
                break
        tb = tb.tb_next
    return found


def describe_layer(model: nn.Module, name: str | None) -> str:
    if not name:
        return "the model's own forward()"
    try:
        return f"layer {name!r} ({type(model.get_submodule(name)).__name__})"
    except AttributeError:
        return f"layer {name!r}"


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Run a model in eval mode inside the block, then restore its training flag."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def replace_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` and return the module that was there."""
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old
