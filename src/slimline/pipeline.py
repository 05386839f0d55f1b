"""Run a recipe: load the model and data, apply the steps in order, save every stage."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from slimline.artifact import Artifact, ArtifactWriter, save_torch
from slimline.data import ArrayDataset, DataSpec, load_dataset
from slimline.environment import environment
from slimline.errors import SlimlineError
from slimline.fileio import write_json
from slimline.models import load_model, load_onnx
from slimline.progress import console
from slimline.recipe import DataConfig, ModelSpec, Recipe, trusts_own_factories
from slimline.steps import get_step

RESULTS_JSON = "results.json"


@dataclass
class DataBundle:
    """The splits a run uses. Steps train, calibrate and choose settings on ``train``/``val`` only."""

    config: DataConfig
    seed: int = 0

    @cached_property
    def train_full(self) -> ArrayDataset:
        return load_dataset(
            self.config.name, "train", self.config.data_dir, self.config.train_limit, download=self.config.download
        )

    @cached_property
    def _split(self) -> tuple[ArrayDataset, ArrayDataset]:
        return self.train_full.split_off(self.config.val_size, seed=self.seed)

    @property
    def train(self) -> ArrayDataset:
        return self._split[0]

    @property
    def val(self) -> ArrayDataset:
        return self._split[1]

    @cached_property
    def test(self) -> ArrayDataset:
        return load_dataset(
            self.config.name, "test", self.config.data_dir, self.config.test_limit, download=self.config.download
        )

    def calibration(self, n: int = 300) -> ArrayDataset:
        """A seeded sample of the training part (never the test split)."""
        return self.train.sample(n, seed=self.seed)

    @property
    def spec(self) -> DataSpec:
        return self.train_full.spec


@dataclass
class RunContext:
    run_dir: Path
    data: DataBundle
    seed: int = 0
    out_dir: Path = Path(".")
    baseline: Artifact | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def save_model(self, model: Any, source: Artifact) -> Artifact:
        """Save a PyTorch model as this step's artifact, carrying ``source``'s meta and lineage."""
        return save_torch(model, self.out_dir, source.meta, source.lineage)


def model_meta(spec: DataSpec, model_name: str) -> dict[str, Any]:
    return {
        "model": model_name,
        "data": spec.to_dict(),
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
    }


def make_baseline(model: ModelSpec, spec: DataSpec, dest: Path) -> Artifact:
    """The run's first artifact: the user's model as given (PyTorch or ONNX)."""
    meta = model_meta(spec, model.name)
    record = {"step": "baseline", "model": model.name, "weights": model.weights}
    if model.name.endswith(".onnx"):
        load_onnx(model.name)
        with ArtifactWriter(dest, "onnx", meta, [record]) as w:
            shutil.copyfile(model.name, w.add("model", "model.onnx"))
        assert w.artifact is not None
        return w.artifact
    kwargs = dict(model.kwargs)
    net = load_model(model.name, model.weights, **kwargs)
    return save_torch(net, dest, meta, [record])


def _find_stage(artifacts: list[Artifact], name: str) -> Artifact:
    """The latest artifact whose folder is ``name`` or whose step is ``name``."""
    for a in reversed(artifacts):
        if a.path.name == name or a.path.name.partition("_")[2] == name:
            return a
    have = ", ".join(a.path.name for a in artifacts)
    raise SlimlineError(f"input: no earlier stage named {name!r} (stages so far: {have})")


@trusts_own_factories
def run_recipe(recipe: Recipe, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every step of ``recipe``; returns (and writes) the run's results.json content."""
    run_dir = Path(output_dir or recipe.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = DataBundle(recipe.data, recipe.seed)
    ctx = RunContext(run_dir=run_dir, data=data, seed=recipe.seed)
    results: dict[str, Any] = {
        "recipe": recipe.model_dump(mode="json", exclude={"steps"})
        | {
            "steps": [
                {s.name: s.config.model_dump(mode="json") | ({"input": s.input} if s.input else {})}
                for s in recipe.steps
            ]
        },
        "environment": environment(),
        "stages": [],
    }
    write_json(run_dir / "recipe.json", results["recipe"])
    console.print(f"[bold]slimline[/] run [cyan]{recipe.name}[/] -> {run_dir}")
    art = make_baseline(recipe.model, data.spec, run_dir / "00_baseline")
    ctx.baseline = art
    ctx.artifacts.append(art)
    results["stages"].append({"index": 0, "step": "baseline", "artifact": art.path.name, "record": art.lineage[-1]})
    for i, spec in enumerate(recipe.steps, start=1):
        step = get_step(spec.name)(spec.config)
        ctx.out_dir = run_dir / f"{i:02d}_{spec.name}"
        console.print(f"[bold]step {i}/{len(recipe.steps)}[/] {spec.name}")
        t0 = time.perf_counter()
        try:
            src = _find_stage(ctx.artifacts, spec.input) if spec.input is not None else art
            out = step.apply(src, ctx)
        except SlimlineError:
            write_json(run_dir / RESULTS_JSON, results | {"failed_step": f"{i:02d}_{spec.name}"})
            raise
        record = {
            "step": spec.name,
            "index": i,
            "config": spec.config.model_dump(mode="json"),
            "seconds": round(time.perf_counter() - t0, 3),
            "input": src.path.name,
            **out.record,
        }
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(ctx.out_dir / "record.json", record)
        if out.artifact is not None:
            out.artifact.lineage = [*src.lineage, record]
            write_json(out.artifact.path / "artifact.json", out.artifact.to_json())
            art = out.artifact
            ctx.artifacts.append(art)
        ctx.records.append(record)
        results["stages"].append(
            {"index": i, "step": spec.name, "artifact": art.path.name if out.artifact else None, "record": record}
        )
        write_json(run_dir / RESULTS_JSON, results)
    results["final_artifact"] = art.path.name
    if recipe.benchmark is not None:
        from slimline.bench import bench_run

        results["benchmark"] = bench_run(ctx, recipe.benchmark)
    write_json(run_dir / RESULTS_JSON, results)
    from slimline.report import write_report  # reads the results.json written just above

    results["report"] = str(write_report(run_dir))
    write_json(run_dir / RESULTS_JSON, results)
    return results
