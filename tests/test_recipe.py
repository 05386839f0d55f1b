from __future__ import annotations

from pathlib import Path

import pytest

from slimline.errors import RecipeError
from slimline.recipe import load_recipe, parse_recipe

BASE = {"model": "small_cnn", "data": "digits", "steps": [{"train": {"epochs": 1}}]}


def test_valid_recipe_forms() -> None:
    r = parse_recipe(BASE | {"steps": [{"train": {"epochs": 2}}, "evaluate", {"step": "export_onnx", "rtol": 1e-3}]})
    assert [s.name for s in r.steps] == ["train", "evaluate", "export_onnx"]
    assert r.steps[0].config.epochs == 2  # type: ignore[attr-defined]
    assert r.steps[2].config.rtol == 1e-3  # type: ignore[attr-defined]
    assert r.model.name == "small_cnn" and r.data.name == "digits"


def test_unknown_step_lists_valid_names() -> None:
    with pytest.raises(RecipeError, match=r"steps\[1\]: unknown step 'trian'; valid steps: .*evaluate.*train"):
        parse_recipe(BASE | {"steps": [{"train": {}}, {"trian": {}}]})


def test_bad_field_gives_path() -> None:
    with pytest.raises(RecipeError, match=r"steps\[0\]\.train\.epochs: Input should be greater than or equal to 1"):
        parse_recipe(BASE | {"steps": [{"train": {"epochs": 0}}]})
    with pytest.raises(RecipeError, match=r"steps\[0\]\.train\.epoch: unknown field"):
        parse_recipe(BASE | {"steps": [{"train": {"epoch": 3}}]})
    with pytest.raises(RecipeError, match=r"data\.val_sise: unknown field"):
        parse_recipe(BASE | {"data": {"name": "digits", "val_sise": 3}})
    with pytest.raises(RecipeError, match=r"steps: Field required"):
        parse_recipe({"model": "small_cnn", "data": "digits"})


def test_recipe_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="must hold a mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_shipped_recipes_validate() -> None:
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "src" / "slimline" / "recipes").glob("*.yaml")) + sorted((root / "examples").glob("*.yaml"))
    assert files
    for f in files:
        assert load_recipe(f).steps, f


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"batch_sizes": [1, 0]}, "benchmark.batch_sizes.1: Input should be greater than or equal to 1"),
        ({"batch_sizes": []}, "benchmark.batch_sizes: List should have at least 1 item"),
        ({"threads": 0}, "benchmark.threads: must be a whole number of at least 1, or 'auto'"),
        ({"threads": "many"}, "benchmark.threads: must be a whole number of at least 1, or 'auto'"),
        ({"min_runs": 0}, "benchmark.min_runs: Input should be greater than or equal to 1"),
        ({"min_seconds": -1}, "benchmark.min_seconds: Input should be greater than or equal to 0"),
        ({"warmup": -1}, "benchmark.warmup: Input should be greater than or equal to 0"),
        ({"runtimes": []}, "benchmark.runtimes: List should have at least 1 item"),
        ({"runtimes": ["torch", "onnx"]}, "benchmark.runtimes: unknown runtime 'onnx'; valid names: "),
        ({"runtimes": ["onnxruntime:thread=2"]}, "runtime onnxruntime has no option 'thread' (did you mean"),
    ],
)
def test_benchmark_section_is_checked_at_load(section: dict, message: str) -> None:
    raw = {"model": "small_cnn_half", "data": "digits", "steps": ["evaluate"], "benchmark": section}
    with pytest.raises(RecipeError) as e:
        parse_recipe(raw)
    assert message in str(e.value)


def test_benchmark_threads_auto_means_the_runtime_default() -> None:
    raw = {"model": "small_cnn_half", "data": "digits", "steps": ["evaluate"]}
    assert parse_recipe(raw | {"benchmark": {"threads": "auto"}}).benchmark.threads == "auto"  # type: ignore[union-attr]
    assert parse_recipe(raw | {"benchmark": {"threads": 2, "runtimes": ["torch:channels_last"]}}).benchmark is not None
