"""Runtime-setting search: the space follows each runtime's options, the defaults are always measured
and kept unless beaten, and the result lands in the artifact's runtime_config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimline.artifact import Artifact, save_torch
from slimline.context import RunContext
from slimline.errors import SlimlineError
from slimline.models import load_model
from slimline.optimize.tune import (
    alternate,
    search_axes,
    thread_ladder,
    tune_runtime,
    tuned_meta,
)
from slimline.steps.tune import Tune, TuneOptions

FAST = {"rounds": 1, "round_seconds": 0.02, "warmup": 1}


@pytest.fixture(scope="module")
def torch_art(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    model = load_model("small_cnn_half")
    return save_torch(
        model, tmp_path_factory.mktemp("tune") / "cnn", {"input_shape": [1, 28, 28]}, [{"step": "baseline"}]
    )


@pytest.fixture(scope="module")
def onnx_art(torch_art: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    from slimline.artifact import load_torch
    from slimline.fileio import write_json
    from slimline.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("tune") / "onnx"
    folder.mkdir()
    export_onnx(load_torch(torch_art), (1, 28, 28), folder / "model.onnx")
    art = Artifact("onnx", folder, {"model": "model.onnx"}, {"input_shape": [1, 28, 28]}, [])
    write_json(folder / "artifact.json", art.to_json())
    return art


def test_thread_ladder() -> None:
    assert thread_ladder(1) == [1]
    assert thread_ladder(6) == [1, 2, 4, 6]
    assert thread_ladder(8) == [1, 2, 4, 8]


def test_search_axes_follow_runtime_options_and_include_defaults(torch_art: Artifact, onnx_art: Artifact) -> None:
    axes, defaults = search_axes("torch", torch_art, "latency", threads=[1, 2])
    assert axes == {"threads": [None, 1, 2], "channels_last": [False, True], "fuse": [False, True]}
    assert defaults == {"threads": None, "channels_last": False, "fuse": False}
    axes, defaults = search_axes("onnxruntime", onnx_art, "throughput", threads=[1, 2], batch_sizes=[4, 16])
    assert axes["threads"] == [None, 1, 2] and axes["inter_op_threads"][0] is None
    assert axes["batch_size"] == [4, 16] and defaults["batch_size"] == 4  # only the sizes asked for
    assert next(iter(axes)) == "batch_size"  # searched first: the best threads depend on the batch
    assert "channels_last" not in axes and "fuse" not in axes  # onnxruntime has no such options
    for k, v in defaults.items():
        assert v in axes[k]


def test_search_axes_openvino_streams_for_throughput(onnx_art: Artifact) -> None:
    from slimline.runtimes import get_runtime

    if not get_runtime("openvino").available()[0]:
        pytest.skip("openvino not usable here")
    axes, defaults = search_axes("openvino", onnx_art, "throughput", threads=[1, 2])
    assert axes["hint"] == ["latency", "throughput"] and defaults["hint"] == "latency"
    assert axes["streams"][0] is None and 1 in axes["streams"]
    lat_axes, _ = search_axes("openvino", onnx_art, "latency", threads=[1, 2])
    assert "streams" not in lat_axes and "batch_size" not in lat_axes


def test_tune_latency_is_never_worse_than_defaults(torch_art: Artifact) -> None:
    res = tune_runtime(torch_art, "torch", "latency", threads=[1], **FAST)
    assert {"median_ms", "p99_ms", "throughput"} <= set(res.default_stats)
    stages = {t["stage"] for t in res.trials}
    assert {"axis threads", "axis channels_last", "axis fuse", "confirm"} <= stages
    assert any(t["options"] == res.defaults for t in res.trials if t["stage"] == "axis threads")
    if res.kept_defaults:
        assert res.best == res.defaults
    else:  # the winner beat the defaults by min_gain in the final head-to-head
        assert res.best_stats["median_ms"] < res.default_stats["median_ms"] * 0.98
    assert res.runtime_config()["batch_size"] == 1


def test_tune_throughput_with_impossible_bound_keeps_defaults(onnx_art: Artifact) -> None:
    res = tune_runtime(onnx_art, "onnxruntime", "throughput", p99_ms=1e-6, threads=[1], batch_sizes=[4], **FAST)
    assert res.kept_defaults and res.best == res.defaults
    assert "no setting kept p99" in res.note
    assert res.runtime_config() == {"batch_size": 4}


def test_tune_throughput_picks_a_batch_size(onnx_art: Artifact) -> None:
    res = tune_runtime(onnx_art, "onnxruntime", "throughput", threads=[1], batch_sizes=[1, 32], **FAST)
    assert any(t["options"].get("batch_size") == 32 for t in res.trials)
    assert res.defaults["batch_size"] == 1
    if not res.kept_defaults:
        assert res.best_stats["throughput"] > res.default_stats["throughput"] * 1.02


def test_tune_throughput_at_one_batch_size_compares_at_that_size(onnx_art: Artifact) -> None:
    res = tune_runtime(onnx_art, "onnxruntime", "throughput", threads=[1], batch_sizes=[8], **FAST)
    assert res.defaults["batch_size"] == 8 and res.default_stats["batch_size"] == 8
    assert {t["options"]["batch_size"] for t in res.trials} == {8}
    assert res.runtime_config()["batch_size"] == 8
    with pytest.raises(SlimlineError, match="batch sizes"):
        search_axes("onnxruntime", onnx_art, "throughput", batch_sizes=[])


def test_failing_candidate_is_recorded_not_fatal(torch_art: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimline.optimize.tune as tune_mod

    real = tune_mod.search_axes

    def with_bad_value(*args, **kwargs):  # type: ignore[no-untyped-def]
        axes, defaults = real(*args, **kwargs)
        return {"threads": [None, -3]}, {"threads": None}

    monkeypatch.setattr(tune_mod, "search_axes", with_bad_value)
    res = tune_mod.tune_runtime(torch_art, "torch", "latency", **FAST)
    bad = [t for t in res.trials if t["options"] == {"threads": -3}]
    assert bad and "error" in bad[0]
    assert res.best == {"threads": None}


def test_tuned_meta_keeps_other_options() -> None:
    class R:
        defaults = {"threads": None, "channels_last": False}

        def runtime_config(self) -> dict:
            return {"threads": 2, "batch_size": 1}

    meta = {"input_shape": [1, 2, 2], "runtime_config": {"torch": {"fuse": True, "channels_last": True}, "x": {"a": 1}}}
    out = tuned_meta(meta, {"torch": R()})  # type: ignore[dict-item]
    assert out["runtime_config"]["torch"] == {"fuse": True, "threads": 2, "batch_size": 1}
    assert out["runtime_config"]["x"] == {"a": 1}
    assert meta["runtime_config"]["torch"] == {"fuse": True, "channels_last": True}  # input untouched


def test_tune_step_writes_runtime_config_used_by_open_session(torch_art: Artifact, tmp_path: Path) -> None:
    from slimline.runtimes import open_session

    ctx = RunContext(run_dir=tmp_path, seed=0, out_dir=tmp_path / "02_tune")
    out = Tune(TuneOptions(runtimes=["torch"], threads=[1], rounds=1, round_seconds=0.02)).apply(torch_art, ctx)
    assert out.artifact is not None
    cfg = out.artifact.meta["runtime_config"]["torch"]
    assert cfg == out.record["runtime_config"]["torch"] and cfg["batch_size"] == 1
    assert set(out.artifact.files) == set(torch_art.files)
    sess = open_session(Artifact.load(out.artifact.path), "torch")
    d = sess.describe()
    assert d["channels_last"] == cfg.get("channels_last", False) and d["fuse"] == cfg.get("fuse", False)
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert sess.run(x).shape == (2, 10)


def test_tune_rejects_unknown_target(torch_art: Artifact) -> None:
    with pytest.raises(SlimlineError, match="target"):
        tune_runtime(torch_art, "torch", "fastest")


def test_alternate_takes_turns() -> None:
    calls: list[str] = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert len(times["a"]) == len(times["b"]) == 2


def test_cli_tune_in_place(onnx_art: Artifact, tmp_path: Path) -> None:
    import shutil

    from slimline.cli import app

    folder = tmp_path / "art"
    shutil.copytree(onnx_art.path, folder)
    report = tmp_path / "tune.json"
    result = CliRunner().invoke(
        app,
        ["tune", str(folder), "-r", "onnxruntime", "--threads", "1", "--rounds", "1", "--json", str(report)],
    )
    assert result.exit_code == 0, result.output
    art = Artifact.load(folder)
    assert art.meta["runtime_config"]["onnxruntime"]["batch_size"] == 1
    assert art.lineage[-1]["step"] == "tune"
    doc = json.loads(report.read_text())
    assert doc["runtimes"]["onnxruntime"]["target"] == "latency"
