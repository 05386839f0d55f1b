from __future__ import annotations

import json
from pathlib import Path

import pytest

import slimline
from slimline.artifact import Artifact
from slimline.errors import SlimlineError


def _recipe(tmp_path: Path, steps: list) -> dict:
    return {
        "name": "tiny",
        "model": "small_cnn_half",
        "data": {"name": "digits", "val_size": 200, "test_limit": 200},
        "steps": steps,
        "output_dir": str(tmp_path / "run"),
    }


def test_run_saves_every_stage(tmp_path: Path) -> None:
    steps = [{"train": {"epochs": 1, "batch_size": 64, "augment": False}}, "evaluate", "export_onnx", "evaluate"]
    results = slimline.run(_recipe(tmp_path, steps))
    run = tmp_path / "run"
    assert [s["step"] for s in results["stages"]] == ["baseline", "train", "evaluate", "export_onnx", "evaluate"]
    onnx_art = Artifact.load(run / "03_export_onnx")
    assert onnx_art.kind == "onnx" and onnx_art.model_file.exists()
    assert [r["step"] for r in onnx_art.lineage] == ["baseline", "train", "export_onnx"]
    assert onnx_art.lineage[-1]["parity"]["max_rel_diff"] < 1e-4
    torch_acc = results["stages"][2]["record"]["metrics"]
    onnx_acc = results["stages"][4]["record"]["metrics"]
    assert torch_acc["n"] == onnx_acc["n"] == 200
    assert abs(torch_acc["top1"] - onnx_acc["top1"]) <= 0.5  # same model on two runtimes
    assert onnx_acc["runtime"] == "onnxruntime"
    saved = json.loads((run / "results.json").read_text())
    assert saved["final_artifact"] == "03_export_onnx"
    assert saved["environment"]["cpu"]["cores"] >= 1


def test_failed_step_keeps_earlier_stages(tmp_path: Path) -> None:
    steps = [{"train": {"epochs": 1, "augment": False}}, "export_onnx", {"train": {"epochs": 1}}]
    with pytest.raises(SlimlineError) as e:
        slimline.run(_recipe(tmp_path, steps))
    assert str(e.value) == (
        "step 'train' takes torch artifacts; 02_export_onnx is onnx: give it input: train (or an earlier torch stage)"
    )
    run = tmp_path / "run"
    assert Artifact.load(run / "01_train").kind == "torch"
    assert Artifact.load(run / "02_export_onnx").kind == "onnx"
    assert not (run / "03_train").exists()
    assert json.loads((run / "results.json").read_text())["failed_step"] == "03_train"


def test_onnx_model_as_input(tmp_path: Path) -> None:
    first = slimline.run(_recipe(tmp_path, ["export_onnx"]))
    onnx_file = tmp_path / "run" / first["final_artifact"] / "model.onnx"
    recipe = _recipe(tmp_path, ["evaluate"]) | {"model": str(onnx_file), "output_dir": str(tmp_path / "run2")}
    res = slimline.run(recipe)
    assert res["stages"][0]["record"]["model"] == str(onnx_file)
    assert res["stages"][1]["record"]["metrics"]["runtime"] == "onnxruntime"
    trains = _recipe(tmp_path, ["train"]) | {"model": str(onnx_file), "output_dir": str(tmp_path / "run3")}
    want = r"^step 'train' takes torch artifacts; 00_baseline is onnx: no stage of this run is torch: start the"
    with pytest.raises(SlimlineError, match=want):
        slimline.run(trains)


def test_step_input_branches_from_an_earlier_stage(tmp_path: Path) -> None:
    steps = [
        "export_onnx",
        {"evaluate": {"input": "baseline", "fidelity": False}},
        {"export_onnx": {"input": "00_baseline"}},
    ]
    results = slimline.run(_recipe(tmp_path, steps))
    recs = [s["record"] for s in results["stages"][1:]]
    assert [r["input"] for r in recs] == ["00_baseline", "00_baseline", "00_baseline"]
    assert Artifact.load(tmp_path / "run" / "03_export_onnx").lineage[0]["step"] == "baseline"
    with pytest.raises(SlimlineError, match="no earlier stage named 'prune'"):
        slimline.run(_recipe(tmp_path, [{"evaluate": {"input": "prune"}}]))


def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path: Path) -> None:
    import os
    import threading

    from slimline.errors import RunFolderBusy
    from slimline.runlock import LOCK_FILE, run_lock

    run = tmp_path / "run"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with run_lock(run):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(RunFolderBusy, match=rf"being written by another slimline run \(pid {os.getpid()} on "):
            slimline.run(_recipe(tmp_path, ["evaluate"]))
        assert not (run / "00_baseline").exists()
    finally:
        release.set()
        t.join()
    res = slimline.run(_recipe(tmp_path, ["evaluate"]))  # released: the next run goes ahead
    assert res["final_artifact"] == "00_baseline"
    assert (run / LOCK_FILE).read_text() == ""  # released on the way out
    with pytest.raises(SlimlineError):  # a failing run releases the lock too
        slimline.run(_recipe(tmp_path, ["evaluate", {"train": {"epochs": 1}, "input": "nowhere"}]))
    with run_lock(run):
        pass


