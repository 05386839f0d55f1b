"""``quantize``: int8 post-training quantization through a backend, optionally accuracy-aware.

Backends (``backend:``): ``onnxruntime`` (static QDQ U8S8 by default, or ``mode: dynamic``),
``openvino`` (NNCF) and ``torch`` (FX graph mode, x86). Calibration uses ``calibration_size``
samples of the training part (``ctx.data.calibration``), never the test split. With
``accuracy_aware: true`` the step measures top-1 on the validation slice and returns the layers
ranked most sensitive by the simulated (fake-quant) pass to float until the drop is within
``max_drop`` points. Writes ``quantization.json`` (options, sizes, per-layer sensitivity) beside
the model in the step folder. Every written model is checked, loaded and run, and compared with fp32 on
calibration inputs (``verification`` in the record); ``test_fidelity`` also compares them on the test
split, for models whose outputs are not class logits.

:func:`quantize_arrays` quantizes any ONNX/OpenVINO model calibrated on named arrays (every input fed by name)
and compares int8 with fp32 on held-out samples (fidelity per output; top-1 too with labels).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from slimline.artifact import Artifact, ArtifactWriter
from slimline.context import RunContext
from slimline.errors import RecipeError, RuntimeUnavailable
from slimline.evaluate import evaluate, evaluate_artifact
from slimline.fileio import write_json
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class QuantizeOptions(StepConfig):
    backend: Literal["onnxruntime", "openvino", "torch", "litert"] = Field(
        "onnxruntime", description="onnxruntime, openvino, torch or litert (.tflite)"
    )
    mode: Literal["static", "dynamic"] = Field(
        "static", description="static (calibrated) or dynamic (onnxruntime, Linear-heavy models)"
    )
    calibration: Literal["minmax", "percentile", "entropy", "mse", "default"] = Field(
        "minmax", description="minmax, percentile, entropy, mse or default (the backend's own)"
    )
    percentile: float = Field(99.999, gt=50, le=100, description="percentile calibration's clipping percentile")
    calibration_size: int = Field(300, ge=1, description="training samples used to calibrate")
    batch_size: int = Field(16, ge=1, description="calibration batch size")
    per_channel: bool = Field(True, description="one weight scale per output channel (off: one per tensor)")
    weight_symmetric: bool = Field(True, description="symmetric weight ranges")
    activation_symmetric: bool = Field(False, description="symmetric activation ranges")
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="uint8 (U8S8, fastest on x86) or int8")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="int8 or uint8 weights")
    reduce_range: bool | None = Field(None, description="7-bit weights (default: on x86 CPUs without VNNI)")
    exclude: list[str] = Field(
        default_factory=list,
        description="layer kept in float (module or node name, or an fnmatch pattern of node names)",
    )
    compact_names: bool = Field(True, description="ONNX results: short tensor names and no node names in the file")
    model_type: Literal["auto", "default", "transformer"] = Field(
        "auto",
        description="transformer: NNCF's transformer scheme (SmoothQuant, attention kept right) on openvino, only "
        "MatMul/Gemm/Gather in int8 on onnxruntime static; auto: transformer for a text artifact",
    )
    format: Literal["native", "onnx", "int8_io"] = Field(
        "native",
        description="openvino: 'onnx' writes a QDQ ONNX model that OpenVINO runs in int8 (smaller than the IR); "
        "litert: 'int8_io' makes the .tflite's inputs and outputs int8 too",
    )
    accuracy_aware: bool = Field(False, description="return the most sensitive layers to float until within max_drop")
    max_drop: float = Field(
        1.0,
        ge=0,
        description="accuracy-aware budget: top-1 points (absolute) on validation; for unlabelled named arrays, "
        "fidelity points (100 x mean cosine to float)",
    )
    layers_per_step: int = Field(1, ge=1, description="accuracy-aware: layers returned to float per step")
    max_iterations: int | None = Field(None, ge=1, description="accuracy-aware: at most this many steps")
    sensitivity: bool = Field(False, description="also write the simulated per-layer sensitivity (not accuracy-aware)")
    sensitivity_samples: int = Field(128, ge=8, description="calibration samples the sensitivity is measured on")
    test_fidelity: bool = Field(
        False,
        description="compare the int8 model's outputs with fp32's on the test split (cosine, max abs "
        "difference): the measure for models whose outputs are not class logits (detectors, speech...)",
    )

    def quant_config(self) -> Any:
        from slimline.quant.backends import QuantConfig

        keys = (
            "calibration",
            "percentile",
            "per_channel",
            "weight_symmetric",
            "activation_symmetric",
            "activation_type",
            "weight_type",
            "mode",
            "reduce_range",
            "batch_size",
            "exclude",
            "compact_names",
            "model_type",
            "format",
        )
        return QuantConfig(**{k: getattr(self, k) for k in keys})


def usable_backend(opts: QuantizeOptions) -> tuple[Any, Any]:
    """The backend ``opts`` names and its config, checked: one line when it is not usable here."""
    from slimline.quant.backends import get_backend

    backend = get_backend(opts.backend)
    ok, why = backend.available()
    if not ok:
        raise RuntimeUnavailable(f"quantization backend {opts.backend!r} is not usable here: {why}")
    qcfg = opts.quant_config()
    backend.check(qcfg)
    return backend, qcfg


def simulated_sensitivity(model: Any, calib: Any, opts: QuantizeOptions) -> Any:
    """The fake-quant per-layer report with the backend's schemes (observer: the same method when we have it)."""
    from slimline.quant.fakequant import layer_sensitivity
    from slimline.quant.numerics import OBSERVERS, QScheme

    act = QScheme(opts.activation_type, opts.activation_symmetric, False)
    wts = QScheme(opts.weight_type, opts.weight_symmetric, opts.per_channel)
    method = opts.calibration if opts.calibration in OBSERVERS else "minmax"
    return layer_sensitivity(model, calib, calib.take(opts.sensitivity_samples), method, act, wts)


