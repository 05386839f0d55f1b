"""Runtimes: one interface, same outputs everywhere, describe(), unavailability as a message, telemetry off."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slimline.artifact import Artifact, save_torch
from slimline.errors import RuntimeUnavailable
from slimline.models import load_model
from slimline.runtimes import availability, get_runtime, open_session, runtime_names

META = {"model": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 10}
DESCRIBE_KEYS = {"name", "version", "device", "precision", "threads"}


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    from slimline.onnx_export import export_onnx_artifact
    from slimline.openvino_export import export_openvino_artifact

    d = tmp_path_factory.mktemp("runtimes")
    torch.manual_seed(0)
    model = load_model("small_cnn")
    t = save_torch(model, d / "torch", META, [])
    o, _ = export_onnx_artifact(model, d / "onnx", META, [])
    v, _ = export_openvino_artifact(o, d / "ov", META, [])
    return {"torch": t, "onnx": o, "openvino": v}


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((6, 1, 28, 28)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(arts: dict[str, Artifact], batch: np.ndarray) -> np.ndarray:
    return open_session(arts["torch"], "torch").run(batch)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_registry_lists_every_runtime_with_availability() -> None:
    assert {"torch", "torch-compile", "onnxruntime", "openvino"} <= set(runtime_names())
    for name, (ok, why) in availability().items():
        assert isinstance(ok, bool) and isinstance(why, str)
        assert ok or why, f"{name} is unavailable without a reason"
    assert get_runtime("openvino").kinds == ("openvino", "onnx")


@pytest.mark.parametrize(
    ("runtime", "kind", "options"),
    [
        ("torch", "torch", {"channels_last": True, "threads": 1}),
        ("onnxruntime", "onnx", {"threads": 1, "graph_optimization": "basic"}),
        ("openvino", "openvino", {"threads": 1}),
        ("openvino", "onnx", {}),  # OpenVINO reads ONNX files too
        ("openvino", "openvino", {"hint": "throughput", "requests": 2}),  # batch split over 2 parallel requests
    ],
)
def test_runtimes_agree_and_describe_themselves(arts, batch, reference, runtime, kind, options) -> None:
    s = open_session(arts[kind], runtime, **options)
    out = s.run(batch)
    assert out.shape == (6, 10) and out.dtype == np.float32
    assert _rel(reference, out) < 1e-4
    d = s.describe()
    assert DESCRIBE_KEYS <= set(d) and d["name"] == runtime and d["version"]
    if options.get("threads"):
        assert d["threads"] == 1
    if runtime == "openvino":
        assert d["device"] == "CPU" and d["precision"] in ("f32", "float32")
        assert d["requests"] == options.get("requests", 1)
    if options.get("channels_last"):
        assert d["channels_last"] is True


def test_runtime_config_in_artifact_meta_is_applied(arts) -> None:
    art = arts["onnx"]
    cfg = Artifact(art.kind, art.path, art.files, {**art.meta, "runtime_config": {"onnxruntime": {"threads": 1}}})
    assert open_session(cfg, "onnxruntime").describe()["threads"] == 1
    assert open_session(cfg, "onnxruntime", threads=2).describe()["threads"] == 2  # explicit options win


def test_torch_compile_matches_eager() -> None:
    """A tiny model through torch.compile/inductor (10-30 s on a busy CPU): outputs equal eager; options described."""
    from slimline.runtimes.torch_compile import TorchCompileSession

    ok, why = get_runtime("torch-compile").available()
    if not ok:
        pytest.skip(why)
    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = tiny(torch.from_numpy(x)).numpy()
    s = TorchCompileSession(
        tiny, threads=None, channels_last=False, freezing=True, mode="default", dynamic=None, backend="inductor"
    )
    assert _rel(ref, s.run(x)) < 1e-4
    assert _rel(ref, s.run(x)) < 1e-4  # compiled graph reused
    d = s.describe()
    assert d["name"] == "torch-compile" and d["freezing"] is True and d["backend"] == "inductor"


def test_missing_backends_are_reported_not_raised(arts, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.runtimes import torch_compile

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    ok, why = get_runtime("onnxruntime").available()
    assert not ok and "pip install onnxruntime" in why
    with pytest.raises(RuntimeUnavailable, match=r"runtime 'onnxruntime' is not usable here: onnxruntime is not"):
        open_session(arts["onnx"], "onnxruntime")
    monkeypatch.setitem(sys.modules, "openvino", None)
    ok, why = get_runtime("openvino").available()
    assert not ok and "pip install openvino" in why
    monkeypatch.setattr(torch_compile, "cpp_compiler", lambda: None)
    ok, why = get_runtime("torch-compile").available()
    assert not ok and "C++ compiler" in why


def test_unusable_options_say_what_to_use(arts) -> None:
    with pytest.raises(RuntimeUnavailable, match="onnxruntime has no CUDAExecutionProvider here"):
        open_session(arts["onnx"], "onnxruntime", device="cuda")
    with pytest.raises(RuntimeUnavailable, match="OpenVINO has no GPU device here"):
        open_session(arts["openvino"], "openvino", device="GPU")
    with pytest.raises(RuntimeUnavailable, match="hint must be one of"):
        open_session(arts["openvino"], "openvino", hint="fast")


def test_openvino_telemetry_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no consent file, openvino_telemetry would count as consent; slimline turns it off in-process."""
    pytest.importorskip("openvino_telemetry")
    monkeypatch.setenv("HOME", str(tmp_path))  # a fresh home: no consent file anywhere
    from openvino_telemetry import Telemetry
    from openvino_telemetry.backend import backend_ga4
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    from slimline.runtimes.openvino import disable_telemetry

    disable_telemetry()
    import os

    assert os.environ.get("NNCF_CI")  # nncf swaps in its telemetry stub at import
    assert OptInChecker().check(enable_opt_in_dialog=False) == ConsentCheckResult.DECLINED
    sent: list = []
    monkeypatch.setattr(backend_ga4.GA4Backend, "send", lambda self, msg: sent.append(msg))
    t = Telemetry(app_name="slimline-test", app_version="0", tid="G-TEST", backend="ga4", enable_opt_in_dialog=False)
    assert t.consent is False
    t.send_event("cat", "act", "label", force_send=True)  # even forced events go nowhere
    t.sender.force_shutdown(0.1)
    assert sent == []
    assert not (tmp_path / "intel").exists()  # no client id or stats written


