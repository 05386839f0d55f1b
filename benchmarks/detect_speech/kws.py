"""Keyword spotting on speech synthesised here with espeak-ng: data, a small streaming network, int8, figures.

Data (cached in ``OUT/kws_data``): 10 keywords (yes no up down left right on off stop go), ``unknown`` (ten other
words) and ``silence`` (noise only), spoken by espeak-ng voices at seeded speeds and pitches, turned to 16 kHz
with sox and given room-like reverb (sox ``reverb``) and seeded white noise, 1 s per clip. Training voices and
held-out voices are disjoint (voice variant and accent both differ): the figures are on held-out voices only.

Front end beside the model: 40 log-mels, 25 ms Hann window, 10 ms hop (:func:`slimline.tasks.speech.log_mel`).
Model (``WIDTH`` channels): causal conv (40 -> WIDTH, kernel 3) -> three depthwise-separable causal blocks
(dilation 2, 4, 8) -> 12 scores per frame, summed over time; every causal conv keeps its last 2 x dilation input
frames as state (``c1`` .. ``c4``) and the running sum of scores is state ``acc``, each an input and an output
(``*_out``): the clip's class is the running sum at its last frame. Streamed in ``CHUNK``-frame (640 ms) chunks with
:func:`slimline.tasks.speech.run_stream`, so a chunk carries tens of MMAC (int8 has work to speed up).
Pipeline: train on whole clips (zero state) -> sensitivity (each block's output alone pruned to half, top-1 drop
on the training voices) -> channel pruning (Torch-Pruning through :func:`slimline.prune.channel.prune_channels`;
half the channels, three quarters for a block dropping > 5 points) -> KD recovery from the unpruned model on the
training voices -> int8 (``slimline quantize -b openvino``, static, calibrated on training clips' chunks with the
state each chunk sees) -> fp32, pruned fp32 (as OpenVINO IR, ``slimline export``) and int8 in one ``slimline
bench`` run on OpenVINO, 2 threads, one chunk per call. ``int8_acc`` is the pruned + int8 model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN = ["bed", "bird", "cat", "dog", "house", "tree", "wow", "happy", "marvin", "sheila"]
CLASSES = [*KEYWORDS, "unknown", "silence"]
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
# speakers: espeak-ng voice variants; the held-out variants are never heard in training
TRAIN_VOICES = [
    f"{a}+{v}"
    for a in ACCENTS
    for v in ("m1", "m2", "m3", "m5", "m6", "m7", "f1", "f2", "f4", "f5", "klatt", "klatt3", "klatt4")
]
HELDOUT_VOICES = [f"{a}+{v}" for a in ACCENTS for v in ("m4", "m8", "f3", "klatt2")]
SR, CHUNK, N_MELS = 16000, 64, 40
RUNTIME = "openvino"  # int8 pays on VNNI CPUs
PRUNE_KEEP, SENSITIVE_DROP = 0.5, 5.0  # kept share of channels; a unit dropping more (points) keeps 0.75


def synth(word: str, voice: str, speed: int, pitch: int, reverb: int, path: Path) -> None:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), word],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["sox", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(path), "reverb", str(reverb), "pad", "0.05", "0.3"],
        check=True,
        capture_output=True,
    )
    raw.unlink()


def clip(path: Path | None, rng: np.random.Generator) -> np.ndarray:
    """1 s at 16 kHz: the word (cropped/padded around its start) plus seeded white noise."""
    from scipy.io import wavfile

    x = np.zeros(SR, np.float32)
    if path is not None:
        _, a = wavfile.read(path)
        a = a.astype(np.float32) / 32768
        a = a[:SR]
        off = int(rng.integers(0, SR - len(a) + 1))
        x[off : off + len(a)] = a
    return x + rng.normal(0, rng.uniform(0.002, 0.02), SR).astype(np.float32)


def make_split(voices: list[str], per_word: int, folder: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features [n, frames, 40] and labels of one split (cached as ``folder/features.npz``)."""
    from slimline.api import log_mel

    cache = folder / "features.npz"
    if cache.exists():
        d = np.load(cache)
        return d["x"], d["y"]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for ci, cls in enumerate(CLASSES):
        for k in range(per_word * len(voices)):
            voice = voices[k % len(voices)]
            if cls == "silence":
                wav = None
            else:
                word = cls if cls != "unknown" else UNKNOWN[int(rng.integers(len(UNKNOWN)))]
                wav = folder / f"{cls}_{k}.wav"
                synth(
                    word, voice, int(rng.integers(120, 200)), int(rng.integers(25, 75)), int(rng.integers(10, 60)), wav
                )
            feats.append(log_mel(clip(wav, rng), SR, N_MELS))
            labels.append(ci)
    x, y = np.stack(feats), np.array(labels, np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


WIDTH, DILATIONS = 768, (1, 2, 4, 8)


def build_model(width: int = WIDTH) -> Any:
    import torch
    from torch import nn

    class CausalDS(nn.Module):
        """Causal (dilated) conv, depthwise-separable or plain; keeps its last 2 x dilation input frames.

        With no state (whole clips: training, pruning) the input is left-padded with zeros instead, so the
        channel counts are read from the layers (Torch-Pruning can shrink them)."""

        def __init__(self, cin: int, cout: int, depthwise: bool, dilation: int = 1) -> None:
            super().__init__()
            self.keep = 2 * dilation
            self.dw = (
                nn.Conv1d(cin, cin, 3, groups=cin, dilation=dilation, bias=False)
                if depthwise
                else nn.Conv1d(cin, cout, 3, dilation=dilation)
            )
            self.pw = nn.Conv1d(cin, cout, 1) if depthwise else nn.Identity()
            self.bn = nn.BatchNorm1d(cout)

        def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            z = nn.functional.pad(x, (self.keep, 0)) if state is None else torch.cat([state, x], dim=2)
            return torch.relu(self.bn(self.pw(self.dw(z)))), z[:, :, -self.keep :]

    class StreamingKWS(nn.Module):
        """Plain causal conv then depthwise-separable causal blocks; state ``c1..cN`` (conv inputs) and ``acc``."""

        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(
                [CausalDS(N_MELS, width, False, 1)] + [CausalDS(width, width, True, d) for d in DILATIONS[1:]]
            )
            self.head = nn.Conv1d(width, len(CLASSES), 1)

        def forward(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = features.transpose(1, 2)
            new = []
            for i, b in enumerate(self.blocks):
                x, s = b(x, state[i] if state else None)
                new.append(s)
            run = torch.cumsum(self.head(x).transpose(1, 2), dim=1)  # running sum of scores
            if state:
                run = run + state[-1].unsqueeze(1)
            return run, *new, run[:, -1]

    return StreamingKWS()


def whole_clip(model: Any) -> Any:
    """The model on whole clips from zero state (one input, one output): what pruning and training see."""
    from torch import nn

    class Whole(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, features: Any) -> Any:
            return self.m(features)[0][:, -1] / features.shape[1]  # the clip's mean frame scores

    return Whole()


def state_names(model: Any) -> list[str]:
    return [f"c{i + 1}" for i in range(len(model.blocks))] + ["acc"]


def zero_states(batch: int, model: Any) -> dict[str, np.ndarray]:
    st = {f"c{i + 1}": np.zeros((batch, b.dw.in_channels, b.keep), np.float32) for i, b in enumerate(model.blocks)}
    return {**st, "acc": np.zeros((batch, len(CLASSES)), np.float32)}


def train(
    model: Any, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0, teacher: Any = None, lr: float = 3e-3
) -> None:
    """Whole clips from zero state; with ``teacher`` (knowledge distillation) the loss is half cross-entropy,
    half KL to the teacher's softened (T = 4) clip scores."""
    import torch

    torch.manual_seed(seed)
    net = whole_clip(model)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * ((len(x) + 31) // 32))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    tnet = whole_clip(teacher).eval() if teacher is not None else None
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            logits = net(xt[idx])
            loss = torch.nn.functional.cross_entropy(logits, yt[idx], label_smoothing=0.05)
            if tnet is not None:
                with torch.no_grad():
                    soft = torch.log_softmax(tnet(xt[idx]) / 4, dim=1)
                kd = torch.nn.functional.kl_div(
                    torch.log_softmax(logits / 4, dim=1), soft, log_target=True, reduction="batchmean"
                )
                loss = 0.5 * loss + 0.5 * 16 * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        print(f"    epoch {ep + 1}/{epochs}: loss {tot / len(x):.3f}", flush=True)
    model.eval()


def export(model: Any, path: Path) -> None:
    import warnings

    import torch

    st = {k: torch.from_numpy(v) for k, v in zero_states(1, model).items()}
    names = list(st)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, CHUNK, N_MELS), *st.values()),
            str(path),
            input_names=["features", *names],
            output_names=["scores", *(f"{n}_out" for n in names)],
            dynamic_axes={
                "features": {0: "batch", 1: "time"},
                "scores": {0: "batch", 1: "time"},
                **{n: {0: "batch"} for n in names},
            },
            opset_version=17,
            dynamo=False,
        )


