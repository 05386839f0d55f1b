"""Run a recipe: load the model and data, apply the steps in order, save every stage."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

from slimline.artifact import ARTIFACT_JSON, Artifact, ArtifactWriter, model_signature, save_torch
from slimline.context import DataBundle, RunContext  # also re-exported: older code imports them from here
from slimline.data import DataSpec
from slimline.environment import environment
from slimline.errors import Interrupted, ModelError, SlimlineError
from slimline.fileio import write_json
from slimline.models import load_model, load_onnx
from slimline.progress import console
from slimline.recipe import ModelSpec, Recipe, trusts_own_factories
from slimline.runlock import remove_leftovers, run_lock
from slimline.signature import Signature
from slimline.steps import Step, get_step
from slimline.train import seed_everything

RESULTS_JSON = "results.json"


def model_meta(spec: DataSpec, model_name: str) -> dict[str, Any]:
    return {
        "model": model_name,
        "data": spec.to_dict(),
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
    }


def make_baseline(model: ModelSpec, spec: DataSpec, dest: Path) -> Artifact:
    """The run's first artifact: the user's model as given (PyTorch or ONNX), with its signature in
    ``meta["signature"]``: an ONNX file's own; a PyTorch model's ``slimline_signature`` when it declares one, else
    the image classifier's from the data spec."""
    meta = model_meta(spec, model.name)
    record = {"step": "baseline", "model": model.name, "weights": model.weights}
    if model.name.endswith(".onnx"):
        proto = load_onnx(model.name)
        check_onnx_input(proto, spec, model.name)
        meta["signature"] = Signature.from_onnx(proto).to_dict()
        with ArtifactWriter(dest, "onnx", meta, [record]) as w:
            shutil.copyfile(model.name, w.add("model", "model.onnx"))
        assert w.artifact is not None
        return w.artifact
    kwargs = dict(model.kwargs)
    net = load_model(model.name, model.weights, **kwargs)
    sig = model_signature(net, spec.input_shape, spec.num_classes)
    if sig is not None:
        meta["signature"] = sig
    if sig is None or Signature.from_dict(sig).inputs == Signature.classifier(spec.input_shape).inputs:
        check_input_fits(net, spec, model.name)
    return save_torch(net, dest, meta, [record])


def _shape_text(spec: DataSpec) -> str:
    return f"dataset {spec.name} gives {spec.input_shape[0]} (input shape {tuple(spec.input_shape)})"


def check_input_fits(net: Any, spec: DataSpec, name: str) -> None:
    """Run one zero sample of the data's shape through ``net``; a mismatch becomes one line naming both sides."""
    import torch

    c = spec.input_shape[0]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *spec.input_shape))
    except Exception as e:  # noqa: BLE001 - a model may fail in any way on a shape it was not made for
        first_conv = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
        if first_conv is not None and first_conv.in_channels != c:
            raise ModelError(
                f"model {name} expects {first_conv.in_channels} input channel(s) but {_shape_text(spec)}; "
                f"use a model made for {c} channel(s) (e.g. model kwargs in_channels: {c}, where the model takes it) "
                "or another dataset"
            ) from e
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"model {name} cannot run on the input of dataset {spec.name} (shape {tuple(spec.input_shape)}): {first}; "
            "use a model made for this input or another dataset"
        ) from e
    finally:
        net.train(was_training)


def check_onnx_input(proto: Any, spec: DataSpec, name: str) -> None:
    """Compare the ONNX graph's first input's static dimensions (after the batch) with the data's input shape."""
    weights = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if not inputs:
        return
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    want = tuple(spec.input_shape)
    if len(dims) != len(want) + 1:
        raise ModelError(
            f"model {name} takes a {len(dims)}-D input but {_shape_text(spec)}, i.e. batch x {len(want)} dimensions; "
            "use a model made for this input or another dataset"
        )
    if dims[1] and dims[1] != want[0]:
        raise ModelError(
            f"model {name} expects {dims[1]} input channel(s) but {_shape_text(spec)}; "
            f"use a model made for {want[0]} channel(s) or another dataset"
        )
    if any(d and d != w for d, w in zip(dims[1:], want, strict=True)):
        raise ModelError(
            f"model {name} expects input {tuple(dims[1:])} but {_shape_text(spec)}; "
            "export the model for this input size or use another dataset"
        )


