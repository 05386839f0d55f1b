"""``slimline.apply_step``: one recipe step on one artifact from Python, written and recorded as a run writes it,
with the one-line error when the step does not take the artifact's kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import slimline
from slimline.artifact import Artifact
from slimline.context import DataBundle
from slimline.errors import RecipeError, SlimlineError
from slimline.pipeline import make_baseline
from slimline.recipe import DataConfig, ModelSpec


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """small_cnn saved as a torch artifact for the digits data, as a run's 00_baseline."""
    spec = DataBundle(DataConfig(name="digits")).spec
    return make_baseline(ModelSpec(name="small_cnn"), spec, tmp_path_factory.mktemp("apply") / "00_baseline")


def test_export_then_fuse_from_python(baseline: Artifact, tmp_path: Path) -> None:
    onnx = slimline.apply_step("export_onnx", str(baseline.path), tmp_path / "onnx", data="digits", parity_batch=2)
    assert onnx.kind == "onnx" and onnx.path == tmp_path / "onnx" and onnx.model_file.exists()
    assert [r["step"] for r in onnx.lineage] == ["baseline", "export_onnx"]
    assert onnx.lineage[-1]["config"]["parity_batch"] == 2 and onnx.lineage[-1]["input"] == "00_baseline"
    assert json.loads((tmp_path / "onnx" / "record.json").read_text()) == onnx.lineage[-1]
    assert Artifact.load(tmp_path / "onnx").lineage == onnx.lineage  # artifact.json holds the lineage too

    fused = slimline.apply_step("fuse", baseline, tmp_path / "fused", layout="nchw", layout_rounds=1)
    assert fused.kind == "torch" and [r["step"] for r in fused.lineage] == ["baseline", "fuse"]
    assert fused.lineage[-1]["fold_bn"]["folded"] == 4


def test_a_step_that_makes_no_artifact_returns_its_input(baseline: Artifact, tmp_path: Path) -> None:
    onnx = slimline.apply_step("export_onnx", baseline, tmp_path / "onnx")
    again = slimline.apply_step("export_onnx", onnx, tmp_path / "again")  # already ONNX: passes through
    assert again is onnx and "already ONNX" in json.loads((tmp_path / "again" / "record.json").read_text())["note"]


def test_wrong_kind_is_one_line_before_any_work(baseline: Artifact, tmp_path: Path) -> None:
    onnx = slimline.apply_step("export_onnx", baseline, tmp_path / "onnx")
    with pytest.raises(RecipeError) as e:
        slimline.apply_step("prune", onnx, tmp_path / "pruned", data="digits", ratio=0.5)
    msg = str(e.value)
    assert msg == f"step 'prune' takes torch artifacts; {onnx.path} is onnx: give it a torch artifact instead"
    assert not (tmp_path / "pruned").exists()


def test_options_and_data_are_validated(baseline: Artifact, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"step 'fuse': layot: unknown field"):
        slimline.apply_step("fuse", baseline, tmp_path / "f", layot="nchw")
    with pytest.raises(SlimlineError, match=r"unknown step 'fuze'; valid names: .*fuse"):
        slimline.apply_step("fuze", baseline, tmp_path / "f")
    with pytest.raises(RecipeError, match=r"data: val_sise: unknown field"):
        slimline.apply_step("train", baseline, tmp_path / "t", data={"name": "digits", "val_sise": 10})
    with pytest.raises(SlimlineError, match=r"does not exist; give an artifact folder or a \.onnx/\.xml file"):
        slimline.apply_step("fuse", tmp_path / "missing", tmp_path / "f")


def test_a_step_that_reads_data_without_data_says_so(baseline: Artifact, tmp_path: Path) -> None:
    with pytest.raises(SlimlineError, match=r"this step reads data but none was given: name a dataset"):
        slimline.apply_step("train", baseline, tmp_path / "t", epochs=1)


def test_a_rule_over_several_options_is_one_line(baseline: Artifact, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"^step 'prune': method channel needs a target \(e\.g\. \{macs: 0\.5\}\)"):
        slimline.apply_step("prune", baseline, tmp_path / "p", data="digits")
