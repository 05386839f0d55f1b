"""``fuse``: fold BatchNorm, fuse Conv+BN+activation, pick the tensor layout (PyTorch); simplify and
optimize the graph offline (ONNX).

PyTorch artifact in, PyTorch artifact out:

1. BatchNorm is folded into the preceding Conv/Linear (exact; the BN becomes ``nn.Identity``, the
   conv gains a bias), so the saved model itself is smaller and faster in every PyTorch runtime.
2. The torch.fx Conv(+add)+activation fusion is checked on the folded model and switched on for the
   ``torch`` runtime (``runtime_config.torch.fuse``); it is applied when the runtime loads the model.
3. Layout: ``auto`` times NCHW and channels_last (with and without the fusion) in one process,
   taking turns, and keeps the fastest for ``runtime_config.torch``; ``nchw``/``channels_last`` force one.

ONNX artifact in, ONNX artifact out: ``model.onnx`` is the simplified graph (onnxslim, else onnxsim;
plain ONNX that every runtime reads) and ``model.ort-<level>.onnx`` (role ``ort_model``) the same
after ONNX Runtime's offline optimization. The record also shows, per runtime, how many
depthwise/pointwise convolution pairs the runtime fuses (OpenVINO's CPU plugin compiles the
depthwise convolution into the preceding 1x1 convolution at static batch sizes; ONNX Runtime and
PyTorch eager have no such fusion).

Every pass records node/module counts before and after and the ops it fused; outputs are compared
with the input artifact on a random batch (``tolerance``, max absolute difference). ONNX parity runs
over the model's signature (every input, :func:`slimline.bench.worker.bench_shapes`; every output
compared); when it cannot run, the record's ``parity_not_checked`` and the console say why.
"""

from __future__ import annotations

import copy
import shutil
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from slimline.artifact import Artifact, ArtifactWriter, load_torch, save_torch
from slimline.context import RunContext
from slimline.errors import ModelError, SlimlineError
from slimline.progress import console
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class FuseOptions(StepConfig):
    fold_bn: bool = True
    fx_fuse: bool = True
    layout: Literal["auto", "nchw", "channels_last"] = "auto"
    layout_batch: int = Field(8, ge=1, description="batch size for the layout timing")
    layout_rounds: int = Field(3, ge=1)
    simplify: bool = True
    ort_level: Literal["none", "basic", "extended", "all"] = "extended"
    openvino_batches: list[int] = Field(default_factory=lambda: [1, 16])
    tolerance: float = Field(1e-4, gt=0, description="max absolute output difference to the input artifact")
    parity_batch: int = Field(4, ge=1)
    input_shapes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="ONNX parity inputs: full shapes per input name (batch axis replaced by parity_batch)",
    )


