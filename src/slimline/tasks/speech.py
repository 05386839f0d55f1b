"""Speech: streaming models whose state is an input and an output, run chunk by chunk with the state carried.

A streaming model takes one chunk of audio features (or samples) plus its state and returns its outputs plus the
next state. :func:`state_pairs` finds the pairs in a signature by name: input ``S`` goes with output ``S_out``,
``new_S``, ``next_S`` or ``S_next`` (or give the mapping). :func:`run_stream` cuts every non-state input along
``axis`` into chunks of ``chunk`` steps, feeds each chunk with the state the previous chunk returned (zeros of the
input's shape before the first, the dynamic axes taking the batch size and 1), and returns the per-chunk outputs
joined along ``axis`` plus the final state -- for a causal model the same outputs as one long run over the whole
input. The keyword-spotting task scores ``[batch, classes]`` scores with top-1 accuracy (the classification
figures, with n and a 95% interval); :func:`frame_agreement` is voice activity's figure: the share of frames
whose decision matches the reference's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from slimline.errors import SlimlineError
from slimline.tasks.base import TASKS, Outputs

STATE_SUFFIXES = ("{}_out", "new_{}", "next_{}", "{}_next")


class StreamError(SlimlineError):
    """A model that cannot be streamed as asked (no state pairs, or inputs that cannot be cut into chunks)."""


def state_pairs(signature: Any, pairs: Mapping[str, str] | None = None) -> dict[str, str]:
    """State input name -> state output name: ``pairs`` when given (checked against the signature), else found
    by name (see the module docstring)."""
    ins, outs = set(signature.input_names), set(signature.output_names)
    if pairs:
        bad = [f"{i}->{o}" for i, o in pairs.items() if i not in ins or o not in outs]
        if bad:
            raise StreamError(
                f"state pairs {', '.join(bad)} are not input->output names of the model (inputs "
                f"{', '.join(sorted(ins))}; outputs {', '.join(sorted(outs))}); fix the names"
            )
        return dict(pairs)
    found = {i: o for i in signature.input_names for o in (p.format(i) for p in STATE_SUFFIXES) if o in outs}
    if not found:
        raise StreamError(
            f"no state input/output pair in the model (inputs {', '.join(sorted(ins))}; outputs "
            f"{', '.join(sorted(outs))}); name the state output S_out for input S, or give the pairs"
        )
    return found


def initial_state(spec: Any, batch: int) -> np.ndarray:
    """Zeros of a state input's shape: a dynamic axis named ``batch...`` (else a dynamic first axis) takes
    ``batch``, other dynamic axes 1 (a GRU's state is [layers, batch, hidden])."""
    dyn = {i: str(d) for i, d in enumerate(spec.shape) if isinstance(d, str)}
    named = [i for i, d in dyn.items() if d.lower().startswith("batch")]
    b_axis = named[0] if named else (0 if 0 in dyn else None)
    shape = [batch if i == b_axis else (1 if i in dyn else int(d)) for i, d in enumerate(spec.shape)]
    return np.zeros(shape, dtype=np.dtype(spec.dtype))


def chunks(feeds: Mapping[str, np.ndarray], chunk: int, axis: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """``feeds`` cut along ``axis`` into consecutive pieces of ``chunk`` steps (the last may be shorter)."""
    lengths = {k: np.shape(v)[axis] for k, v in feeds.items()}
    if len(set(lengths.values())) != 1:
        raise StreamError(f"inputs have different lengths along axis {axis} ({lengths}); stream inputs of one length")
    total = next(iter(lengths.values()))
    for start in range(0, total, chunk):
        yield {k: np.take(v, range(start, min(start + chunk, total)), axis=axis) for k, v in feeds.items()}


def run_stream(
    session: Any,
    feeds: Mapping[str, np.ndarray],
    chunk: int,
    axis: int = 1,
    pairs: Mapping[str, str] | None = None,
    state: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run ``feeds`` (the non-state inputs) through ``session`` in chunks of ``chunk`` steps along ``axis``,
    carrying the state; returns (outputs joined along ``axis``, final state by input name)."""
    sig = session.signature
    if sig is None:
        raise StreamError(
            "the session has no signature, so its state inputs are unknown; load an ONNX model or "
            "an artifact with a signature"
        )
    pairs = state_pairs(sig, pairs)
    specs = {t.name: t for t in sig.inputs}
    batch = int(np.shape(next(iter(feeds.values())))[0])
    cur = {i: np.asarray(state[i]) if state and i in state else initial_state(specs[i], batch) for i in pairs}
    parts: dict[str, list[np.ndarray]] = {}
    for piece in chunks(feeds, chunk, axis):
        out = session.run_named({**piece, **cur})
        cur = {i: np.asarray(out[o]) for i, o in pairs.items()}
        for name, v in out.items():
            if name not in pairs.values():
                parts.setdefault(name, []).append(np.asarray(v))
    return {k: np.concatenate(v, axis=axis) if np.ndim(v[0]) > axis else v[-1] for k, v in parts.items()}, cur


def frame_agreement(got: np.ndarray, ref: np.ndarray) -> float:
    """Share (0..1) of frames whose decision (argmax over the last axis, or > 0.5 for one score) matches."""

    def decide(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return (
            a.argmax(-1) if a.ndim and a.shape[-1] > 1 else (a.reshape(a.shape[:-1] if a.ndim > 1 else a.shape) > 0.5)
        )

    g, r = decide(got), decide(ref)
    if g.shape != r.shape:
        raise StreamError(f"frame decisions of shape {g.shape} against {r.shape}; compare the same frames")
    return float((g == r).mean()) if g.size else float("nan")


class KeywordSpottingTask:
    """Keyword spotting: one [batch, classes] score output per clip; accuracy against integer labels."""

    name = "keyword_spotting"

    def feeds(self, samples: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return samples.batches(batch_size)

    def metric(self, outputs: Outputs, labels: np.ndarray) -> dict[str, Any]:
        from slimline.tasks.classification import ClassificationTask

        return ClassificationTask().metric(outputs, labels)

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        from slimline.tasks.classification import ClassificationTask

        return ClassificationTask().fidelity(outputs, reference)


TASKS["keyword_spotting"] = KeywordSpottingTask()


def log_mel(
    audio: np.ndarray, sample_rate: int = 16000, n_mels: int = 40, win_ms: float = 25.0, hop_ms: float = 10.0
) -> np.ndarray:
    """Log-mel frames ``[frames, n_mels]`` (natural log of the power mel spectrogram, Hann window, centred) of one
    mono clip, from ``transformers.audio_utils`` (the front end beside the model; record these settings with it)."""
    try:
        from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
    except ImportError as e:
        raise SlimlineError("the log-mel front end needs transformers: pip install 'slimline[text]'") from e
    win, hop = int(sample_rate * win_ms / 1000), int(sample_rate * hop_ms / 1000)
    fft = 1 << (win - 1).bit_length()
    mel = mel_filter_bank(fft // 2 + 1, n_mels, 20.0, sample_rate / 2, sample_rate, mel_scale="htk")
    spec = spectrogram(
        np.asarray(audio, np.float32),
        window_function(win, "hann"),
        frame_length=win,
        hop_length=hop,
        fft_length=fft,
        power=2.0,
        mel_filters=mel,
        log_mel="log",
        mel_floor=1e-6,
    )
    return spec.T.astype(np.float32)
