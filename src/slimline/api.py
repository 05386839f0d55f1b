"""The Python API that the CLI wraps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError
from torch import nn

from slimline.artifact import ARTIFACT_JSON, Artifact
from slimline.context import DataBundle, RunContext
from slimline.data import ArrayDataset, is_factory, load_dataset, load_factory
from slimline.data.arrays import NamedSamples, is_arrays_path, load_arrays
from slimline.data.audio import is_audio_path
from slimline.data.preprocess import Preprocess, parse_preprocess, recorded_preprocess
from slimline.data.text import is_text_path
from slimline.errors import RecipeError, SlimlineError
from slimline.evaluate import accuracy_metrics, evaluate_artifact, evaluate_named, fidelity, predict_logits
from slimline.models import factories_named, load_model, load_onnx, trusted_factories
from slimline.pipeline import apply_stage, run_recipe
from slimline.recipe import DataConfig, Recipe, format_errors, load_recipe, named_factories, parse_recipe
from slimline.signature import artifact_signature
from slimline.steps import get_step
from slimline.tasks import get_task
from slimline.tasks.classification import signature_scores
from slimline.tasks.detection import evaluate_detector, is_photo_folder, load_photos
from slimline.train import seed_everything


def open_model(model: str | Path, weights: str | Path | None = None, **kwargs: Any) -> nn.Module | Artifact:
    """A zoo name / ``module:factory`` (-> nn.Module), an artifact folder or a .onnx file (-> Artifact)."""
    p = Path(str(model))
    if p.is_dir():
        if not (p / ARTIFACT_JSON).exists():
            raise SlimlineError(f"{p} is a folder but not a slimline artifact (no {ARTIFACT_JSON})")
        return Artifact.load(p)
    if str(model).endswith(".onnx"):
        load_onnx(p)
        return Artifact("onnx", p.parent, {"model": p.name}, {}, [])
    if str(model).endswith((".xml",)):
        return Artifact("openvino", p.parent, {"model": p.name, "weights": p.with_suffix(".bin").name}, {}, [])
    return load_model(str(model), weights, **kwargs)


def evaluate_model(
    model: str | Path | nn.Module | Artifact,
    data: str | ArrayDataset | NamedSamples,
    split: str = "test",
    weights: str | Path | None = None,
    reference: str | Path | nn.Module | Artifact | None = None,
    reference_weights: str | Path | None = None,
    runtime: str | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    trust_code: bool = False,
    preprocess: Preprocess | dict[str, Any] | str | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 (with sample size and 95% interval) and, with ``reference``, fidelity.

    ``data`` may also be a ``package.module:function`` data factory (returning an ArrayDataset or NamedSamples);
    ``preprocess`` declares how imagefolder's images become inputs (the one in force is returned under
    ``preprocess``); ``metric`` is a user's ``package.module:function`` scoring the outputs against the labels
    (see :mod:`slimline.tasks.metric`), whose figures join the result.

    ``data`` may be named arrays (a ``.npz``/``.npy`` path, a folder of them, or :class:`NamedSamples`): any
    ONNX/OpenVINO model then runs with every input fed by name, and the result holds ``fidelity`` per output
    against ``reference``, and top-1/top-5 when the arrays have ``labels`` and the model one [batch, classes]
    output. A model whose outputs are not one [batch, classes] array (a detector) gets the same per-output
    fidelity on an image dataset.

    An artifact folder that names a ``module:factory`` is rebuilt only when ``model``/``reference``
    names that factory too, or with ``trust_code=True``; ``download=True`` may fetch the dataset.
    """
    with trusted_factories(*factories_named([model, reference]), trust_code=trust_code):
        return _evaluate_model(
            model,
            data,
            split,
            weights,
            reference,
            reference_weights,
            runtime,
            limit,
            data_dir,
            download,
            parse_preprocess(preprocess),
            metric,
        )


