"""Signatures: the named inputs and outputs of a model, with dtypes and shapes whose dynamic axes have names.

Every artifact records one (``meta["signature"]``); runtimes run ``Mapping[str, ndarray] -> dict[str, ndarray]``
over it; export declares its dynamic axes from it; bench makes inputs from it. A dimension is an int (fixed)
or a name (dynamic: ``batch``, ``sequence``, ``height``, ``width``...). Shapes include the batch axis.

    sig = Signature.from_onnx("detector.onnx")
    shapes = sig.resolve({"images": [1, 3, 320, 320]}, batch=4)    # every dynamic dim made concrete
    feeds = sig.example_feeds(shapes, seed=0)                        # random float / small int / zero state
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import SlimlineError

Dim = int | str
BATCH = "batch"
# defaults for dynamic dims by name when nothing else says (the batch comes from the caller)
DIM_DEFAULTS: dict[str, int] = {"sequence": 128, "seq": 128, "time": 100, "frames": 100}

_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dtype (numpy name) and shape (ints, names for dynamic axes)."""

    name: str
    dtype: str = "float32"
    shape: tuple[Dim, ...] = ()

    @property
    def dynamic(self) -> dict[int, str]:
        """Axis index -> name of every dynamic axis."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d.get("dtype", "float32")), tuple(d.get("shape", ())))

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ (de)serialising

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ())),
            tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ())),
        )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise SlimlineError(f"the model has no input {name!r}; its inputs: {', '.join(self.input_names)}")

    def describe(self) -> str:
        return (
            "inputs: "
            + ", ".join(t.describe() for t in self.inputs)
            + "; outputs: "
            + ", ".join(t.describe() for t in self.outputs)
        )

    # ------------------------------------------------------------------ from models

    @classmethod
    def classifier(cls, input_shape: Sequence[int], num_classes: int | None = None) -> Signature:
        """The image-classifier signature: ``input`` float32 [batch, C, H, W] -> ``output`` [batch, classes]."""
        out: tuple[Dim, ...] = (BATCH, int(num_classes)) if num_classes else (BATCH, "classes")
        return cls(
            (TensorSpec("input", "float32", (BATCH, *(int(s) for s in input_shape))),),
            (TensorSpec("output", "float32", out),),
        )

    @classmethod
    def from_onnx(cls, model: Any) -> Signature:
        """From an ONNX ModelProto or file path (initializers listed as graph inputs are left out)."""
        import onnx

        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
        inits = {i.name for i in proto.graph.initializer}

        def spec(v: Any) -> TensorSpec:
            tt = v.type.tensor_type
            dims: list[Dim] = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                else:
                    dims.append(_clean_dim_name(d.dim_param) if d.dim_param else (BATCH if i == 0 else f"dim{i}"))
            return TensorSpec(v.name, _ONNX_DTYPES.get(tt.elem_type, "float32"), tuple(dims))

        return cls(
            tuple(spec(v) for v in proto.graph.input if v.name not in inits), tuple(spec(v) for v in proto.graph.output)
        )

    @classmethod
    def from_openvino(cls, model: Any) -> Signature:
        """From an ``openvino.Model`` (or a compiled one): names, element types and partial shapes."""

        def spec(port: Any, i: int, kind: str) -> TensorSpec:
            names = port.get_names()
            name = sorted(names)[0] if names else f"{kind}{i}"
            dims: list[Dim] = []
            ps = port.get_partial_shape()
            for j, d in enumerate(ps if ps.rank.is_static else []):
                dims.append(int(d.get_length()) if d.is_static else (BATCH if j == 0 else f"dim{j}"))
            return TensorSpec(name, _ov_dtype(port.get_element_type()), tuple(dims))

        return cls(
            tuple(spec(p, i, "input") for i, p in enumerate(model.inputs)),
            tuple(spec(p, i, "output") for i, p in enumerate(model.outputs)),
        )

    @classmethod
    def from_feeds(cls, feeds: Mapping[str, Any], dynamic: Mapping[str, Mapping[int, str]] | None = None) -> Signature:
        """From example inputs (numpy arrays or CPU tensors, in the model's argument order): their dtypes, and
        their shapes with the axes ``dynamic`` names (default: axis 0, ``batch``) left dynamic."""
        inputs = []
        for name, value in feeds.items():
            arr = np.asarray(value)
            axes = dict(dynamic[name]) if dynamic and name in dynamic else ({0: BATCH} if arr.ndim else {})
            shape = tuple(axes.get(i, int(s)) for i, s in enumerate(arr.shape))
            inputs.append(TensorSpec(name, str(arr.dtype), shape))
        return cls(tuple(inputs))

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Tensor name -> {axis: dim name} for every input and output with a dynamic axis (``torch.onnx.export``'s
        ``dynamic_axes``)."""
        return {t.name: t.dynamic for t in (*self.inputs, *self.outputs) if t.dynamic}

    def named_dims(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
        """The value each named dim takes in the concrete ``shapes`` (``{"batch": 1, "sequence": 64}``)."""
        out: dict[str, int] = {}
        for t in self.inputs:
            if t.name in shapes and len(shapes[t.name]) == len(t.shape):
                for d, v in zip(t.shape, shapes[t.name], strict=True):
                    if isinstance(d, str):
                        out.setdefault(d, int(v))
        return out

    def with_dim_names(self, names_from: Signature) -> Signature:
        """This signature with each dynamic dim renamed after ``names_from``'s dim at the same axis of the tensor
        of the same name (or position), when that one is dynamic too: OpenVINO IR keeps no dim names."""

        def rename(mine: tuple[TensorSpec, ...], theirs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
            by_name = {t.name: t for t in theirs}
            out = []
            for i, t in enumerate(mine):
                other = by_name.get(t.name) or (theirs[i] if i < len(theirs) else None)
                if other is None or len(other.shape) != len(t.shape):
                    out.append(t)
                    continue
                shape = tuple(
                    o if isinstance(d, str) and isinstance(o, str) else d
                    for d, o in zip(t.shape, other.shape, strict=True)
                )
                out.append(TensorSpec(t.name, t.dtype, shape))
            return tuple(out)

        return Signature(rename(self.inputs, names_from.inputs), rename(self.outputs, names_from.outputs))

    # ------------------------------------------------------------------ concrete shapes and inputs

    def resolve(
        self, given: Mapping[str, Sequence[int]] | None = None, batch: int = 1, dims: Mapping[str, int] | None = None
    ) -> dict[str, tuple[int, ...]]:
        """A concrete shape for every input: ``given`` (per input name, full shapes) first, then named dims
        (``dims``, then ones fixed by ``given`` elsewhere, then :data:`DIM_DEFAULTS`), ``batch`` for the batch axis.

        A dynamic dim nothing names is an error saying which ``--input-shape`` to give."""
        given = dict(given or {})
        for name in given:
            self.input(name)  # unknown names are an error
        known: dict[str, int] = {BATCH: int(batch), **DIM_DEFAULTS, **(dims or {})}
        for t in self.inputs:  # dims fixed by a given shape fix the same names elsewhere
            if t.name in given and len(given[t.name]) == len(t.shape):
                for d, v in zip(t.shape, given[t.name], strict=True):
                    if isinstance(d, str):
                        known.setdefault(d, int(v))
        out: dict[str, tuple[int, ...]] = {}
        for t in self.inputs:
            if t.name in given:
                shape = tuple(int(v) for v in given[t.name])
                fits = len(shape) == len(t.shape) and all(
                    not isinstance(d, int) or d == v for d, v in zip(t.shape, shape, strict=True)
                )
                if not fits:
                    raise SlimlineError(
                        f"input {t.name!r} is {t.dtype}[{'x'.join(map(str, t.shape))}]; the shape given, "
                        f"{'x'.join(map(str, shape))}, does not fit it"
                    )
                out[t.name] = shape
                continue
            shape_l: list[int] = []
            for d in t.shape:
                if isinstance(d, int):
                    shape_l.append(d)
                elif d in known:
                    shape_l.append(int(known[d]))
                else:
                    example = "x".join(str(x) if isinstance(x, int) else ("1" if x == BATCH else "N") for x in t.shape)
                    raise SlimlineError(
                        f"input {t.name!r} has a dynamic dimension {d!r} that nothing fixes; "
                        f"give it with --input-shape {t.name}={example}"
                    )
            out[t.name] = tuple(shape_l)
        return out

    def example_feeds(
        self, shapes: Mapping[str, Sequence[int]], seed: int = 0, int_high: int = 100
    ) -> dict[str, np.ndarray]:
        """Inputs of the given shapes: standard normal floats, integers in [0, ``int_high``) (token ids,
        indices), ``False`` booleans; inputs whose name says state (``state``, ``h0``, ``c0``, ``hidden``,
        ``cache``, ``past``) are zeros."""
        rng = np.random.default_rng(seed)
        feeds: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = tuple(int(s) for s in shapes[t.name])
            dt = np.dtype(t.dtype) if t.dtype != "bfloat16" else np.dtype("float32")
            if is_state_name(t.name):
                feeds[t.name] = np.zeros(shape, dt)
            elif dt.kind == "f":
                feeds[t.name] = rng.standard_normal(shape).astype(dt)
            elif dt.kind in "iu":
                feeds[t.name] = rng.integers(0, int_high, shape).astype(dt)
            elif dt.kind == "b":
                feeds[t.name] = np.ones(shape, dtype=bool)
            else:
                feeds[t.name] = np.zeros(shape, dt)
        return feeds


def is_state_name(name: str) -> bool:
    return bool(re.search(r"(state|hidden|cache|past|^h0$|^c0$|^h$|^c$)", name.lower()))


def parse_input_shapes(items: Iterable[str]) -> dict[str, list[int]]:
    """``["images=1x3x320x320", "ids=1x64"]`` -> ``{"images": [1, 3, 320, 320], "ids": [1, 64]}``.

    A bare ``3,32,32`` / ``3x32x32`` (no name) is returned under the key ``""``: one sample's shape for a
    single-input model, without the batch axis (the older form of ``--input-shape``)."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, eq, dims = item.rpartition("=") if "=" in item else ("", "", item)
        try:
            shape = [int(x) for x in re.split(r"[x,×]", dims.strip()) if x.strip()]
        except ValueError:
            shape = []
        if not shape or any(s < 1 for s in shape):
            raise SlimlineError(
                f"--input-shape {item!r}: write NAME=1x3x224x224 (per input, batch included), or C,H,W for a "
                "single-input model"
            )
        out[name.strip() if eq else ""] = shape
    return out


def signature_from_options(
    shapes: Mapping[str, Sequence[int]], dtypes: Iterable[str] = (), dynamic: Iterable[str] = ()
) -> Signature:
    """The signature the export options describe: ``--input-shape NAME=1x128`` (inputs in that order),
    ``--input-dtype NAME=int64`` (default float32) and ``--dynamic NAME=0:batch,1:sequence`` (default: axis 0,
    ``batch``)."""
    kinds = {name: dt for name, dt in (_named_option(d, "--input-dtype", "ids=int64") for d in dtypes)}
    axes: dict[str, dict[int, str]] = {}
    for item in dynamic:
        name, text = _named_option(item, "--dynamic", "ids=0:batch,1:sequence")
        try:
            axes[name] = {int(a): _clean_dim_name(n) for a, _, n in (p.partition(":") for p in text.split(","))}
        except ValueError:
            raise SlimlineError(f"--dynamic {item!r}: write NAME=AXIS:DIM,..., e.g. ids=0:batch,1:sequence") from None
    for name in (*kinds, *axes):
        if name not in shapes:
            raise SlimlineError(f"input {name!r} has no --input-shape {name}=...; give every input's shape")
    inputs = []
    for name, dims in shapes.items():
        try:
            dtype = str(np.dtype(kinds.get(name, "float32")))
        except TypeError:
            raise SlimlineError(f"--input-dtype {name}={kinds[name]}: not a dtype (float32, int64, bool...)") from None
        dyn = axes.get(name, {0: BATCH})
        if any(a < 0 or a >= len(dims) for a in dyn):
            raise SlimlineError(f"--dynamic {name}: axes must lie in 0..{len(dims) - 1}, not {sorted(dyn)}")
        inputs.append(TensorSpec(name, dtype, tuple(dyn.get(i, int(v)) for i, v in enumerate(dims))))
    return Signature(tuple(inputs))


def _named_option(item: str, option: str, example: str) -> tuple[str, str]:
    name, eq, value = item.partition("=")
    if not eq or not name.strip() or not value.strip():
        raise SlimlineError(f"{option} {item!r}: write NAME=VALUE, e.g. {option} {example}")
    return name.strip(), value.strip()


def artifact_signature(artifact: Any) -> Signature:
    """The signature an artifact records, else the one read from its model file (ONNX, OpenVINO), else the
    classifier signature from ``meta.input_shape``."""
    sig = artifact.meta.get("signature")
    if isinstance(sig, dict) and sig.get("inputs"):
        return Signature.from_dict(sig)
    if artifact.kind == "onnx":
        return Signature.from_onnx(Path(artifact.model_file))
    if artifact.kind == "openvino":
        from slimline.runtimes.openvino import import_openvino

        return Signature.from_openvino(import_openvino().Core().read_model(str(artifact.model_file)))
    shape = artifact.meta.get("input_shape")
    if shape:
        return Signature.classifier(shape, artifact.meta.get("num_classes"))
    raise SlimlineError(f"{artifact.path} records no signature and no input shape; re-create it with slimline")


def _clean_dim_name(name: str) -> str:
    n = name.strip()
    low = n.lower()
    if low in ("n", "b", "bs", "batch", "batch_size", "batchsize") or low.startswith("batch"):
        return BATCH
    if low in ("seq", "seq_len", "sequence", "sequence_length", "length", "tokens") or "sequence" in low:
        return "sequence"
    if low in ("h", "height"):
        return "height"
    if low in ("w", "width"):
        return "width"
    return re.sub(r"\W+", "_", n) or "dim"


def _ov_dtype(et: Any) -> str:
    name = str(et.get_type_name() if hasattr(et, "get_type_name") else et).lower()
    return {
        "f32": "float32",
        "f16": "float16",
        "bf16": "bfloat16",
        "f64": "float64",
        "i64": "int64",
        "i32": "int32",
        "i8": "int8",
        "u8": "uint8",
        "boolean": "bool",
    }.get(name, "float32")