def _find_stage(artifacts: list[Artifact], name: str) -> Artifact:
    """The latest artifact whose folder is ``name`` or whose step is ``name``."""
    for a in reversed(artifacts):
        if a.path.name == name or a.path.name.partition("_")[2] == name:
            return a
    have = ", ".join(a.path.name for a in artifacts)
    raise SlimlineError(f"input: no earlier stage named {name!r} (stages so far: {have})")


def apply_stage(
    step: Step[Any], src: Artifact, ctx: RunContext, fix: str, *, where: str | None = None, index: int | None = None
) -> tuple[Artifact | None, dict[str, Any]]:
    """Apply ``step`` to ``src`` into ``ctx.out_dir`` as a run does: check that it takes ``src``'s kind (``where``
    names ``src``, default its folder; ``fix`` says what to give instead), write its ``record.json``, give a new
    artifact ``src``'s lineage plus the record and add it to ``ctx.artifacts``.

    Returns the new artifact (None: ``src`` passes through unchanged) and the record.
    """
    step.check_kind(src, where or src.path.name, fix)
    t0 = time.perf_counter()
    out = step.apply(src, ctx)
    record = {
        "step": step.name,
        **({"index": index} if index is not None else {}),
        "config": step.config.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - t0, 3),
        "input": src.path.name,
        **out.record,
    }
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.out_dir / "record.json", record)
    if out.artifact is not None:
        out.artifact.lineage = [*src.lineage, record]
        write_json(out.artifact.path / ARTIFACT_JSON, out.artifact.to_json())
        ctx.artifacts.append(out.artifact)
    ctx.records.append(record)
    return out.artifact, record


def _kind_fix(step: Step[Any], artifacts: list[Artifact]) -> str:
    """What a recipe gives ``step`` instead of an artifact of a kind it does not take: the latest stage it takes."""
    kinds = " or ".join(step.accepts)
    fits = [a for a in artifacts if a.kind in step.accepts]
    if not fits:
        return f"no stage of this run is {kinds}: start the recipe from a {kinds} model"
    name = fits[-1].path.name
    short = name.partition("_")[2]
    if _find_stage(artifacts, short) is fits[-1]:  # the step name alone finds it
        name = short
    return f"give it input: {name}" + (f" (or an earlier {kinds} stage)" if len(fits) > 1 else "")


@trusts_own_factories
def run_recipe(recipe: Recipe, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every step of ``recipe``; returns (and writes) the run's results.json content.

    The run folder is locked for the whole run (a second run into it fails at once), and what an
    interrupted run left there (staging folders, ``.old``/``.tmp`` files) is removed first.
    """
    run_dir = Path(output_dir or recipe.output_dir)
    with run_lock(run_dir):
        removed = remove_leftovers(run_dir)
        if removed:
            console.print(f"removed {removed} leftover temporary file(s)/folder(s) of an interrupted run in {run_dir}")
        return _run_locked(recipe, run_dir)


def _run_locked(recipe: Recipe, run_dir: Path) -> dict[str, Any]:
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
    seed_everything(recipe.seed)  # a model built without weights starts the same on every rerun (resumable)
    art = make_baseline(recipe.model, data.spec, run_dir / "00_baseline")
    ctx.baseline = art
    ctx.artifacts.append(art)
    results["stages"].append({"index": 0, "step": "baseline", "artifact": art.path.name, "record": art.lineage[-1]})
    for i, spec in enumerate(recipe.steps, start=1):
        step = get_step(spec.name)(spec.config)
        ctx.out_dir = run_dir / f"{i:02d}_{spec.name}"
        console.print(f"[bold]step {i}/{len(recipe.steps)}[/] {spec.name}")
        try:
            src = _find_stage(ctx.artifacts, spec.input) if spec.input is not None else art
            made, record = apply_stage(step, src, ctx, _kind_fix(step, ctx.artifacts), index=i)
        except SlimlineError:
            write_json(run_dir / RESULTS_JSON, results | {"failed_step": f"{i:02d}_{spec.name}"})
            raise
        except KeyboardInterrupt as e:
            write_json(run_dir / RESULTS_JSON, results | {"interrupted_step": f"{i:02d}_{spec.name}"})
            kept = ", ".join(a.path.name for a in ctx.artifacts)
            raise Interrupted(
                getattr(e, "signum", signal.SIGINT),
                f"stopped during step {i} ({spec.name}); kept in {run_dir}: {kept}. Run the same command again "
                "to resume: a training step continues from its last finished epoch",
            ) from None
        if made is not None:
            art = made
        results["stages"].append(
            {"index": i, "step": spec.name, "artifact": made.path.name if made else None, "record": record}
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
