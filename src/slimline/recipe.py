"""The recipe schema: YAML validated by pydantic, with errors that give the field path."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimline.bench.settings import BenchSettings
from slimline.errors import RecipeError, SlimlineError
from slimline.steps import StepConfig, get_step, step_names


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="zoo name, 'package.module:factory', or a .onnx file")
    weights: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="dataset name (slimline list datasets)")
    factory: str | None = Field(None, description="'package.module:function' returning an ArrayDataset")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    preprocess: dict[str, Any] | None = Field(
        None,
        description="imagefolder: how images become inputs (resize, center_crop, letterbox, scale, mean, std, "
        "layout, channels); see slimline.data.preprocess",
    )
    data_dir: str | None = None
    val_size: float | int = Field(0.1, description="validation slice of the training split (fraction or count)")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training samples")
    test_limit: int | None = Field(None, ge=1, description="use only the first N test samples")
    download: bool = Field(False, description="download the dataset when it is not found locally")

    @field_validator("preprocess")
    @classmethod
    def _preprocess(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from slimline.data.preprocess import Preprocess

        try:
            return None if v is None else Preprocess.from_dict(v).to_dict()
        except SlimlineError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.name is None) == (self.factory is None):
            raise ValueError("give a dataset name or a factory ('package.module:function'), one of the two")
        if self.factory is not None and not _FACTORY.match(self.factory):
            raise ValueError(f"factory {self.factory!r} must be written 'package.module:function'")
        if self.kwargs and self.factory is None:
            raise ValueError("kwargs are for a factory; a named dataset takes none")
        return self

    @property
    def source(self) -> str:
        """The dataset name, or the factory."""
        return self.factory or self.name or ""

    def load(self, split: str, limit: int | None) -> Any:
        """``split`` of this data (an :class:`slimline.data.ArrayDataset`), first ``limit`` samples."""
        from slimline.data import load_dataset

        return load_dataset(
            self.source,
            split,
            self.data_dir,
            limit,
            download=self.download,
            preprocess=self.preprocess,
            kwargs=self.kwargs,
        )


class BenchmarkConfig(BenchSettings):
    """A recipe's ``benchmark:`` section: the measuring settings of ``slimline bench`` plus what to measure."""

    runtimes: list[str] = Field(default_factory=lambda: ["torch", "onnxruntime"], min_length=1)
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 64], min_length=1)
    artifacts: list[str] | None = Field(None, description="step folders to bench (default: every artifact)")

    @field_validator("runtimes")
    @classmethod
    def _runtimes(cls, v: list[str]) -> list[str]:
        from slimline.runtimes import validate_runtime_spec

        for text in v:
            try:
                validate_runtime_spec(text)
            except SlimlineError as e:
                raise ValueError(str(e)) from None
        return v


class StepSpec(BaseModel):
    """One validated step: its registered name and its parsed options."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str
    config: StepConfig
    input: str | None = None  # apply to an earlier stage's artifact (step name or folder), not the latest


class Recipe(BaseModel):
    """A recipe: the model, its data, the steps that turn one artifact into the next, and how to benchmark."""

    model_config = ConfigDict(extra="forbid")
    name: str = "run"
    model: ModelSpec
    data: DataConfig
    steps: list[StepSpec]
    benchmark: BenchmarkConfig | None = None
    optimize: dict[str, Any] | None = Field(None, description="slimline optimize --recipe: the search's options")
    output_dir: str = "runs/run"
    seed: int = 0

    @field_validator("optimize")
    @classmethod
    def _optimize(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from slimline.search.study import search_options

        return None if v is None else search_options(v)

    @field_validator("model", mode="before")
    @classmethod
    def _model_str(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("data", mode="before")
    @classmethod
    def _data_str(cls, v: Any) -> Any:
        return ({"factory": v} if _FACTORY.match(v) else {"name": v}) if isinstance(v, str) else v

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("steps must be a list, e.g. [{train: {epochs: 3}}, {evaluate: {}}]")
        return [parse_step(item, i) for i, item in enumerate(v)]


def parse_step(item: Any, index: int) -> StepSpec:
    """``{train: {epochs: 3}}``, ``{step: train, epochs: 3}`` or ``"train"`` -> StepSpec.

    Every step also takes ``input: <earlier step name or folder>`` to branch from that stage's
    artifact instead of the latest one (e.g. quantize the fp32 ONNX export twice, for two backends).
    """
    if isinstance(item, StepSpec):
        return item
    if isinstance(item, str):
        name, options = item, {}
    elif isinstance(item, dict) and "step" in item:
        options = {k: v for k, v in item.items() if k != "step"}
        name = item["step"]
    elif isinstance(item, dict) and len(item) == 1:
        name, options = next(iter(item.items()))
        options = options or {}
    else:
        raise ValueError(f"steps[{index}]: write a step as {{name: {{options}}}}, got {item!r}")
    source = options.pop("input", None) if isinstance(options, dict) else None
    valid = step_names()
    if name not in valid:
        raise ValueError(f"steps[{index}]: unknown step {name!r}; valid steps: {', '.join(valid)}")
    step_cls = get_step(name)
    try:
        config = step_cls.Config.model_validate(options)
    except ValidationError as e:
        raise ValueError(format_errors(e, f"steps[{index}].{name}")) from None
    return StepSpec(name=name, config=config, input=source)


def format_errors(e: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one line: ``path: message`` per error, joined by "; "."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            msg = str(err["ctx"]["error"])
        lines.append(f"{path}: {msg}" if path else msg)
    return "; ".join(lines)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe YAML file (``overrides`` applied first); a one-line error names a bad field."""
    p = Path(path)
    if not p.exists():
        raise RecipeError(f"recipe {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"{p} must hold a mapping with model, data and steps")
    raw.update(overrides or {})
    return parse_recipe(raw, source=str(p))


def parse_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{source} is invalid: {format_errors(e)}") from None


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
F = TypeVar("F", bound=Callable[..., Any])


def named_factories(value: Any) -> list[str]:
    """Every ``package.module:factory`` string in ``value`` (a string, or dicts/lists of them, e.g. step options)."""
    if isinstance(value, str):
        return [value] if _FACTORY.match(value) else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [f for v in value for f in named_factories(v)]
    return []


def recipe_factories(recipe: Recipe) -> list[str]:
    """Every ``package.module:factory`` the recipe names (its model, its data factory, a distill teacher...)."""
    return named_factories(
        [recipe.model.name, recipe.data.source, *(s.config.model_dump(mode="json") for s in recipe.steps)]
    )


def trusts_own_factories(fn: F) -> F:
    """Decorate ``fn(recipe, ...)``: the artifacts it makes may rebuild the factories its recipe names."""

    @functools.wraps(fn)
    def wrapper(recipe: Recipe, *args: Any, **kwargs: Any) -> Any:
        from slimline.models import trusted_factories

        with trusted_factories(*recipe_factories(recipe)):
            return fn(recipe, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