def measure_layouts(
    model: torch.nn.Module,
    fused: torch.nn.Module | None,
    x: torch.Tensor,
    rounds: int = 3,
    original: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Median ms per call of the model in NCHW / channels_last, with and without the fused graph."""
    from slimline.optimize.tune import alternate, medians_ms

    cl = torch.channels_last
    x_cl = x.contiguous(memory_format=cl)
    variants: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {
        "nchw": (model, x),
        "channels_last": (copy.deepcopy(model).to(memory_format=cl), x_cl),  # type: ignore[call-overload]  # stubs omit it
    }
    if original is not None:
        variants["original"] = (original, x)
    if fused is not None:
        variants["fused"] = (fused, x)
        variants["fused+channels_last"] = (copy.deepcopy(fused).to(memory_format=cl), x_cl)  # type: ignore[call-overload]  # stubs omit it

    def call(m: torch.nn.Module, inp: torch.Tensor) -> Any:
        def fn() -> Any:
            with torch.inference_mode():
                return m(inp)

        return fn

    times = alternate({k: call(m, i) for k, (m, i) in variants.items()}, rounds=rounds, warmup=1)
    ms = medians_ms(times)
    best = min((k for k in ms if k != "original"), key=ms.__getitem__)
    return {
        "batch": int(x.shape[0]),
        "threads": torch.get_num_threads(),
        "median_ms": ms,
        "speedup_vs_nchw": {k: ms["nchw"] / v for k, v in ms.items()},
        "chosen": best,
    }


# what a text artifact's parity check tokenizes: sentences of different lengths, so padding and masks are exercised
PARITY_TEXTS = (
    "slimline makes trained models small and fast",
    "a short one",
    "the quick brown fox jumps over the lazy dog while the cat sat on the mat",
    "text goes in through the tokenizer that travels with the artifact",
)


def _openvino_fuses_only_static(dw_pw: dict[str, Any]) -> bool:
    """True when OpenVINO fused depthwise+pointwise pairs at some static batch (so the openvino runtime
    should compile per batch size: ``runtime_config.openvino.static_shapes``)."""
    ov = dw_pw.get("openvino", {})
    return any(isinstance(v, dict) and v.get("dw_fused_into_1x1", 0) > 0 for v in ov.values())


def _max_abs_diff(got: np.ndarray | None, ref: np.ndarray) -> float:
    """Max absolute difference of two outputs (inf when missing or of another shape; exact for non-floats)."""
    if got is None or np.shape(got) != np.shape(ref):
        return float("inf")
    if ref.size == 0:
        return 0.0
    return float(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)).max())


@STEPS.register("fuse")
class Fuse(Step[FuseOptions]):
    """Fold BatchNorm and pick the layout (PyTorch); simplify and optimize the graph (ONNX); nothing for OpenVINO."""

    name = "fuse"
    Config = FuseOptions
    accepts = ("torch", "onnx", "openvino")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        if artifact.kind == "torch":
            return self._torch(artifact, ctx)
        if artifact.kind == "onnx":
            return self._onnx(artifact, ctx)
        return StepOutput(None, {"note": "OpenVINO IR: the CPU plugin fuses at compile time; nothing to do"})

    # ------------------------------------------------------------------ PyTorch
    def _torch(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        from slimline.optimize.fold_bn import fold_batchnorm, module_counts
        from slimline.optimize.fx_fuse import fx_fuse, graph_ops, trace

        cfg = self.config
        shape = tuple(int(s) for s in artifact.meta["input_shape"])
        original = load_torch(artifact)
        model = copy.deepcopy(original)
        x = torch.from_numpy(
            np.random.default_rng(ctx.seed).standard_normal((cfg.parity_batch, *shape)).astype(np.float32)
        )
        record: dict[str, Any] = {}
        try:
            record["graph_nodes_original"] = sum(graph_ops(trace(original)).values())
        except ModelError:
            record["graph_nodes_original"] = None
        if cfg.fold_bn:
            model, rep = fold_batchnorm(model, x, tolerance=cfg.tolerance)
            record["fold_bn"] = rep.to_dict()
        else:
            record["fold_bn"] = {"folded": 0, "modules_before": module_counts(model), "note": "disabled"}
        fused = None
        if cfg.fx_fuse:
            try:
                fused, frep = fx_fuse(model, shape, tolerance=cfg.tolerance)
                record["fx_fuse"] = frep.to_dict()
            except ModelError as e:
                record["fx_fuse"] = {"error": str(e)}
        if cfg.layout == "auto":
            xb = torch.from_numpy(
                np.random.default_rng(ctx.seed).standard_normal((cfg.layout_batch, *shape)).astype(np.float32)
            )
            layout = measure_layouts(model, fused, xb, cfg.layout_rounds, original)
            chosen = layout["chosen"]
            use_fuse, channels_last = chosen.startswith("fused"), chosen.endswith("channels_last")
            record["layout"] = layout
        else:
            use_fuse, channels_last = fused is not None, cfg.layout == "channels_last"
            record["layout"] = {"chosen": cfg.layout, "measured": False}
        meta = dict(artifact.meta)
        rc = {k: dict(v) for k, v in meta.get("runtime_config", {}).items()}
        rc["torch"] = {**rc.get("torch", {}), "fuse": use_fuse, "channels_last": channels_last}
        meta["runtime_config"] = rc
        record["runtime_config"] = {"torch": rc["torch"]}
        out = save_torch(model, ctx.out_dir, meta, artifact.lineage)
        record["reload_max_abs_diff"] = self._check_reload(out, model, x)
        record["dw_pw"] = {
            "torch": "no depthwise+pointwise fusion in PyTorch eager (oneDNN post-ops fuse activations and adds only)"
        }
        folded = record["fold_bn"].get("folded", 0)
        fx = record.get("fx_fuse", {})
        record["summary"] = (
            f"folded {folded} BN; "
            + (
                f"fx fused {sum(fx.get('fused_counts', {}).values())} ops; "
                if "fused_counts" in fx
                else "no fx fusion; "
            )
            + ("channels_last" if channels_last else "NCHW")
            + (" + fuse" if use_fuse else "")
        )
        return StepOutput(out, record)

    @staticmethod
    def _check_reload(out: Artifact, model: torch.nn.Module, x: torch.Tensor) -> float:
        try:
            again = load_torch(out)
        except ModelError as e:
            raise ModelError(
                f"the BN-folded model does not reload from {out.path}: {e}. A folded layer is probably a subclass of "
                "nn.Conv2d whose bias slimline cannot record; run fuse with fold_bn: false"
            ) from e
        with torch.inference_mode():
            d = float((again(x) - model(x)).abs().max())
        if d > 0:
            raise ModelError(f"the saved BN-folded model differs from the folded model by {d:.3g} after reloading")
        return d

    # ------------------------------------------------------------------ ONNX
    def _onnx(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        from slimline.optimize import onnx_graph as og

        cfg = self.config
        shape = [int(s) for s in artifact.meta.get("input_shape") or []]
        record: dict[str, Any] = {"original": og.graph_stats(artifact.model_file)}
        meta = dict(artifact.meta)
        with ArtifactWriter(ctx.out_dir, "onnx", meta, list(artifact.lineage)) as w:
            model_path = w.add("model", "model.onnx")
            if "text" in meta:  # a transformer encoder: ONNX Runtime's attention / LayerNorm / Gelu fusions
                from slimline.models.hf_text import text_files, transformer_fuse

                att = meta["text"].get("attention", {})
                record["transformer_fusions"] = transformer_fuse(
                    artifact.model_file, model_path, int(att.get("num_heads", 0)), int(att.get("hidden_size", 0))
                )
                for path in text_files(artifact.path):  # it keeps its tokenizer: raw text still goes in
                    shutil.copyfile(path, w.tmp / path.name)
            elif cfg.simplify and og.simplifier() is not None:
                record["simplify"] = og.simplify(artifact.model_file, model_path)
            else:
                if cfg.simplify:
                    record["simplify_skipped"] = "no ONNX graph simplifier installed: pip install onnxslim (or onnxsim)"
                shutil.copy2(artifact.model_file, model_path)
            if cfg.ort_level != "none":
                ort_path = w.add("ort_model", f"model.ort-{cfg.ort_level}.onnx")
                record["ort_offline"] = og.ort_optimize(model_path, ort_path, cfg.ort_level)
                meta["ort_model"] = {"level": cfg.ort_level, "onnxruntime": record["ort_offline"]["onnxruntime"]}
            parity = self._onnx_parity(artifact, w.tmp, w.files, cfg, ctx.seed)
            if "not_checked" in parity:
                record["parity_not_checked"] = parity["not_checked"]
                console.print(f"[yellow]fuse: parity not checked:[/] {parity['not_checked']}", highlight=False)
            else:
                record["parity"], record["parity_inputs"] = parity["roles"], parity["inputs"]
            if shape:
                record["dw_pw"] = self._dw_pw(model_path, shape, cfg, record)
                if _openvino_fuses_only_static(record["dw_pw"]):
                    rc = {k: dict(v) for k, v in meta.get("runtime_config", {}).items()}
                    rc["openvino"] = {**rc.get("openvino", {}), "static_shapes": True}
                    meta["runtime_config"] = rc
                    record["runtime_config"] = {"openvino": rc["openvino"]}
        assert w.artifact is not None
        simp = record.get("simplify", {})
        ort = record.get("ort_offline", {})
        record["summary"] = (
            f"nodes {record['original']['nodes']}"
            + (f" -> {simp['after']['nodes']} ({simp['tool']})" if simp else "")
            + (f" -> {ort['after']['nodes']} (onnxruntime {cfg.ort_level})" if ort else "")
        )
        return StepOutput(w.artifact, record)

    @staticmethod
    def _onnx_parity(src: Artifact, folder: Any, files: dict[str, str], cfg: FuseOptions, seed: int) -> dict[str, Any]:
        """Every written file against the input model on example feeds over its signature (``parity_batch``
        samples, or for a text artifact its tokenizer on ``PARITY_TEXTS``; every output compared).
        ``{"roles": {role: {file, max_abs_diff, outputs {name: diff}, against}}, "inputs": {name: shape}}``, or
        ``{"not_checked": why}`` when the input model cannot be run here; a file that differs by more than
        ``tolerance`` is an error."""
        import onnxruntime as ort

        from slimline.bench.worker import bench_shapes, int_high

        if "text" in src.meta:  # real token ids with right-padded masks: what fused attention assumes
            from slimline.models.hf_text import encode_texts

            feeds = encode_texts(src.path, list(PARITY_TEXTS[: max(cfg.parity_batch, 2)]))
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        else:
            try:
                sig, shapes = bench_shapes(src, cfg.input_shapes, cfg.parity_batch)
            except SlimlineError as e:
                return {"not_checked": f"{e} (fuse --input-shape)"}
            feeds = sig.example_feeds(shapes, seed, int_high=int_high(src))

        def run(path: Any) -> dict[str, np.ndarray]:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so.log_severity_level = 3
            s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            names = [o.name for o in s.get_outputs()]
            return dict(zip(names, s.run(None, feeds), strict=True))

        try:
            ref = run(src.model_file)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own kinds
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return {"not_checked": f"ONNX Runtime cannot run the input model on example inputs: {first}"}
        against = f"{src.name}/{src.model_file.name} (onnxruntime, graph optimizations off)"
        roles = {}
        for role, name in files.items():
            got = run(folder / name)
            diffs = {o: _max_abs_diff(got.get(o), v) for o, v in ref.items()}
            d = max(diffs.values(), default=0.0)
            if not d <= cfg.tolerance:
                worst = max(diffs, key=diffs.__getitem__)
                raise SlimlineError(
                    f"the {role} file {name} differs from the input model by {d:.3g} in output {worst!r} "
                    f"(> {cfg.tolerance:g}); run fuse with --no-simplify or --ort-level none"
                )
            roles[role] = {"file": name, "max_abs_diff": d, "outputs": diffs, "against": against}
        return {"roles": roles, "inputs": {k: list(v) for k, v in shapes.items()}}

    @staticmethod
    def _dw_pw(model_path: Any, shape: list[int], cfg: FuseOptions, record: dict[str, Any]) -> dict[str, Any]:
        from slimline.errors import RuntimeUnavailable
        from slimline.optimize import onnx_graph as og

        pairs = og.dw_pw_pairs(model_path)
        out: dict[str, Any] = {"pairs_in_graph": pairs}
        if pairs["pw->dw"] + pairs["dw->pw"] == 0:
            out["note"] = "no depthwise/pointwise convolution pairs in this model"
            return out
        ort_ops = record.get("ort_offline", {}).get("after", {}).get("ops", {})
        out["onnxruntime"] = {
            "fused_pairs": 0,
            "note": "ONNX Runtime fuses Conv+activation (FusedConv) and, at level all, NCHWc convolutions, "
            "but never two convolutions into one",
            "fused_conv_nodes": ort_ops.get("com.microsoft.FusedConv", 0),
        }
        try:
            from slimline.runtimes.openvino import disable_telemetry

            disable_telemetry()
        except ImportError:
            pass
        try:
            out["openvino"] = {f"batch_{b}": og.openvino_fusions(model_path, b, shape) for b in cfg.openvino_batches}
        except RuntimeUnavailable as e:
            out["openvino"] = {"error": str(e)}
        return out
