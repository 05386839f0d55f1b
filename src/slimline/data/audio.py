"""Audio folders as a data source: ``.wav`` files, optionally in class subfolders, as named arrays.

``DIR/*.wav`` gives unlabelled samples; ``DIR/<label>/*.wav`` gives labels (indices into the sorted folder names,
``label_names``). Each file is read with :mod:`scipy.io.wavfile`, made float32 mono in [-1, 1] (int16, int32,
uint8 and float files), resampled to ``sample_rate`` with :func:`scipy.signal.resample_poly` and framed to the
model's window: ``window_seconds`` pads with zeros at the end or crops the centre (default: the longest clip),
giving ``[samples, window]``; with ``chunk_seconds`` the window is cut into streaming frames,
``[samples, n_chunks, chunk]`` (the last chunk zero-padded). Given the model's ``signature``, a single input with
fixed sizes sets what the options leave out: ``[batch, W]`` a window of W samples, ``[batch, N, C]`` N chunks of C.

    samples = load_audio("speech/", sample_rate=16000, window_seconds=1.0)   # NamedSamples: {"audio": ...}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from slimline.data.arrays import NamedSamples
from slimline.errors import DataError

AUDIO_SUFFIXES = (".wav",)
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_INPUT_NAME = "audio"


def _wavs(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def is_audio_path(data: str | Path) -> bool:
    """Whether ``data`` (a ``-d/--data`` value) names a folder holding ``.wav`` files, directly or one level down."""
    p = Path(str(data))
    if not p.is_dir():
        return False
    return bool(_wavs(p)) or any(_wavs(d) for d in _class_dirs(p))


def to_float_mono(audio: np.ndarray, where: str = "the audio") -> np.ndarray:
    """Samples of a wav file (``[n]`` or ``[n, channels]``) as float32 mono in [-1, 1]."""
    a = np.asarray(audio)
    if a.dtype == np.uint8:
        x = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype.kind == "i":
        x = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1))
    elif a.dtype.kind == "f":
        x = np.clip(a.astype(np.float32), -1.0, 1.0)
    else:
        raise DataError(f"{where} holds {a.dtype} samples; save it as 8/16/32-bit integer or float PCM")
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` at ``rate`` Hz resampled to ``target`` Hz (polyphase, exact for integer rates)."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def fit_window(x: np.ndarray, window: int) -> np.ndarray:
    """``x`` zero-padded at the end, or cropped around its centre, to exactly ``window`` samples."""
    if len(x) >= window:
        start = (len(x) - window) // 2
        return x[start : start + window]
    return np.pad(x, (0, window - len(x)))


def model_framing(signature: Any) -> tuple[int | None, int | None]:
    """(window, chunk) in samples that a single-input model's fixed shape asks for: ``[batch, W]`` gives
    (W, None), ``[batch, N, C]`` gives (N * C, C); (None, None) otherwise."""
    if signature is None or len(signature.inputs) != 1:
        return None, None
    dims = signature.inputs[0].shape[1:]
    if not dims or len(dims) > 2 or not all(isinstance(d, int) and d > 0 for d in dims):
        return None, None
    return (dims[0], None) if len(dims) == 1 else (dims[0] * dims[1], dims[1])


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """One ``.wav`` file as float32 mono at ``sample_rate`` Hz."""
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(str(path))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {path} as a wav file ({first}); save it as PCM or float .wav") from e
    if rate <= 0:
        raise DataError(f"{path} records a sample rate of {rate}; re-save it with a positive rate")
    return resample(to_float_mono(data, str(path)), int(rate), sample_rate)


def load_audio(
    path: str | Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    window_seconds: float | None = None,
    chunk_seconds: float | None = None,
    input_name: str = DEFAULT_INPUT_NAME,
    signature: Any = None,
) -> NamedSamples:
    """Read a folder of ``.wav`` files (see the module's docstring); errors are one line each. ``signature``
    (a :class:`slimline.signature.Signature`) frames the clips to the model's fixed input size."""
    p = Path(str(path))
    if sample_rate <= 0:
        raise DataError(f"sample_rate must be positive, not {sample_rate}; give the model's rate, e.g. 16000")
    for name, value in (("window_seconds", window_seconds), ("chunk_seconds", chunk_seconds)):
        if value is not None and value <= 0:
            raise DataError(f"{name} must be positive, not {value}; give a length in seconds, e.g. 1.0")
    if not p.is_dir():
        raise DataError(f"{p} is not a folder; give a folder of .wav files (or of class folders of them)")
    files = _wavs(p)
    labels: list[int] = []
    label_names: tuple[str, ...] = ()
    if not files:
        dirs = _class_dirs(p)
        if not dirs:
            raise DataError(f"{p} holds no .wav files; put the clips in it, or in one subfolder per class")
        label_names = tuple(d.name for d in dirs)
        for i, d in enumerate(dirs):
            found = _wavs(d)
            if not found:
                raise DataError(f"class folder {d} holds no .wav files; add its clips or remove the folder")
            files += found
            labels += [i] * len(found)
    clips = [read_wav(f, sample_rate) for f in files]
    model_window, chunk = model_framing(signature)
    if window_seconds is not None:
        window = round(window_seconds * sample_rate)
    else:
        window = model_window or max(len(c) for c in clips)
    window = max(window, 1)
    x = np.stack([fit_window(c, window) for c in clips]).astype(np.float32)
    if chunk_seconds is not None:
        chunk = max(round(chunk_seconds * sample_rate), 1)
    if chunk is not None:
        n_chunks = math.ceil(window / chunk)
        x = np.pad(x, ((0, 0), (0, n_chunks * chunk - window))).reshape(len(x), n_chunks, chunk)
    return NamedSamples(
        {input_name: x}, np.asarray(labels, np.int64) if label_names else None, str(p), label_names=label_names
    )