def exported_from(artifact: Artifact, earlier: list[Artifact]) -> Artifact | None:
    """The PyTorch artifact of the same run that ``artifact`` (ONNX/OpenVINO) was exported from: the latest
    one whose lineage is the export's lineage without the export steps."""
    steps = [r.get("step") for r in artifact.lineage]
    for cand in reversed(earlier):
        if cand.kind != "torch" or cand.path == artifact.path:
            continue
        own = [r.get("step") for r in cand.lineage]
        tail = steps[len(own) :]
        if steps[: len(own)] == own and tail and all(t in ("export_onnx", "export_openvino", "fuse") for t in tail):
            return cand
    return None


@STEPS.register("quantize")
class Quantize(Step[QuantizeOptions]):
    """Int8 post-training quantization through a backend, optionally accuracy-aware."""

    name = "quantize"
    Config = QuantizeOptions
    accepts = ("torch", "onnx", "openvino")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        from slimline.quant.accuracy_aware import accuracy_aware_quantize
        from slimline.quant.backends import FloatModel

        opts = self.config
        backend, qcfg = usable_backend(opts)
        torch_source = None
        if opts.accuracy_aware and artifact.kind != "torch":
            torch_source = exported_from(artifact, ctx.artifacts)
            if torch_source is None:
                raise RecipeError(
                    "accuracy-aware quantization ranks layers with a simulated pass in PyTorch, so it needs the "
                    f"PyTorch model; the current artifact is {artifact.kind} and no earlier stage of this run is the "
                    "PyTorch model it was exported from (quantize a PyTorch artifact, or export in the same recipe)"
                )
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{ctx.out_dir.name}.work-", dir=ctx.run_dir))
        try:
            src = FloatModel.from_artifact(artifact, work)
            if torch_source is not None:
                from slimline.artifact import load_torch

                src.torch_model = load_torch(torch_source)  # for the simulated ranking; the backend reads the file
            calib_ds = ctx.data.calibration(opts.calibration_size)
            calib = calib_ds.inputs()
            report: dict[str, Any] = {
                "backend": opts.backend,
                "options": opts.model_dump(mode="json"),
                "calibration": {"samples": len(calib_ds), "source": "training split"},
            }
            sens = None
            if (opts.accuracy_aware or opts.sensitivity) and src.torch_model is not None:
                sens = simulated_sensitivity(src.torch_model, calib_ds, opts)
                report["sensitivity"] = sens.to_dict()
            counter = itertools.count()
            meta = dict(artifact.meta)

            groups: dict[str, list[str]] = {}
            if opts.accuracy_aware and backend.shares_tensor_quantization and src.torch_model is not None:
                from slimline.quant.fakequant import input_producers

                groups = input_producers(src.torch_model)

            def with_producers(keep: list[str]) -> list[str]:
                """A layer in float needs a float input: on backends that quantize the tensor between two
                layers once, its producers go float with it."""
                out = list(keep)
                for k in keep:
                    out += [p for p in groups.get(k, []) if p not in out]
                return out

            def make(keep: list[str]) -> tuple[Path, Any]:
                d = work / f"candidate{next(counter)}"
                return d, backend.quantize(src, calib, qcfg, with_producers(keep), d)

            aa = None
            if opts.accuracy_aware:
                assert sens is not None
                val = ctx.data.val
                float_metric = self._float_metric(src, val, backend.kind)

                def score(c: tuple[Path, Any]) -> float:
                    cand = Artifact(c[1].kind, c[0], c[1].files, {**meta, **c[1].meta})
                    return float(evaluate_artifact(cand, val)["top1"])  # on the runtime the result names

                aa = accuracy_aware_quantize(
                    make, score, float_metric, sens.ranking(), opts.max_drop, opts.layers_per_step, opts.max_iterations
                )
                final_dir, qres = aa.candidate
                report["accuracy_aware"] = aa.record() | {
                    "metric": "top1",
                    "split": "val",
                    "n": len(val),
                    "float_layers": with_producers(aa.kept_float),
                }
            else:
                final_dir, qres = make([])
            if opts.test_fidelity and qres.kind != "torch":
                from slimline.quant.backends.base import fidelity_vs_fp32

                report["test_fidelity"] = {
                    "split": "test",
                    **fidelity_vs_fp32(qres, final_dir, src, ctx.data.test.inputs()),
                }
            meta["quantization"] = {
                "backend": opts.backend,
                "precision": "int8",
                "mode": opts.mode,
                "activation_type": opts.activation_type,
                "weight_type": opts.weight_type,
                "per_channel": opts.per_channel,
                "calibration": opts.calibration,
                "kept_float": report["accuracy_aware"]["float_layers"] if aa else [],
            }
            meta.update(qres.meta)
            written = write_quantized(
                ctx.out_dir, qres, final_dir, meta, list(artifact.lineage), report, _float_bytes(src, artifact)
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record: dict[str, Any] = {
            "backend": opts.backend,
            "kind": qres.kind,
            "calibration_samples": len(calib_ds),
            **report["sizes"],
            **qres.record(),
        }
        if aa is not None:
            record["accuracy_aware"] = report["accuracy_aware"]
        if "test_fidelity" in report:
            record["test_fidelity"] = report["test_fidelity"]
        if sens is not None:
            record["most_sensitive"] = sens.ranking()[:5]
        kept = f", {len(aa.kept_float)} layer(s) kept float" if aa else ""
        ratio = record["compression"]
        record["summary"] = f"int8 via {opts.backend}" + (f": {ratio:.2f}x smaller{kept}" if ratio else "")
        return StepOutput(written, record)

    @staticmethod
    def _float_metric(src: Any, val: Any, kind: str) -> float:
        """Top-1 of the float model on the validation slice, on the runtime the int8 model will use."""
        if kind == "torch":
            return float(evaluate(src.torch_model, val)["top1"])
        fp32 = src.onnx()
        art = Artifact("onnx", fp32.parent, {"model": fp32.name}, {})
        runtime = "openvino" if kind == "openvino" else "onnxruntime"
        return float(evaluate_artifact(art, val, runtime=runtime)["top1"])


def write_quantized(
    out_dir: Path,
    qres: Any,
    final_dir: Path,
    meta: dict[str, Any],
    lineage: list[dict[str, Any]],
    report: dict[str, Any],
    float_bytes: int,
    carry: Sequence[Path] = (),
) -> Artifact:
    """The int8 artifact in ``out_dir`` with ``quantization.json`` and the ``carry`` files; ``report`` gains
    ``result`` and ``sizes``."""
    with ArtifactWriter(out_dir, qres.kind, meta, lineage) as w:
        for role, fname in qres.files.items():
            shutil.copyfile(final_dir / fname, w.add(role, fname))
        for path in carry:  # files the model needs beside it (a text artifact's tokenizer)
            shutil.copyfile(path, w.tmp / path.name)
        int8_bytes = sum((w.tmp / f).stat().st_size for f in qres.files.values())
        report["result"] = qres.record()
        report["sizes"] = {
            "float_bytes": float_bytes,
            "int8_bytes": int8_bytes,
            "compression": float_bytes / int8_bytes if int8_bytes else None,
        }
        write_json(w.tmp / "quantization.json", report)
    assert w.artifact is not None
    return w.artifact


def quantize_arrays(
    model: str | Path,
    data: str | Path,
    opts: QuantizeOptions,
    output: Path,
    held_out: float = 0.25,
    seed: int = 0,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Quantize an ONNX/OpenVINO model (file or artifact folder) calibrated on named arrays (``.npz``/``.npy`` or a
    folder of them): every input is fed by name. A seeded ``held_out`` part of the samples is kept out of
    calibration; on it the int8 model is compared with fp32 (``fidelity``: cosine, abs difference per output)
    and, when the arrays have labels and the model one [batch, classes] output, scored (``float``, ``int8``:
    top-1/top-5). Writes the artifact into ``output/01_quantize``; returns the summary ``slimline quantize`` prints.
    """
    from torch import nn

    from slimline.api import open_model
    from slimline.data.arrays import load_arrays
    from slimline.data.text import is_text_source, load_text_source
    from slimline.models.hf_text import text_files
    from slimline.quant.backends import FloatModel
    from slimline.quant.backends.base import fidelity_vs_fp32
    from slimline.signature import artifact_signature
    from slimline.tasks.classification import signature_scores

    artifact = open_model(model)
    if isinstance(artifact, nn.Module) or artifact.kind == "torch":
        raise RecipeError(
            "named arrays calibrate ONNX/OpenVINO models; export the model first (slimline export) "
            "and quantize the .onnx, or calibrate on a dataset name"
        )
    sig = artifact_signature(artifact)
    if is_text_source(data):  # raw text: the artifact's tokenizer makes the inputs; calibrate on the train split
        from slimline.tasks.text import text_samples

        texts = load_text_source(data, "train")
        assert texts is not None
        samples = text_samples(artifact, texts).conform(sig)
    else:
        samples = load_arrays(data, sig).conform(sig)
    aware = opts.accuracy_aware or opts.sensitivity
    calib, held = samples.split(held_out, seed) if evaluate or aware else (samples, samples)
    calib = calib.sample(opts.calibration_size, seed)
    if opts.model_type == "auto":  # a text artifact is a transformer encoder
        opts = opts.model_copy(update={"model_type": "transformer" if "text" in artifact.meta else "default"})
    backend, qcfg = usable_backend(opts)
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantize.work-", dir=output))
    report: dict[str, Any] = {
        "backend": opts.backend,
        "options": opts.model_dump(mode="json"),
        "calibration": {"samples": len(calib), "source": str(data), "inputs": calib.names},
    }
    try:
        src = FloatModel.from_artifact(artifact, work)
        counter = itertools.count()

        def make(keep: list[str]) -> tuple[Path, Any]:
            d = work / f"candidate{next(counter)}"
            return d, backend.quantize(src, calib, qcfg, keep, d)

        if aware:
            final_dir, qres = _node_aware(make, src, held.take(opts.sensitivity_samples), sig, opts, report)
        else:
            final_dir, qres = make([])
        if evaluate:
            fid = fidelity_vs_fp32(qres, final_dir, src, held, limit=len(held))
            names = sig.output_names
            fid["outputs"] = {names[i] if i < len(names) else str(i): o for i, o in enumerate(fid["outputs"])}
            report["fidelity"] = {"split": "held-out", **fid}
        meta = {
            **artifact.meta,
            "signature": sig.to_dict(),
            **qres.meta,
            "quantization": {
                "backend": opts.backend,
                "precision": "int8",
                "mode": opts.mode,
                "activation_type": opts.activation_type,
                "weight_type": opts.weight_type,
                "per_channel": opts.per_channel,
                "calibration": opts.calibration,
                "calibration_data": str(data),
                "kept_float": report.get("accuracy_aware", {}).get("kept_float", []),
            },
        }
        written = write_quantized(
            output / "01_quantize",
            qres,
            final_dir,
            meta,
            list(artifact.lineage),
            report,
            _float_bytes(src, artifact),
            carry=text_files(artifact.path) if "text" in artifact.meta else (),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {
        "backend": opts.backend,
        "artifact": str(written.path),
        "sizes": report["sizes"],
        "kept_float": report.get("accuracy_aware", {}).get("kept_float", []),
        "left_float": qres.left_float,
        "warnings": qres.warnings,
        "verification": qres.verification,
        "calibration": report["calibration"],
    }
    if "fidelity" in report:
        summary["fidelity"] = report["fidelity"]
    if evaluate and held.labels is not None and signature_scores(sig):
        from slimline.evaluate import evaluate_named
        from slimline.runtimes import default_runtime, open_session

        fp32 = evaluate_named(open_session(artifact, default_runtime(artifact)), held)
        int8 = evaluate_named(open_session(written, default_runtime(written)), held)
        summary.update({"float": fp32, "int8": int8, "drop": fp32["top1"] - int8["top1"]})
    return summary


def _node_aware(
    make: Callable[[list[str]], tuple[Path, Any]],
    src: Any,
    scored: Any,
    sig: Any,
    opts: QuantizeOptions,
    report: dict[str, Any],
) -> tuple[Path, Any]:
    """Sensitivity of each weighted ONNX node, measured by quantizing it alone and scoring on ``scored`` (held-out
    training samples), and with ``accuracy_aware`` the most sensitive nodes returned to float until the drop fits
    ``max_drop``. Top-1 points when the samples have labels and the model one [batch, classes] output, else
    fidelity points: 100 x mean cosine to the float model (see :mod:`slimline.quant.node_sensitivity`)."""
    from slimline.quant.accuracy_aware import accuracy_aware_quantize
    from slimline.quant.backends.base import output_fidelity, reference_runner, result_runner, samples_of
    from slimline.quant.node_sensitivity import rank_nodes, ranked_nodes, ranked_op_types
    from slimline.tasks.classification import signature_scores

    if src.onnx_path is None:
        raise RecipeError(
            "node sensitivity ranks the nodes of an ONNX model; quantize the .onnx export (not an OpenVINO IR)"
        )
    feeds = samples_of(scored, len(scored))
    labelled = scored.labels is not None and signature_scores(sig)
    ref = reference_runner(src)
    ref_outs = [ref(f) for f in feeds]  # the float model's outputs, run once

    def top1(outs: list[Any]) -> float:
        top = np.concatenate([np.asarray(o[0]).argmax(-1) for o in outs])
        return 100.0 * float(np.mean(top == scored.labels[: len(top)]))

    scores: dict[Path, float] = {}  # candidate folder -> its score (each candidate is run once)

    def score(c: tuple[Path, Any]) -> float:
        if c[0] not in scores:
            run = result_runner(c[1], c[0])
            outs = [run(f) for f in feeds]
            scores[c[0]] = top1(outs) if labelled else 100.0 * float(output_fidelity(outs, ref_outs)["mean_cosine"])
        return scores[c[0]]

    float_metric = top1(ref_outs) if labelled else 100.0
    metric = "top1" if labelled else "fidelity (100 x mean cosine)"
    first = make([])
    first_metric = score(first)
    nodes = ranked_nodes(src.onnx_path, ranked_op_types(opts.backend, opts.mode))
    need_rank = opts.sensitivity or float_metric - first_metric > opts.max_drop
    ranking = rank_nodes(make, score, nodes, float_metric) if need_rank else []
    report["sensitivity"] = {"metric": metric, "n": len(scored), "split": "held-out training", "nodes": ranking}
    if not opts.accuracy_aware:
        return first
    order = [r["node"] for r in ranking]
    aa = accuracy_aware_quantize(
        lambda keep: first if not keep else make(keep),
        score,
        float_metric,
        order,
        opts.max_drop,
        opts.layers_per_step,
        opts.max_iterations,
    )
    report["accuracy_aware"] = aa.record() | {"metric": metric, "n": len(scored), "split": "held-out training"}
    return aa.candidate


def _float_bytes(src: Any, artifact: Artifact) -> int:
    """Size of the float model in the same format as the result when there is one (ONNX export), else the input's."""
    if src.onnx_path is not None and Path(src.onnx_path).exists():
        p = Path(src.onnx_path)
        data = p.with_name(p.name + ".data")
        return p.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return artifact.size_bytes()
