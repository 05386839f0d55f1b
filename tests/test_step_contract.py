"""The contract of every registered step, quantization backend and runtime (cheap: no model is built or run),
and the import order that keeps ``recipe -> steps -> context`` free of cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from slimline.artifact import Artifact
from slimline.errors import RecipeError
from slimline.quant.backends import BACKENDS, QuantBackend, backend_names
from slimline.runtimes import Runtime, get_runtime, runtime_names
from slimline.steps import Step, StepConfig, get_step, step_names
from slimline.steps.base import ARTIFACT_KINDS


def test_context_imports_neither_recipe_nor_pipeline_nor_steps() -> None:
    code = (
        "import sys, slimline.context; "
        "print(' '.join(m for m in ('slimline.pipeline', 'slimline.recipe', 'slimline.steps') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing slimline.context also imported {out}"


def test_steps_import_before_the_pipeline() -> None:
    """Every step module imports in a fresh interpreter without slimline.pipeline (no recipe/pipeline cycle)."""
    code = "import sys, slimline.steps as s; s.step_names(); print('slimline.pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_pipeline_still_exports_the_context() -> None:
    from slimline import context, pipeline

    assert pipeline.RunContext is context.RunContext and pipeline.DataBundle is context.DataBundle


@pytest.mark.parametrize("name", step_names())
def test_step_contract(name: str) -> None:
    cls = get_step(name)
    assert issubclass(cls, Step) and cls.name == name
    assert cls.__doc__ and cls.__doc__.strip(), f"step {name} has no docstring"
    assert cls.accepts and set(cls.accepts) <= set(ARTIFACT_KINDS), f"step {name} accepts {cls.accepts!r}"
    assert len(set(cls.accepts)) == len(cls.accepts)
    assert isinstance(cls.Config, type) and issubclass(cls.Config, StepConfig)
    schema = cls.Config.model_json_schema()
    assert schema["type"] == "object"
    props = schema.get("properties", {})
    try:
        empty = cls.Config.model_validate({})
    except ValidationError as e:  # {} is not enough: each error must say which option to give
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "missing":
                assert props[field].get("description"), f"step {name}: required {field!r} is undocumented"
            else:  # a rule over several options (prune: a target or a ratio) names them in its message
                assert any(p in err["msg"] for p in props), f"step {name}: {err['msg']!r} names no option"
    else:
        assert cls().config == empty  # the default config is the validated empty mapping
    with pytest.raises(ValidationError):  # unknown options are errors (a typo never silently does nothing)
        cls.Config.model_validate({"no_such_option_": 1})


@pytest.mark.parametrize("name", step_names())
def test_a_step_refuses_the_kinds_it_does_not_take(name: str, tmp_path: Path) -> None:
    cls = get_step(name)
    step = cls.__new__(cls)  # no config needed to check a kind
    for kind in ARTIFACT_KINDS:
        art = Artifact(kind, tmp_path / f"01_{kind}", {}, {}, [])
        if kind in cls.accepts:
            step.check_kind(art, art.path.name, "unused")
        else:
            with pytest.raises(RecipeError) as e:
                step.check_kind(art, art.path.name, "give it input: b")
            kinds = " or ".join(cls.accepts)
            assert str(e.value) == f"step {name!r} takes {kinds} artifacts; 01_{kind} is {kind}: give it input: b"


@pytest.mark.parametrize("name", backend_names())
def test_quantization_backend_contract(name: str) -> None:
    cls = BACKENDS.get(name)
    assert issubclass(cls, QuantBackend) and cls.name == name
    assert cls.kind in ARTIFACT_KINDS
    assert cls.calibration_methods and all(isinstance(m, str) for m in cls.calibration_methods)
    assert cls.formats and "native" in cls.formats
    ok, why = cls.available()
    assert isinstance(ok, bool) and isinstance(why, str) and (ok or why), f"{name}: unusable without a reason"
    assert callable(cls.check) and callable(cls.quantize) and callable(cls.write)


@pytest.mark.parametrize("name", runtime_names())
def test_runtime_contract(name: str) -> None:
    cls = get_runtime(name)
    assert issubclass(cls, Runtime) and cls.name == name
    assert cls.kinds and set(cls.kinds) <= set(ARTIFACT_KINDS), f"runtime {name} runs {cls.kinds!r}"
    ok, why = cls.available()
    assert isinstance(ok, bool) and isinstance(why, str) and (ok or why), f"{name}: unusable without a reason"
    assert callable(cls.load)


def test_every_artifact_kind_has_a_step_and_a_runtime() -> None:
    for kind in ARTIFACT_KINDS:
        assert any(kind in get_step(n).accepts for n in step_names()), kind
        assert any(kind in get_runtime(n).kinds for n in runtime_names()), kind
