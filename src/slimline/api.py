"""The Python API that the CLI wraps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from slimline.data.text import is_text_source, load_text_source
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
from slimline.tasks.text import is_embedding_artifact, is_text_artifact, text_samples
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
    if isinstance(data, str | Path) and is_text_source(data):  # raw text: the artifact's tokenizer makes the inputs
        m = open_model(model, weights) if isinstance(model, str | Path) else model
        if not is_text_artifact(m):
            raise SlimlineError(
                f"{data} is raw text but {model} carries no tokenizer; give a text artifact (a model exported with "
                "its tokenizer: slimline.api.export_text_onnx) or token ids as named arrays (-d tokens.npz)"
            )
        assert isinstance(m, Artifact)
        texts = load_text_source(data, split)
        assert texts is not None
        r = open_model(reference, reference_weights) if isinstance(reference, str | Path) else reference
        fid_task = "text_embedding" if is_embedding_artifact(m) else "generic"
        return _evaluate_named_model(m, text_samples(m, texts.take(limit)), r, runtime, metric, fid_task)
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
    fidelity_task: str = "generic",
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
    return evaluate_named(session, samples, ref, metric, fidelity_task) | {"runtime": name}


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


# The public surface. Studies, examples and users import from here (``from slimline.api import X``) and from the
# top-level ``slimline``; anything else is internal and may change. Names below the functions of this module load
# lazily, so importing slimline.api pulls no optional extra (text, serve, dist, edge) until one of them is used.
_PUBLIC: dict[str, dict[str, str]] = {  # group -> name -> "module" or "module:attribute" ("module:": the module)
    "files and the machine": {
        "write_json": "slimline.fileio",
        "torch_save": "slimline.fileio",
        "environment": "slimline.environment",
    },
    "artifacts": {
        "ArtifactWriter": "slimline.artifact",
        "load_torch": "slimline.artifact",
        "save_torch": "slimline.artifact",
    },
    "models and data": {
        "count_macs": "slimline.models",
        "count_params": "slimline.models",
        "load_fortunes": "slimline.data.fortunes",
        "IMAGENET_MEAN": "slimline.models.efficientnet_lite",
        "IMAGENET_STD": "slimline.models.efficientnet_lite",
    },
    "evaluation": {
        "evaluate": "slimline.evaluate",
        "predict_named": "slimline.evaluate",
        "wilson_interval": "slimline.evaluate",
    },
    "training and distillation": {
        "TrainConfig": "slimline.train",
        "fit": "slimline.train",
        "distill": "slimline.distill",
    },
    "export": {
        "export_onnx": "slimline.onnx_export",
        "export_openvino": "slimline.openvino_export",
        "export_tflite_artifact": "slimline.tflite_export",
    },
    "quantization": {
        "FloatModel": "slimline.quant.backends",
        "QuantConfig": "slimline.quant.backends",
        "get_backend": "slimline.quant.backends",
        "write_quantized": "slimline.steps.quantize",
        "observer_table": "slimline.quant.numerics",
        "outlier_tensor": "slimline.quant.numerics",
    },
    "pruning": {
        "Plan": "slimline.prune.allocate",
        "remove_blocks": "slimline.prune.block",
        "prune_channels": "slimline.prune.channel",
        "replace_module": "slimline.prune.common",
        "FinetuneConfig": "slimline.prune.schedule",
        "MixedInputs": "slimline.prune.schedule",
        "apply_plan": "slimline.prune.schedule",
        "finetune": "slimline.prune.schedule",
        "recalibrate_bn": "slimline.prune.schedule",
        "DEFAULT_RATIOS": "slimline.prune.sensitivity",
        "sensitivity": "slimline.prune.sensitivity",
        "plot_sensitivity": "slimline.prune.sensitivity",
    },
    "runtimes": {
        "open_session": "slimline.runtimes",
        "availability": "slimline.runtimes",
        "disable_telemetry": "slimline.runtimes.openvino",
        "import_openvino": "slimline.runtimes.openvino",
    },
    "measuring": {
        "bench_artifacts": "slimline.bench",
        "measure": "slimline.bench",
        "BenchTarget": "slimline.bench.harness",
        "bench_targets": "slimline.bench.harness",
        "is_artifact_dir": "slimline.bench.harness",
        "worker_env": "slimline.bench.harness",
        "fp32_peak": "slimline.bench.peak",
        "onnx_macs": "slimline.bench.macs",
        "model_meta": "slimline.bench.targets",
        "prepare_model": "slimline.bench.targets",
        "tune": "slimline.optimize.tune",
        "alternate": "slimline.optimize.tune",
        "medians_ms": "slimline.optimize.tune",
        "predict": "slimline.optimize.predict",
    },
    "tasks": {
        "DetectionTask": "slimline.tasks.detection",
        "detection_fidelity": "slimline.tasks.detection",
        "letterbox": "slimline.tasks.detection",
        "log_mel": "slimline.tasks.speech",
        "run_stream": "slimline.tasks.speech",
        "embedding_fidelity": "slimline.tasks.text",
    },
    "text models ([text] extra)": {
        "hf_text": "slimline.models.hf_text:",
        "SentenceEmbedder": "slimline.models.hf_text",
        "allocate_keep": "slimline.models.hf_text",
        "ffn_sensitivity": "slimline.models.hf_text",
        "copy_text_files": "slimline.models.hf_text",
        "distill_embeddings": "slimline.models.hf_text",
        "encode_texts": "slimline.models.hf_text",
        "export_text_onnx": "slimline.models.hf_text",
        "load_artifact_tokenizer": "slimline.models.hf_text",
        "load_hf_encoder": "slimline.models.hf_text",
        "minilm_folder": "slimline.models.hf_text",
        "neuron_importance": "slimline.models.hf_text",
        "openvino_nncf_int8": "slimline.models.hf_text",
        "ort_dynamic_int8": "slimline.models.hf_text",
        "ort_transformer_optimize": "slimline.models.hf_text",
        "param_count": "slimline.models.hf_text",
        "prune_bert": "slimline.models.hf_text",
        "tokenize": "slimline.models.hf_text",
    },
    "serving and search ([serve], [dist] extras)": {
        "run_load": "slimline.loadtest",
        "run_search": "slimline.search",
    },
}
_LAZY: dict[str, str] = {name: target for group in _PUBLIC.values() for name, target in group.items()}

if TYPE_CHECKING:
    from slimline.artifact import ArtifactWriter as ArtifactWriter
    from slimline.artifact import load_torch as load_torch
    from slimline.artifact import save_torch as save_torch
    from slimline.bench import bench_artifacts as bench_artifacts
    from slimline.bench import measure as measure
    from slimline.bench.harness import BenchTarget as BenchTarget
    from slimline.bench.harness import bench_targets as bench_targets
    from slimline.bench.harness import is_artifact_dir as is_artifact_dir
    from slimline.bench.harness import worker_env as worker_env
    from slimline.bench.macs import onnx_macs as onnx_macs
    from slimline.bench.peak import fp32_peak as fp32_peak
    from slimline.bench.targets import model_meta as model_meta
    from slimline.bench.targets import prepare_model as prepare_model
    from slimline.data.fortunes import load_fortunes as load_fortunes
    from slimline.distill import distill as distill
    from slimline.environment import environment as environment
    from slimline.evaluate import evaluate as evaluate
    from slimline.evaluate import predict_named as predict_named
    from slimline.evaluate import wilson_interval as wilson_interval
    from slimline.fileio import torch_save as torch_save
    from slimline.fileio import write_json as write_json
    from slimline.loadtest import run_load as run_load
    from slimline.models import count_macs as count_macs
    from slimline.models import count_params as count_params
    from slimline.models import hf_text as hf_text
    from slimline.models.efficientnet_lite import IMAGENET_MEAN as IMAGENET_MEAN
    from slimline.models.efficientnet_lite import IMAGENET_STD as IMAGENET_STD
    from slimline.models.hf_text import SentenceEmbedder as SentenceEmbedder
    from slimline.models.hf_text import allocate_keep as allocate_keep
    from slimline.models.hf_text import copy_text_files as copy_text_files
    from slimline.models.hf_text import distill_embeddings as distill_embeddings
    from slimline.models.hf_text import encode_texts as encode_texts
    from slimline.models.hf_text import export_text_onnx as export_text_onnx
    from slimline.models.hf_text import ffn_sensitivity as ffn_sensitivity
    from slimline.models.hf_text import load_artifact_tokenizer as load_artifact_tokenizer
    from slimline.models.hf_text import load_hf_encoder as load_hf_encoder
    from slimline.models.hf_text import minilm_folder as minilm_folder
    from slimline.models.hf_text import neuron_importance as neuron_importance
    from slimline.models.hf_text import openvino_nncf_int8 as openvino_nncf_int8
    from slimline.models.hf_text import ort_dynamic_int8 as ort_dynamic_int8
    from slimline.models.hf_text import ort_transformer_optimize as ort_transformer_optimize
    from slimline.models.hf_text import param_count as param_count
    from slimline.models.hf_text import prune_bert as prune_bert
    from slimline.models.hf_text import tokenize as tokenize
    from slimline.onnx_export import export_onnx as export_onnx
    from slimline.openvino_export import export_openvino as export_openvino
    from slimline.optimize.predict import predict as predict
    from slimline.optimize.tune import alternate as alternate
    from slimline.optimize.tune import medians_ms as medians_ms
    from slimline.optimize.tune import tune as tune
    from slimline.prune.allocate import Plan as Plan
    from slimline.prune.block import remove_blocks as remove_blocks
    from slimline.prune.channel import prune_channels as prune_channels
    from slimline.prune.common import replace_module as replace_module
    from slimline.prune.schedule import FinetuneConfig as FinetuneConfig
    from slimline.prune.schedule import MixedInputs as MixedInputs
    from slimline.prune.schedule import apply_plan as apply_plan
    from slimline.prune.schedule import finetune as finetune
    from slimline.prune.schedule import recalibrate_bn as recalibrate_bn
    from slimline.prune.sensitivity import DEFAULT_RATIOS as DEFAULT_RATIOS
    from slimline.prune.sensitivity import plot_sensitivity as plot_sensitivity
    from slimline.prune.sensitivity import sensitivity as sensitivity
    from slimline.quant.backends import FloatModel as FloatModel
    from slimline.quant.backends import QuantConfig as QuantConfig
    from slimline.quant.backends import get_backend as get_backend
    from slimline.quant.numerics import observer_table as observer_table
    from slimline.quant.numerics import outlier_tensor as outlier_tensor
    from slimline.runtimes import availability as availability
    from slimline.runtimes import open_session as open_session
    from slimline.runtimes.openvino import disable_telemetry as disable_telemetry
    from slimline.runtimes.openvino import import_openvino as import_openvino
    from slimline.search import run_search as run_search
    from slimline.steps.quantize import write_quantized as write_quantized
    from slimline.tasks.detection import DetectionTask as DetectionTask
    from slimline.tasks.detection import detection_fidelity as detection_fidelity
    from slimline.tasks.detection import letterbox as letterbox
    from slimline.tasks.speech import log_mel as log_mel
    from slimline.tasks.speech import run_stream as run_stream
    from slimline.tasks.text import embedding_fidelity as embedding_fidelity
    from slimline.tflite_export import export_tflite_artifact as export_tflite_artifact
    from slimline.train import TrainConfig as TrainConfig
    from slimline.train import fit as fit


def __getattr__(name: str) -> Any:
    """Load a public name of ``_LAZY`` on first use."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'slimline.api' has no attribute {name!r}")
    import importlib

    module, _, attr = target.partition(":")
    if target.endswith(":"):
        value: Any = importlib.import_module(module)
    else:
        value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


_FUNCTIONS = ["open_model", "evaluate_model", "model_preprocess", "run", "apply_step", "demo_recipe"]
_EAGER = [
    "ARTIFACT_JSON",
    "ArrayDataset",
    "Artifact",
    "NamedSamples",
    "Recipe",
    "RecipeError",
    "SlimlineError",
    "accuracy_metrics",
    "artifact_signature",
    "evaluate_artifact",
    "evaluate_detector",
    "evaluate_named",
    "fidelity",
    "get_step",
    "get_task",
    "load_dataset",
    "load_model",
    "load_onnx",
    "load_photos",
    "load_recipe",
    "predict_logits",
    "seed_everything",
]
__all__ = sorted({*_FUNCTIONS, *_EAGER, *_LAZY})
