"""Named arrays: the universal data source for calibrating and comparing any model.

A ``.npz`` file, a ``.npy`` file (a single-input model's samples), or a folder of them, whose arrays are keyed
by model input name; each array's first axis is the samples; an optional ``labels`` array scores the model.

    samples = load_arrays("calib.npz").conform(Signature.from_onnx("model.onnx"))
    calib, held_out = samples.split(0.25, seed=0)
    for feeds in calib.batches(16): ...          # {input name: array of up to 16 samples}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import DataError

LABELS = "labels"
ARRAY_SUFFIXES = (".npz", ".npy")


def is_arrays_path(data: str | Path) -> bool:
    """Whether ``data`` (a ``-d/--data`` value) names an arrays source: a .npz/.npy path, a folder of them, or
    a folder of .wav files (:mod:`slimline.data.audio`)."""
    from slimline.data.audio import is_audio_path

    p = Path(str(data))
    if p.suffix.lower() in ARRAY_SUFFIXES:
        return True
    return p.is_dir() and (any(f.suffix.lower() in ARRAY_SUFFIXES for f in p.iterdir()) or is_audio_path(p))


@dataclass
class NamedSamples:
    """Arrays keyed by model input name (first axis: samples), with optional ``labels``."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""
    # input name -> the model's batch axis when it is not the first (a GRU's h0: [layers, batch, hidden]); the
    # arrays keep the samples first and batches move them there
    batch_axes: dict[str, int] = field(default_factory=dict)
    label_names: tuple[str, ...] = ()  # what each label index means (an audio folder's class folders)

    def __post_init__(self) -> None:
        where = self.source or "the arrays"
        if not self.arrays:
            raise DataError(f"{where} holds no input arrays; save one array per model input name (np.savez)")
        counts = {k: (len(v) if np.ndim(v) else 0) for k, v in self.arrays.items()}
        if self.labels is not None:
            counts[LABELS] = len(self.labels) if np.ndim(self.labels) else 0
        if len(set(counts.values())) != 1:
            what = ", ".join(f"{k}: {n}" for k, n in counts.items())
            raise DataError(
                f"{where}: arrays have different sample counts ({what}); every array's first axis "
                "must be the same samples"
            )
        for k, v in [*self.arrays.items(), *([(LABELS, self.labels)] if self.labels is not None else [])]:
            if np.asarray(v).dtype.kind not in "biuf":
                raise DataError(f"{where}: array {k!r} is not numeric (dtype {np.asarray(v).dtype}); save numbers")
        if not next(iter(counts.values())):
            raise DataError(f"{where} holds no samples (arrays of length 0 or scalars); save at least one sample")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def subset(self, idx: np.ndarray | slice) -> NamedSamples:
        return NamedSamples(
            {k: v[idx] for k, v in self.arrays.items()},
            None if self.labels is None else self.labels[idx],
            self.source,
            self.batch_axes,
            self.label_names,
        )

    def take(self, n: int | None) -> NamedSamples:
        """The first ``n`` samples (all when ``n`` is None or at least the count)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def sample(self, n: int | None, seed: int = 0) -> NamedSamples:
        """``n`` samples drawn without replacement (in their original order), reproducibly."""
        if n is None or n >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False)))

    def split(self, held_out: int | float, seed: int = 0) -> tuple[NamedSamples, NamedSamples]:
        """(calibration, held-out) by a seeded permutation; ``held_out`` is a fraction (< 1) or a count.
        A set of one sample is used for both (nothing is left to hold out)."""
        n = len(self)
        k = int(round(held_out * n)) if isinstance(held_out, float) and held_out < 1 else int(held_out)
        if n < 2:
            return self, self
        k = min(max(k, 1), n - 1)
        perm = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(perm[k:])), self.subset(np.sort(perm[:k]))

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of up to ``batch_size`` samples: ``{input name: contiguous array}``."""
        for i in range(0, len(self), max(1, batch_size)):
            yield {
                k: np.ascontiguousarray(np.moveaxis(v[i : i + batch_size], 0, self.batch_axes.get(k, 0)))
                for k, v in self.arrays.items()
            }

    def fingerprint(self) -> bytes:
        """A digest of names, dtypes and values (for calibration caches)."""
        h = hashlib.sha1()
        for k, v in self.arrays.items():
            h.update(f"{k}|{v.dtype}|{v.shape}|".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        return h.digest()

    def conform(self, signature: Any) -> NamedSamples:
        """Check the arrays against a :class:`slimline.signature.Signature` and cast them to its dtypes.

        A single-input model takes a lone array under any name. Missing inputs and ranks that do not fit are
        one-line errors naming them; arrays for no input are an error too (a typo would otherwise go unseen)."""
        where = self.source or "the arrays"
        arrays = dict(self.arrays)
        names = [t.name for t in signature.inputs]
        if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:
            arrays = {names[0]: next(iter(arrays.values()))}
        missing = [n for n in names if n not in arrays]
        unknown = [n for n in arrays if n not in names]
        if missing or unknown:
            parts = [
                f"no array for input(s) {', '.join(missing)}" if missing else "",
                f"array(s) {', '.join(unknown)} match no input" if unknown else "",
            ]
            raise DataError(
                f"{where}: {'; '.join(p for p in parts if p)}; the model's inputs are "
                f"{', '.join(names)} (save one array per input name, plus optional {LABELS!r})"
            )
        out: dict[str, np.ndarray] = {}
        axes: dict[str, int] = {}
        for t in signature.inputs:
            a = np.asarray(arrays[t.name])
            if t.shape and a.ndim != len(t.shape):
                raise DataError(
                    f"{where}: array {t.name!r} has shape {a.shape} but the model wants "
                    f"{t.describe()} (samples on the first axis, batch included)"
                )
            dt = np.dtype("float32") if t.dtype == "bfloat16" else np.dtype(t.dtype)
            out[t.name] = a.astype(dt, copy=False)
            axis = next((i for i, d in enumerate(t.shape) if d == "batch"), 0)
            if axis:
                if a.shape[axis] != 1:
                    raise DataError(
                        f"{where}: input {t.name!r} ({t.describe()}) takes the batch on axis {axis}; save "
                        f"its samples on the first axis with size 1 at axis {axis}, e.g. "
                        f"{(len(a), *a.shape[1:axis], 1, *a.shape[axis + 1 :])}"
                    )
                axes[t.name] = axis
        return NamedSamples(out, self.labels, self.source, axes, self.label_names)


def load_arrays(path: str | Path, signature: Any = None) -> NamedSamples:
    """Read a ``.npz``, a ``.npy`` (named after its file stem) or a folder of them (read in name order); a folder
    of .wav files is read by :func:`slimline.data.audio.load_audio` (16 kHz), framed to the fixed input size of
    the model's ``signature`` when it has one."""
    from slimline.data.audio import is_audio_path, load_audio

    p = Path(str(path))
    if not p.exists():
        raise DataError(f"{p} does not exist; give a .npz file, a .npy file or a folder of them")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in ARRAY_SUFFIXES) if p.is_dir() else [p]
    if not files and is_audio_path(p):
        return load_audio(p, signature=signature)
    if not files:
        raise DataError(f"{p} holds no .npz or .npy files; save the inputs with np.savez(path, **{{name: array}})")
    arrays: dict[str, np.ndarray] = {}
    for f in files:
        try:
            if f.suffix.lower() == ".npz":
                with np.load(f, allow_pickle=False) as z:
                    found: Mapping[str, np.ndarray] = {k: z[k] for k in z.files}
            else:
                found = {f.stem: np.load(f, allow_pickle=False)}
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"cannot read {f} as numpy arrays ({first}); save it with np.savez / np.save") from e
        for k, v in found.items():
            if k in arrays:
                raise DataError(f"{p}: array {k!r} is in more than one file; keep one array per input name")
            arrays[k] = v
    labels = arrays.pop(LABELS, None)
    return NamedSamples(arrays, labels, str(p))