def accuracy(session: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from slimline.api import accuracy_metrics, run_stream

    out, _ = run_stream(session, {"features": x}, chunk=CHUNK)
    return accuracy_metrics(out["scores"][:, -1], y)


def prune_units(model: Any) -> list[str]:
    """The layer producing each block's output (the plain conv of the first block, the pointwise of the others)."""
    return [f"m.blocks.{i}.{'dw' if i == 0 else 'pw'}" for i in range(len(model.blocks))]


def prune(model: Any, keep: dict[str, float]) -> dict[str, dict[str, int]]:
    """Remove output channels (group L1 importance, Torch-Pruning via :func:`slimline.prune.channel.prune_channels`)
    of the whole-clip model, in place; ``keep`` is the kept share per unit."""
    import torch

    from slimline.api import prune_channels

    net = whole_clip(model).eval()
    units = dict(zip(prune_units(model), model.blocks, strict=True))
    counts = {u: max(8, int(round(b.bn.num_features * keep[u]))) for u, b in units.items() if u in keep}
    example = torch.randn(2, 98, N_MELS, generator=torch.Generator().manual_seed(0))
    return prune_channels(net, example, counts, importance="l1")


def clip_accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((whole_clip(model)(torch.from_numpy(x)).argmax(1).numpy() == y).mean() * 100)


def run(work: Path, cli: Any, logs: Path, epochs: int, per_word: int, bench_flags: list[str]) -> dict[str, Any]:
    """The keyword-spotting half: returns ``fp32_acc``, ``int8_acc`` (pruned + int8), ``chunk_ms_fp32``,
    ``chunk_ms_int8`` and their details."""
    import copy

    import torch

    from slimline.api import Artifact, open_session

    data = work.parent / "kws_data"
    print("keyword spotting: synthesising speech (cached in", data, ")", flush=True)
    xtr, ytr = make_split(TRAIN_VOICES, per_word, data / "train", 1)
    xte, yte = make_split(HELDOUT_VOICES, 2 * per_word, data / f"heldout_x{2 * per_word}", 2)  # n 480 at per_word 1
    print(
        f"  {len(xtr)} training clips ({len(TRAIN_VOICES)} voices), {len(xte)} held-out clips "
        f"({len(HELDOUT_VOICES)} other voices), {len(CLASSES)} classes",
        flush=True,
    )
    kws = work / "kws"
    shutil.rmtree(kws, ignore_errors=True)
    kws.mkdir(parents=True)
    torch.set_num_threads(2)
    model = build_model()
    mu, sd = xtr.mean(), xtr.std()
    xte_n, xtr_n = ((xte - mu) / sd).astype(np.float32), ((xtr - mu) / sd).astype(np.float32)
    train(model, xtr_n, ytr, epochs)
    onnx_path = kws / "kws_fp32.onnx"
    export(model, onnx_path)
    fp32 = open_session(Artifact(kind="onnx", path=kws, files={"model": onnx_path.name}), RUNTIME)
    acc32 = accuracy(fp32, xte_n, yte)
    train_acc = clip_accuracy(model, xtr_n, ytr)
    print(f"  fp32: training voices {train_acc:.1f}%, held-out voices {acc32['top1']:.1f}%", flush=True)

    # sensitivity (training voices): each unit alone pruned to PRUNE_KEEP, no recovery
    sens: dict[str, float] = {}
    for u in prune_units(model):
        m2 = copy.deepcopy(model)
        prune(m2, {u: PRUNE_KEEP})
        sens[u] = round(train_acc - clip_accuracy(m2, xtr_n, ytr), 2)
    keep = {u: (PRUNE_KEEP if d <= SENSITIVE_DROP else (1 + PRUNE_KEEP) / 2) for u, d in sens.items()}
    print(f"  sensitivity (training-voice top-1 drop at keep {PRUNE_KEEP}): {sens}", flush=True)
    pruned = copy.deepcopy(model)
    channels = prune(pruned, keep)
    before = clip_accuracy(pruned, xtr_n, ytr)
    print(f"  pruned {channels}: training voices {before:.1f}% before recovery", flush=True)
    train(pruned, xtr_n, ytr, epochs, seed=1, teacher=model, lr=1e-3)
    pruned_path = kws / "kws_pruned.onnx"
    export(pruned, pruned_path)
    pruned32 = open_session(Artifact(kind="onnx", path=kws, files={"model": pruned_path.name}), RUNTIME)
    accp = accuracy(pruned32, xte_n, yte)
    print(f"  pruned + KD fp32: held-out voices {accp['top1']:.1f}%", flush=True)
    # calibration: chunks of training clips with the state each chunk really sees (carried through the pruned model)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(xtr_n), size=min(128, len(xtr_n)), replace=False)
    calib: dict[str, list[np.ndarray]] = {}
    for i in pick:
        # a chunk at a random offset, with the state the frames before it leave (one call: time is dynamic)
        st = zero_states(1, pruned)
        s0 = int(rng.integers(0, xtr_n.shape[1] - CHUNK + 1))
        if s0:
            out = pruned32.run_named({"features": xtr_n[i : i + 1, :s0], **st})
            st = {k: out[f"{k}_out"] for k in st}
        for k, v in {"features": xtr_n[i : i + 1, s0 : s0 + CHUNK], **st}.items():
            calib.setdefault(k, []).append(v)
    np.savez(kws / "calib.npz", **{k: np.concatenate(v) for k, v in calib.items()})
    q = kws / "q"
    rc = cli(
        [
            "quantize",
            "-m",
            str(pruned_path),
            "-d",
            str(kws / "calib.npz"),
            "-b",
            RUNTIME,
            "--no-eval",
            "-o",
            str(q),
            "--json",
            str(kws / "q.json"),
        ],
        logs / "kws_quantize.log",
    )
    found = sorted(p for p in q.glob("*_quantize") if p.is_dir()) if q.is_dir() else []
    macs = {}
    try:
        from slimline.api import onnx_macs

        shape = {"features": (1, CHUNK, N_MELS)}
        macs = {"fp32": onnx_macs(onnx_path, shape), "pruned": onnx_macs(pruned_path, shape)}
    except Exception as e:  # noqa: BLE001
        print(f"  (MACs not counted: {e})", flush=True)
    res: dict[str, Any] = {
        "fp32_acc": round(acc32["top1"], 2),
        "fp32": acc32,
        "classes": CLASSES,
        "fp32_train_acc": round(train_acc, 2),
        "train_voices": TRAIN_VOICES,
        "heldout_voices": HELDOUT_VOICES,
        "epochs": epochs,
        "width": WIDTH,
        "int8_acc": None,
        "pruned_fp32_acc": round(accp["top1"], 2),
        "pruned_fp32": accp,
        "sensitivity_drop_at_keep": {"keep": PRUNE_KEEP, "drop_points": sens},
        "pruned_channels": channels,
        "recovery": "KD from the unpruned model on the training voices (0.5 CE + 0.5 KL at T=4)",
        "chunk_ms_fp32": None,
        "chunk_ms_pruned_fp32": None,
        "chunk_ms_int8": None,
        "chunk_macs": macs,
        "runtime": RUNTIME,
        "cpu_flags": cpu_flags(),
        "front_end": {
            "log_mel": N_MELS,
            "win_ms": 25,
            "hop_ms": 10,
            "where": "beside the model",
            "normalise": [float(mu), float(sd)],
        },
        "chunk_frames": CHUNK,
        "pruned": True,
    }
    if rc == 0 and found:
        acc8 = accuracy(open_session(Artifact.load(found[-1]), RUNTIME), xte_n, yte)
        res.update(int8_acc=round(acc8["top1"], 2), int8=acc8)
        print(f"  pruned + int8: held-out voices {acc8['top1']:.1f}%", flush=True)
        # fp32 as OpenVINO IR too: bench runs OpenVINO on its own kind whenever one model in the set has it
        ir = {}
        for name, src in (("fp32", onnx_path), ("pruned", pruned_path)):
            ir[name] = kws / f"ov_{name}"
            cli(["export", str(src), "-f", "openvino", "-o", str(ir[name])], logs / f"kws_export_{name}.log")
        bench_json = kws / "bench.json"
        cli(
            [
                "bench",
                str(ir["fp32"]),
                str(ir["pruned"]),
                str(found[-1]),
                "-r",
                RUNTIME,
                "--input-shape",
                f"features=1x{CHUNK}x{N_MELS}",
                *bench_flags,
                "--json",
                str(bench_json),
            ],
            logs / "kws_bench.log",
        )
        rows = json.loads(bench_json.read_text()).get("results", []) if bench_json.exists() else []
        for row in rows:
            if row.get("status") != "ok" or not row.get("latency_ms"):
                continue
            ap_ = Path(str(row.get("artifact_path") or "")).resolve()
            key = (
                "chunk_ms_int8"
                if ap_.is_relative_to(found[-1].resolve())
                else "chunk_ms_pruned_fp32"
                if ap_.is_relative_to(ir["pruned"].resolve())
                else "chunk_ms_fp32"
            )
            res[key] = round(float(row["latency_ms"]["median"]), 4)
    n = acc32.get("n", len(yte))
    res["n"] = n
    res["ratio"] = (
        round(res["chunk_ms_int8"] / res["chunk_ms_fp32"], 3) if res["chunk_ms_int8"] and res["chunk_ms_fp32"] else None
    )
    res["pass"] = {
        "int8_within_1_point": res["int8_acc"] is not None and res["fp32_acc"] - res["int8_acc"] <= 1.0,
        "chunk_latency_le_0.5x_fp32": res["ratio"] is not None and res["ratio"] <= 0.5,
    }
    return res


def cpu_flags() -> list[str]:
    """The CPU's vector/int8 flags (int8 pays most with AVX-512 VNNI or AMX; on AVX2-only CPUs gains are smaller)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8"})


if __name__ == "__main__":
    sys.exit("run benchmarks/detect_speech/run.sh")
