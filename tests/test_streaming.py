"""Streaming speech models: the state carried across chunks gives the same outputs as one long run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from slimline.artifact import Artifact
from slimline.errors import SlimlineError
from slimline.runtimes import open_session
from slimline.tasks.speech import frame_agreement, run_stream, state_pairs

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


class StreamingKWS(torch.nn.Module):
    """Log-mel-like frames [batch, time, 8] -> causal depthwise conv (kernel 3, its last 2 frames kept as state)
    -> GRU (hidden state) -> per-frame scores [batch, time, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 8, 3, groups=8)
        self.gru = torch.nn.GRU(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, features, conv_state, state):  # type: ignore[no-untyped-def]
        x = torch.cat([conv_state, features.transpose(1, 2)], dim=2)  # [b, 8, 2 + t]
        y = torch.relu(self.conv(x)).transpose(1, 2)
        h, new_state = self.gru(y, state)
        return self.head(h), x[:, :, -2:], new_state


@pytest.fixture(scope="module")
def session(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stream") / "kws.onnx"
    args = (torch.zeros(1, 5, 8), torch.zeros(1, 8, 2), torch.zeros(1, 1, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            StreamingKWS().eval(),
            args,
            str(path),
            input_names=["features", "conv_state", "state"],
            output_names=["scores", "conv_state_out", "state_out"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                "features": {0: "batch", 1: "time"},
                "conv_state": {0: "batch"},
                "state": {1: "batch"},
                "scores": {0: "batch", 1: "time"},
            },
        )
    return open_session(Artifact(kind="onnx", path=path.parent, files={"model": path.name}), "onnxruntime")


def test_state_pairs_found_by_name(session) -> None:  # type: ignore[no-untyped-def]
    assert state_pairs(session.signature) == {"conv_state": "conv_state_out", "state": "state_out"}
    with pytest.raises(SlimlineError, match="not input->output names"):
        state_pairs(session.signature, {"state": "hidden"})


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunks_with_carried_state_equal_one_long_run(session, chunk: int) -> None:  # type: ignore[no-untyped-def]
    feats = np.random.default_rng(0).standard_normal((2, 20, 8)).astype(np.float32)
    long_out, long_state = run_stream(session, {"features": feats}, chunk=20)
    out, state = run_stream(session, {"features": feats}, chunk=chunk)
    assert out["scores"].shape == (2, 20, 4)
    np.testing.assert_allclose(out["scores"], long_out["scores"], atol=1e-5)
    np.testing.assert_allclose(state["state"], long_state["state"], atol=1e-5)
    # without the state carried (every chunk from zeros) the outputs differ: the test can fail
    fresh = np.concatenate(
        [
            session.run_named(
                {
                    "features": feats[:, i : i + chunk],
                    "conv_state": np.zeros((2, 8, 2), np.float32),
                    "state": np.zeros((1, 2, 16), np.float32),
                }
            )["scores"]
            for i in range(0, 20, chunk)
        ],
        axis=1,
    )
    assert not np.allclose(fresh, long_out["scores"], atol=1e-3)
    assert frame_agreement(out["scores"], long_out["scores"]) == 1.0


def test_frame_agreement_by_hand() -> None:
    ref = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]])
    got = np.array([[[0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.1, 0.9]]])
    assert frame_agreement(got, ref) == pytest.approx(0.75)


def test_log_mel_frames_and_peak() -> None:
    pytest.importorskip("transformers")
    from slimline.tasks.speech import log_mel

    t = np.arange(16000) / 16000
    low, high = (log_mel(np.sin(2 * np.pi * f * t).astype(np.float32)) for f in (300.0, 3000.0))
    assert low.shape == (101, 40)  # 10 ms hop over 1 s, centred frames
    assert low[50].argmax() < high[50].argmax()  # a higher tone peaks in a higher mel band