def test_option_names_come_from_load_and_typos_are_errors(arts) -> None:
    from slimline.errors import SlimlineError
    from slimline.runtimes import runtime_options, validate_options, validate_runtime_spec

    assert {"threads", "inter_op_threads"} <= set(runtime_options("onnxruntime"))
    assert "artifact" not in runtime_options("torch")
    with pytest.raises(
        SlimlineError,
        match=r"runtime onnxruntime has no option 'thread' \(did you mean 'threads'\?\); "
        r"valid: threads, inter_op_threads",
    ):
        validate_runtime_spec("onnxruntime:thread=2")
    validate_runtime_spec("torch:channels_last")
    validate_options("onnxruntime", {"batch_size": 8}, allow=("batch_size",))
    with pytest.raises(SlimlineError, match="unknown runtime 'onnx'"):
        validate_runtime_spec("onnx")
    with pytest.raises(SlimlineError, match="has no option 'thread'"):  # the backstop: open_session
        open_session(arts["onnx"], "onnxruntime", thread=2)
    art = arts["onnx"]
    typo = Artifact(art.kind, art.path, art.files, {**art.meta, "runtime_config": {"onnxruntime": {"thread": 1}}})
    with pytest.raises(SlimlineError, match="has no option 'thread'"):  # an artifact's runtime_config too
        open_session(typo, "onnxruntime")
    tuned = Artifact(art.kind, art.path, art.files, {**art.meta, "runtime_config": {"onnxruntime": {"batch_size": 4}}})
    open_session(tuned, "onnxruntime")  # the tuned batch size rides along
