"""Audio folders as named arrays: reading, resampling, framing, labels and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from slimline.data.arrays import is_arrays_path, load_arrays
from slimline.data.audio import fit_window, is_audio_path, load_audio, model_framing, to_float_mono
from slimline.errors import DataError
from slimline.signature import Signature, TensorSpec


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    """Two class folders: 'no' holds an 8 kHz int16 clip of 0.5 s; 'yes' a 16 kHz float32 clip of 1.5 s and an
    8 kHz int16 stereo clip of 1 s."""
    root = tmp_path / "speech"
    (root / "yes").mkdir(parents=True)
    (root / "no").mkdir()
    wavfile.write(root / "no" / "a.wav", 8000, (_tone(8000, 0.5) * 32767).astype(np.int16))
    wavfile.write(root / "yes" / "b.wav", 16000, _tone(16000, 1.5))
    stereo = np.stack([_tone(8000, 1.0), -_tone(8000, 1.0) * 0.5], axis=1)
    wavfile.write(root / "yes" / "c.wav", 8000, (stereo * 32767).astype(np.int16))
    return root


def test_class_folders_give_labels_and_resampled_window(speech: Path) -> None:
    s = load_audio(speech)
    assert s.names == ["audio"]
    x = s.arrays["audio"]
    assert x.dtype == np.float32 and x.shape == (3, 24000)  # the longest clip: 1.5 s at 16 kHz
    assert s.label_names == ("no", "yes")
    assert s.labels is not None and s.labels.tolist() == [0, 1, 1]
    assert np.abs(x).max() <= 1.0
    # the 8 kHz half-second clip becomes 8000 samples at 16 kHz, then zeros
    assert np.abs(x[0, :7900]).max() > 0.4 and not x[0, 8000:].any()
    assert is_audio_path(speech) and is_arrays_path(speech)
    assert load_arrays(speech).arrays["audio"].shape == (3, 24000)


def test_resampled_length_and_rate_option(speech: Path) -> None:
    x = load_audio(speech, sample_rate=8000, window_seconds=2.0).arrays["audio"]
    assert x.shape == (3, 16000)
    assert x[1, :12000].any() and not x[1, 12000:].any()  # 1.5 s at 16 kHz -> 12000 samples at 8 kHz


def test_window_crops_centred_and_frames(speech: Path) -> None:
    s = load_audio(speech, window_seconds=1.0, input_name="wave")
    assert s.names == ["wave"] and s.arrays["wave"].shape == (3, 16000)
    full = load_audio(speech).arrays["audio"][1]
    np.testing.assert_array_equal(s.arrays["wave"][1], full[4000:20000])
    framed = load_audio(speech, window_seconds=1.0, chunk_seconds=0.3).arrays["audio"]
    assert framed.shape == (3, 4, 4800)  # 16000 samples in chunks of 4800: 4 chunks, the last padded
    np.testing.assert_array_equal(framed.reshape(3, -1)[:, :16000], s.arrays["wave"])
    assert not framed.reshape(3, -1)[:, 16000:].any()


def test_model_signature_sets_the_window(speech: Path) -> None:
    def sig(*shape: int | str) -> Signature:
        return Signature((TensorSpec("wave", "float32", ("batch", *shape)),), ())

    assert model_framing(sig(16000)) == (16000, None)
    assert model_framing(sig(5, 320)) == (1600, 320)
    assert model_framing(sig("time")) == (None, None) and model_framing(None) == (None, None)
    assert load_arrays(speech, sig(8000)).arrays["audio"].shape == (3, 8000)
    assert load_audio(speech, signature=sig(4, 400)).arrays["audio"].shape == (3, 4, 400)
    assert load_audio(speech, window_seconds=1.0, signature=sig(8000)).arrays["audio"].shape == (3, 16000)


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    wavfile.write(tmp_path / "one.wav", 16000, (_tone(16000, 0.25) * 2**31).astype(np.int32))
    wavfile.write(tmp_path / "two.wav", 16000, ((_tone(16000, 0.25) + 1) * 127).astype(np.uint8))
    s = load_audio(tmp_path)
    assert s.labels is None and s.label_names == () and s.arrays["audio"].shape == (2, 4000)
    np.testing.assert_allclose(s.arrays["audio"][0], s.arrays["audio"][1], atol=0.02)


def test_conversions() -> None:
    assert to_float_mono(np.array([-32768, 0, 16384], np.int16)).tolist() == [-1.0, 0.0, 0.5]
    assert to_float_mono(np.array([0, 128, 255], np.uint8)).tolist() == pytest.approx([-1.0, 0.0, 127 / 128])
    assert to_float_mono(np.array([[1.5, 0.5]], np.float64)).tolist() == [0.75]
    np.testing.assert_array_equal(fit_window(np.arange(5.0), 3), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(fit_window(np.arange(2.0), 4), [0.0, 1.0, 0.0, 0.0])


def test_errors_are_one_line(tmp_path: Path, speech: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no .wav files"):
        load_audio(empty)
    assert not is_audio_path(empty)
    (speech / "maybe").mkdir()
    with pytest.raises(DataError, match=r"class folder .*maybe holds no .wav files"):
        load_audio(speech)
    (speech / "maybe" / "bad.wav").write_bytes(b"not a wav file")
    with pytest.raises(DataError, match=r"cannot read .*bad.wav as a wav file") as e:
        load_audio(speech)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="sample_rate must be positive"):
        load_audio(speech, sample_rate=0)
    with pytest.raises(DataError, match="window_seconds must be positive"):
        load_audio(speech, window_seconds=-1.0)