def test_leftovers_of_an_interrupted_run_are_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / ".01_train.k3j2h1x9").mkdir(parents=True)
    (run / ".01_train.k3j2h1x9" / "weights.pt").write_bytes(b"partial")
    (run / ".00_baseline.old").mkdir()
    (run / ".results.json.abcd.tmp").write_text("{")
    (run / ".02_qat.qat-checkpoint.pt").write_bytes(b"kept")  # a checkpoint a rerun resumes from
    slimline.run(_recipe(tmp_path, ["evaluate"]))
    assert "removed 3 leftover temporary" in " ".join(capsys.readouterr().err.split())
    left = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert left == [".02_qat.qat-checkpoint.pt", ".slimline.lock"]


def test_report_refuses_a_folder_a_run_is_writing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app
    from slimline.runlock import run_lock

    slimline.run(_recipe(tmp_path, ["evaluate"]))
    run = tmp_path / "run"
    with run_lock(run):
        res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code != 0 and "is being written by another slimline run" in " ".join(res.output.split())
    assert CliRunner().invoke(app, ["report", str(run)]).exit_code == 0


def test_a_model_for_other_channels_fails_before_any_step(tmp_path: Path) -> None:
    """small_cnn takes 1 channel; cifar10-sample gives 3: one line before 00_baseline is written."""
    from slimline.errors import ModelError

    recipe = _recipe(tmp_path, [{"train": {"epochs": 1}}]) | {"data": {"name": "cifar10-sample", "test_limit": 50}}
    want = (
        r"model small_cnn_half expects 1 input channel\(s\) but dataset cifar10-sample "
        r"gives 3 \(input shape \(3, 32, 32\)\); use a model made for 3 channel\(s\)"
    )
    with pytest.raises(ModelError, match=want):
        slimline.run(recipe)
    assert not (tmp_path / "run" / "00_baseline").exists()
    ok = recipe | {"model": {"name": "small_cnn_half", "kwargs": {"in_channels": 3}}, "steps": ["evaluate"]}
    assert slimline.run(ok)["final_artifact"] == "00_baseline"


def test_an_onnx_model_for_another_input_fails_before_any_step(tmp_path: Path) -> None:
    from slimline.errors import ModelError

    first = slimline.run(_recipe(tmp_path, ["export_onnx"]))
    onnx_file = tmp_path / "run" / first["final_artifact"] / "model.onnx"
    recipe = _recipe(tmp_path, ["evaluate"]) | {
        "model": str(onnx_file),
        "data": {"name": "cifar10-sample", "test_limit": 50},
        "output_dir": str(tmp_path / "run2"),
    }
    with pytest.raises(ModelError, match=r"expects 1 input channel\(s\) but dataset cifar10-sample gives 3"):
        slimline.run(recipe)


def test_rerun_with_a_changed_recipe_discards_the_stale_checkpoint(tmp_path: Path) -> None:
    """Killed under lr 0.01, rerun with lr 0.3: the step starts afresh (its record says why); with 0.01 it resumes."""
    from slimline.artifact import load_torch
    from slimline.pipeline import DataBundle
    from slimline.recipe import parse_recipe
    from slimline.steps.train import TrainOptions
    from slimline.train import fit

    def recipe(lr: float) -> dict:
        return _recipe(tmp_path, [{"train": {"epochs": 2, "batch_size": 64, "augment": False, "lr": lr}}])

    slimline.run(recipe(0.01))
    run = tmp_path / "run"

    def killed_after_one_epoch(lr: float) -> None:  # what a run killed during epoch 2 leaves behind
        parsed = parse_recipe(recipe(lr))
        opts = parsed.steps[0].config
        assert isinstance(opts, TrainOptions)
        model = load_torch(Artifact.load(run / "00_baseline"))
        data = DataBundle(parsed.data, parsed.seed)
        fit(
            model,
            data.train,
            opts.train_config(parsed.seed),
            checkpoint=run / "01_train" / "checkpoint.pt",
            stop_after_epoch=1,
        )

    killed_after_one_epoch(0.01)
    rec = slimline.run(recipe(0.3))["stages"][1]["record"]
    assert "changed: lr" in rec["resume"]["discarded"] and len(rec["history"]) == 2
    killed_after_one_epoch(0.01)
    rec = slimline.run(recipe(0.01))["stages"][1]["record"]
    assert rec["resume"] == {"from_epoch": 1}