def _evaluate_model(
    model: str | Path | nn.Module | Artifact,
    data: str | ArrayDataset | NamedSamples,
    split: str,
    weights: str | Path | None,
    reference: str | Path | nn.Module | Artifact | None,
    reference_weights: str | Path | None,
    runtime: str | None,
    limit: int | None,
    data_dir: str | Path | None,
    download: bool,
    preprocess: Preprocess | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    if isinstance(data, str | Path) and is_text_path(data):
        raise SlimlineError(
            f"{data} is a text file, and slimline has no tokenizer to feed texts to a model yet; "
            "give the token ids as named arrays (-d tokens.npz, one array per input name)"
        )
    if metric == "detection" and isinstance(data, str | Path) and is_photo_folder(data):
        m = open_model(model, weights) if isinstance(model, str | Path) else model
        r = open_model(reference, reference_weights) if isinstance(reference, str | Path) else reference
        return _evaluate_detection(m, Path(str(data)), r, runtime, preprocess, limit)
    if preprocess is None and data == "imagefolder":
        preprocess = model_preprocess(model)
    samples: NamedSamples | None = None
    ds: ArrayDataset | None = None
    if isinstance(data, NamedSamples) or (isinstance(data, str | Path) and is_arrays_path(data)):
        audio = not isinstance(data, NamedSamples) and is_audio_path(data)  # read once the model is open
        samples = data if isinstance(data, NamedSamples) else None if audio else load_arrays(data)
    elif isinstance(data, str) and is_factory(data):
        if preprocess is not None:
            raise SlimlineError(
                f"preprocess applies to image files (imagefolder); data factory {data} "
                "preprocesses its own samples: leave --preprocess out"
            )
        got = load_factory(data, None, split)
        samples, ds = (got, None) if isinstance(got, NamedSamples) else (None, got.take(limit))
    else:
        ds = (
            data
            if isinstance(data, ArrayDataset)
            else load_dataset(str(data), split, data_dir, limit, download=download, preprocess=preprocess)
        )
    task = get_task(metric) if metric is not None else None  # a typo in --metric fails before any inference
    m = open_model(model, weights) if isinstance(model, str | Path) else model
    r = None
    if reference is not None:
        r = open_model(reference, reference_weights) if isinstance(reference, str | Path) else reference
    if samples is None and isinstance(data, str | Path) and is_audio_path(data):  # framed to the model's input size
        samples = load_arrays(data, artifact_signature(m) if isinstance(m, Artifact) else None)
    if samples is not None:
        return _evaluate_named_model(m, samples.take(limit), r, runtime, metric)
    assert ds is not None
    shown = {"preprocess": ds.spec.preprocess.to_dict()} if ds.spec.preprocess is not None else {}
    if isinstance(m, Artifact) and (task is not None or not signature_scores(artifact_signature(m))):
        sig = artifact_signature(m)
        if len(sig.inputs) != 1:
            raise SlimlineError(
                f"the model has inputs {', '.join(sig.input_names)} but {ds.spec.name} feeds one; "
                "give named arrays: -d data.npz (one array per input name)"
            )
        return (
            _evaluate_named_model(
                m, NamedSamples({sig.inputs[0].name: ds.inputs()}, ds.y, ds.spec.name), r, runtime, metric
            )
            | shown
        )
    ref_logits = None
    if r is not None:
        ref_logits = predict_logits(r, ds) if isinstance(r, nn.Module) else evaluate_artifact(r, ds, return_logits=True)
    if isinstance(m, nn.Module):
        logits = predict_logits(m, ds)
        out = accuracy_metrics(logits, ds.y)
        if ref_logits is not None:
            out.update(fidelity(logits, ref_logits))
        if task is not None:
            out.update(task.metric({"output": logits}, ds.y))
        return out | {"runtime": "torch"} | shown
    return evaluate_artifact(m, ds, runtime=runtime, reference=ref_logits) | shown


def model_preprocess(model: Any) -> Preprocess | None:
    """The preprocessing an artifact (or artifact folder) records in its data spec: imagefolder feeds the model
    the way it was made unless told otherwise."""
    art = model if isinstance(model, Artifact) else None
    if isinstance(model, str | Path) and (Path(str(model)) / ARTIFACT_JSON).is_file():
        art = Artifact.load(Path(str(model)))
    return recorded_preprocess(art.meta) if art is not None else None


def _detector_runner(m: nn.Module | Artifact, runtime: str | None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """One image batch -> a detector's outputs by name (a PyTorch module's as output0, output1...)."""
    if isinstance(m, nn.Module):
        import torch

        module = m.eval()

        def run_torch(x: np.ndarray) -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = module(torch.from_numpy(x))
            outs = out if isinstance(out, list | tuple) else [out]
            return {f"output{i}": o.detach().cpu().numpy() for i, o in enumerate(outs)}

        return run_torch
    from slimline.runtimes import default_runtime, open_session

    session = open_session(m, runtime or default_runtime(m))
    name = (session.signature or artifact_signature(m)).inputs[0].name
    return lambda x: dict(session.run_named({name: x}))


def _evaluate_detection(
    m: nn.Module | Artifact,
    folder: Path,
    reference: nn.Module | Artifact | None,
    runtime: str | None,
    preprocess: Preprocess | None,
    limit: int | None,
) -> dict[str, Any]:
    """A detector on a folder of photos letterboxed to its input size: mAP with labels, fidelity with a
    reference (:func:`slimline.tasks.detection.evaluate_detector`)."""
    size: tuple[int, int] | None = None
    if preprocess is not None and isinstance(preprocess.resize, tuple):
        size = preprocess.resize
    elif isinstance(m, Artifact):
        shape = artifact_signature(m).inputs[0].shape
        if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
            size = (int(shape[2]), int(shape[3]))
    if size is None:
        raise SlimlineError(
            "the detector's input size is not fixed; give it: --preprocess '{resize: [640, 640], letterbox: true}'"
        )
    from slimline.runtimes import default_runtime

    photos = load_photos(folder, size, limit)
    ref = _detector_runner(reference, None) if reference is not None else None
    out = evaluate_detector(_detector_runner(m, runtime), photos, ref)
    return out | {"runtime": "torch" if isinstance(m, nn.Module) else runtime or default_runtime(m), "size": size}


def _evaluate_named_model(
    m: nn.Module | Artifact,
    samples: NamedSamples,
    reference: nn.Module | Artifact | None,
    runtime: str | None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Any ONNX/OpenVINO model (or artifact) on named arrays, by :func:`slimline.evaluate.evaluate_named`."""
    from slimline.runtimes import default_runtime, open_session

    if isinstance(m, nn.Module) or isinstance(reference, nn.Module):
        raise SlimlineError(
            "named arrays run ONNX/OpenVINO models and artifact folders; export the PyTorch model "
            "first (slimline export) and evaluate that"
        )
    name = runtime or default_runtime(m)
    session = open_session(m, name)
    samples = samples.conform(session.signature or artifact_signature(m))
    ref = open_session(reference, default_runtime(reference)) if reference is not None else None
    return evaluate_named(session, samples, ref, metric) | {"runtime": name}


def run(
    recipe: str | Path | dict[str, Any] | Recipe, output_dir: str | Path | None = None, trust_code: bool = False
) -> dict[str, Any]:
    """Run a recipe (a YAML path, a dict, or a Recipe) and return its results.

    The artifacts may rebuild the factories the recipe names; ``trust_code=True`` also lets artifacts
    the recipe reads (a distill teacher's folder...) import the code their model.json names.
    """
    if isinstance(recipe, Recipe):
        r = recipe
    elif isinstance(recipe, dict):
        r = parse_recipe(recipe)
    else:
        r = load_recipe(recipe)
    with trusted_factories(trust_code=trust_code):
        return run_recipe(r, output_dir)


def apply_step(
    step_name: str,
    artifact: str | Path | Artifact,
    output_dir: str | Path,
    data: str | dict[str, Any] | DataConfig | None = None,
    *,
    seed: int = 0,
    trust_code: bool = False,
    **options: Any,
) -> Artifact:
    """Apply one recipe step to one artifact, as a run does; returns the artifact it wrote in ``output_dir``
    (``artifact`` itself when the step passes it through, e.g. ``evaluate``).

    ``artifact``: an artifact folder, a .onnx/.xml file or an :class:`Artifact`. ``options``: the step's options,
    validated by its ``Config`` (``apply_step("fuse", "runs/r/01_train", "out/fuse", layout="nchw")``). ``data``: a
    dataset name or a recipe's ``data:`` mapping, for the steps that read data (train, prune, quantize...).
    ``output_dir`` also gets the step's ``record.json``; the new artifact's lineage is ``artifact``'s plus that
    record. There is no run baseline: ``distill`` needs ``teacher=``, ``evaluate`` reports no fidelity.
    """
    step_cls = get_step(step_name)
    try:
        config = step_cls.Config.model_validate(options)
    except ValidationError as e:
        raise RecipeError(f"step {step_name!r}: {format_errors(e)}") from None
    src = artifact if isinstance(artifact, Artifact) else _open_artifact(artifact)
    out_dir = Path(output_dir)
    ctx = RunContext(
        run_dir=out_dir.parent, data=DataBundle(_data_config(data), seed), seed=seed, out_dir=out_dir, artifacts=[src]
    )
    step = step_cls(config)
    fix = f"give it a {' or '.join(step.accepts)} artifact instead"
    with trusted_factories(*named_factories(config.model_dump(mode="json")), trust_code=trust_code):
        seed_everything(seed)
        made, _ = apply_stage(step, src, ctx, fix, where=str(src.path))
    return made if made is not None else src


def _open_artifact(source: str | Path) -> Artifact:
    """An artifact folder or a .onnx/.xml file as an Artifact (never a zoo name: save or export that first)."""
    p = Path(source)
    if not p.exists():
        raise SlimlineError(f"{p} does not exist; give an artifact folder or a .onnx/.xml file")
    if p.is_dir() or p.suffix in (".onnx", ".xml"):
        opened = open_model(p)
        assert isinstance(opened, Artifact)
        return opened
    raise SlimlineError(
        f"{source} is not an artifact folder nor a .onnx/.xml file; save the model first (slimline.save_torch)"
    )


def _data_config(data: str | dict[str, Any] | DataConfig | None) -> DataConfig | None:
    if data is None or isinstance(data, DataConfig):
        return data
    try:
        return DataConfig.model_validate({"name": data} if isinstance(data, str) else data)
    except ValidationError as e:
        raise RecipeError(f"data: {format_errors(e)}") from None


def demo_recipe(quick: bool = False) -> dict[str, Any]:
    """The demo's recipe (``src/slimline/recipes/demo.yaml``; ``quick`` uses a data slice)."""
    name = "demo_quick.yaml" if quick else "demo.yaml"
    return yaml.safe_load((Path(__file__).parent / "recipes" / name).read_text())
