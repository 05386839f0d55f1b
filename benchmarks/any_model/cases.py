"""Any model in: four models with no zoo entry and no glue, each run through the CLI as a user would.

Models (built here, seeded random weights, exported to ONNX with dynamic axes):

* ``two_input``   -- ``ids`` int64 [batch, seq] -> Embedding -> mean over seq, plus ``state`` float [batch, 32]
  -> Linear; outputs ``out`` and ``new_state``;
* ``detector``    -- a small conv net with dynamic H/W whose output ``output0`` is (batch, 84, H/8*W/8) like YOLOv8;
* ``transformer`` -- ``input_ids`` int64 -> Embedding(1000, 64) + TransformerEncoder(2 layers, 4 heads) -> pooled;
* ``lstm``        -- ``features`` [batch, time, 40] -> LSTM(40, 64, 2 layers) -> Linear to 12 classes.

For each: a calibration ``.npz`` and a held-out ``.npz`` keyed by input name, then the steps ``inspect``, ``bench``
(onnxruntime + openvino, batch 1, ``--input-shape`` per input), ``fuse`` (parity), ``quantize_onnxruntime`` and
``quantize_openvino`` (calibrated on the ``.npz``), ``eval_onnxruntime`` / ``eval_openvino`` (fidelity of the int8
artifact against the fp32 model on the held-out ``.npz``) and ``bench_int8`` (fp32 model + int8 folders in one
bench run: the int8/fp32 throughput ratio per runtime). Every step is a fresh CLI process; a step passes when it
exits 0 with its figure, or exits non-zero with exactly one ``error:`` line and no traceback.

Writes ``OUT/results.json``: ``{"models": {name: {"inputs", "steps": {step: {...}}}}, "summary", "settings",
"environment"}``. Exits 1 when some step printed a traceback (or a model did not build), else 0.

Per-step logs (command, exit code, stdout, stderr) land in ``OUT/logs/MODEL.STEP.log``; models, data, JSON
outputs and artifacts in ``OUT/work/MODEL/``.

``python benchmarks/any_model/cases.py --out runs/benchmarks/any_model [--only MODEL ...] [--steps STEP ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), SLIMLINE_PROGRESS="0")

SEED = 0
CALIB_N = 64
HELDOUT_N = 32
BENCH_FLAGS = ["-b", "1", "--min-seconds", "1", "--min-runs", "10", "--no-peak", "-t", "2"]
RUNTIMES = ["onnxruntime", "openvino"]
QUANT_BACKENDS = ["onnxruntime", "openvino"]
STEPS = [
    "inspect",
    "bench",
    "fuse",
    *(f"quantize_{b}" for b in QUANT_BACKENDS),
    *(f"eval_{b}" for b in QUANT_BACKENDS),
    "bench_int8",
]


# --------------------------------------------------------------------------- models


class Model:
    """What a builder returns: the ONNX file, each input's bench shape (batch 1) and a sampler for data."""

    def __init__(
        self,
        onnx_path: Path,
        shapes: dict[str, tuple[int, ...]],
        sample: Callable[[np.random.Generator, int], dict[str, np.ndarray]],
    ):
        self.onnx_path = onnx_path
        self.shapes = shapes
        self.sample = sample


def _export(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    import torch

    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and RNN-batch warnings: the models are checked by the steps
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )


def build_two_input(work: Path) -> Model:
    import torch
    from torch import nn

    vocab, seq, dim = 500, 16, 32

    class TwoInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.state = nn.Linear(dim, dim)
            self.head = nn.Linear(dim, 8)

        def forward(self, ids: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            new_state = torch.tanh(self.state(state) + self.emb(ids).mean(dim=1))
            return self.head(new_state), new_state

    torch.manual_seed(SEED)
    path = work / "two_input.onnx"
    _export(
        TwoInput(),
        (torch.randint(0, vocab, (2, seq)), torch.randn(2, dim)),
        path,
        ["ids", "state"],
        ["out", "new_state"],
        {"ids": {0: "batch", 1: "sequence"}, "state": {0: "batch"}, "out": {0: "batch"}, "new_state": {0: "batch"}},
    )

    def sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {
            "ids": rng.integers(0, vocab, (n, seq), dtype=np.int64),
            "state": rng.standard_normal((n, dim)).astype(np.float32),
        }

    return Model(path, {"ids": (1, seq), "state": (1, dim)}, sample)


def build_detector(work: Path) -> Model:
    import torch
    from torch import nn

    size = 320

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Detector(nn.Module):
        """Three stride-2 stages then a 1x1 head: 4 box + 80 class channels per anchor, flattened like YOLOv8."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 64, 2), block(64, 64, 1))
            self.box = nn.Conv2d(64, 4, 1)
            self.cls = nn.Conv2d(64, 80, 1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            f = self.body(images)  # (batch, 84, H/8 * W/8) after the concatenation
            return torch.cat([self.box(f).flatten(2), self.cls(f).sigmoid().flatten(2)], dim=1)

    torch.manual_seed(SEED)
    net = Detector()
    with torch.no_grad():  # BN statistics that are not the identity, so folding has something to do
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = work / "detector.onnx"
    _export(
        net,
        (torch.rand(1, 3, size, size),),
        path,
        ["images"],
        ["output0"],
        {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
    )
    import onnx

    proto = onnx.load(str(path))  # the exporter leaves the concatenated dim symbolic; YOLOv8 files say 84
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 84
    onnx.save(proto, str(path))

    def sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {"images": (rng.integers(0, 256, (n, 3, size, size)) / 255.0).astype(np.float32)}

    return Model(path, {"images": (1, 3, size, size)}, sample)


def build_transformer(work: Path) -> Model:
    import torch
    from torch import nn

    vocab, seq, dim = 1000, 32, 64

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=128, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.encoder(self.emb(input_ids)).mean(dim=1)

    torch.manual_seed(SEED)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused fast path does not export
    path = work / "transformer.onnx"
    _export(
        Encoder(),
        (torch.randint(0, vocab, (2, seq)),),
        path,
        ["input_ids"],
        ["pooled"],
        {"input_ids": {0: "batch", 1: "sequence"}, "pooled": {0: "batch"}},
    )

    def sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {"input_ids": rng.integers(0, vocab, (n, seq), dtype=np.int64)}

    return Model(path, {"input_ids": (1, seq)}, sample)


def build_lstm(work: Path) -> Model:
    import torch
    from torch import nn

    steps, feats = 50, 40

    class Lstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(feats, 64, num_layers=2, batch_first=True)
            self.fc = nn.Linear(64, 12)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            y, _ = self.lstm(features)
            return self.fc(y[:, -1])

    torch.manual_seed(SEED)
    path = work / "lstm.onnx"
    _export(
        Lstm(),
        (torch.randn(2, steps, feats),),
        path,
        ["features"],
        ["logits"],
        {"features": {0: "batch", 1: "time"}, "logits": {0: "batch"}},
    )

    def sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {"features": rng.standard_normal((n, steps, feats)).astype(np.float32)}

    return Model(path, {"features": (1, steps, feats)}, sample)


BUILDERS: dict[str, Callable[[Path], Model]] = {
    "two_input": build_two_input,
    "detector": build_detector,
    "transformer": build_transformer,
    "lstm": build_lstm,
}


# --------------------------------------------------------------------------- running and judging a step


def error_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("error:")]


def cli(args: list[str], log: Path, timeout: float) -> dict[str, Any]:
    """One CLI process; its output goes to ``log``. Returns rc (None on timeout), seconds, traceback, error."""
    cmd = [sys.executable, "-m", "slimline", *args]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    seconds = round(time.perf_counter() - t0, 2)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ slimline {shlex.join(args)}\n# rc={rc} seconds={seconds}\n--- stdout\n{out}\n--- stderr\n{err}")
    errs = error_lines(out + err)
    res: dict[str, Any] = {
        "cmd": "slimline " + shlex.join(str(a) for a in args),
        "rc": rc,
        "seconds": seconds,
        "traceback": "Traceback (most recent call last)" in out + err,
        "error": errs[-1] if errs else None,
        "error_lines": len(errs),
        "log": rel(log),
    }
    if rc is None:
        res["timed_out"] = timeout
    elif rc != 0 and not errs:
        res["stderr_tail"] = (err or out).strip().splitlines()[-5:]
    return res


def judge(res: dict[str, Any]) -> dict[str, Any]:
    """status: ok (exit 0 with its figure), one_line (non-zero, one error line, no traceback), traceback, or bad
    (exit 0 without its figure, several or no error lines, a timeout); pass: ok or one_line."""
    if res["traceback"]:
        status = "traceback"
    elif res["rc"] == 0:
        status = "ok" if res.get("figure") is not None else "bad"
        if status == "bad":
            res.setdefault("why", "exit 0 without its figure")
    elif res["rc"] is not None and res["error_lines"] == 1:
        status = "one_line"
    else:
        status = "bad"
        res.setdefault("why", "timed out" if res["rc"] is None else f"{res['error_lines']} error lines")
    res["status"] = status
    res["pass"] = status in ("ok", "one_line")
    return res


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)


def skipped(why: str) -> dict[str, Any]:
    return {"status": "skipped", "pass": None, "why": why}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def walk(doc: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (key path, value) pair in a JSON document."""
    out: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(((*path, str(k)), v))
            out.extend(walk(v, (*path, str(k))))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(walk(v, (*path, str(i))))
    return out


def numbers(doc: Any, key: str, under: str | None = None) -> list[float]:
    """Numbers stored under ``key`` anywhere (or only below a key named ``under``)."""
    return [
        float(v)
        for p, v in walk(doc)
        if p[-1] == key
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and (under is None or under in p[:-1])
    ]


def fidelity_figures(doc: Any) -> dict[str, Any]:
    """From a quantize or eval JSON (a ``fidelity`` block, or entries per output): the worst output's min and mean
    cosine and the largest max abs diff."""
    under = "fidelity" if any(p[-1] == "fidelity" for p, _ in walk(doc)) else None
    mins = numbers(doc, "min_cosine", under) or numbers(doc, "min_cosine")
    means = numbers(doc, "mean_cosine", under) or numbers(doc, "mean_cosine")
    diffs = numbers(doc, "max_abs_diff", under) or numbers(doc, "max_abs_diff")
    return {
        "min_cosine": min(mins) if mins else None,
        "mean_cosine": min(means) if means else None,
        "max_abs_diff": max(diffs) if diffs else None,
    }


def bench_rows(doc: Any) -> list[dict[str, Any]]:
    rows = doc.get("results") if isinstance(doc, dict) else None
    return [r for r in rows or [] if isinstance(r, dict)]


def target_label(row: dict[str, Any], targets: dict[str, Path]) -> str | None:
    """Which bench target a result row is: by its artifact path, else by the name bench gave it (a file's name,
    a folder's name, or parent/name when names repeat). A .onnx file is wrapped in a temporary folder by bench."""
    ap = row.get("artifact_path")
    for label, path in targets.items():
        if ap and (Path(ap) if Path(ap).is_absolute() else ROOT / ap).resolve().is_relative_to(path.resolve()):
            return label
    for label, path in targets.items():
        if row.get("artifact") in (str(path), path.name, path.stem, f"{path.parent.name}/{path.name}"):
            return label
    return None


def int8_ratios(doc: Any, targets: dict[str, Path]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Throughput per runtime and target label, and int8/fp32 per runtime for each ``int8_*`` label (None where
    the runtime did not measure both)."""
    thr: dict[str, dict[str, float]] = {}
    for row in bench_rows(doc):
        label = target_label(row, targets)
        if label and row.get("status") == "ok" and row.get("throughput"):
            thr.setdefault(str(row.get("runtime")), {})[label] = float(row["throughput"])
    ratios: dict[str, dict[str, float | None]] = {}
    for rt in RUNTIMES:
        got = thr.get(rt, {})
        fp = got.get("fp32")
        ratios[rt] = {lab: (round(got[lab] / fp, 3) if fp and lab in got else None) for lab in targets if lab != "fp32"}
    return thr, ratios


def shape_args(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    out: list[str] = []
    for name, dims in shapes.items():
        out += ["--input-shape", f"{name}=" + "x".join(str(d) for d in dims)]
    return out


# --------------------------------------------------------------------------- the steps of one model


def run_model(
    name: str, model: Model, data: dict[str, Path], work: Path, logs: Path, steps: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    onnx = str(model.onnx_path)
    rt_args = [a for rt in RUNTIMES for a in ("-r", rt)]
    res: dict[str, dict[str, Any]] = {}
    int8: dict[str, Path] = {}

    def step(step_name: str, args: list[str]) -> tuple[dict[str, Any], Any]:
        js = work / "json" / f"{step_name}.json"
        js.parent.mkdir(parents=True, exist_ok=True)
        js.unlink(missing_ok=True)
        r = cli([*args, "--json", str(js)], logs / f"{name}.{step_name}.log", timeout)
        doc = read_json(js)
        r["json"] = rel(js) if doc is not None else None
        return r, doc

    if "inspect" in steps:
        r, doc = step("inspect", ["inspect", onnx])
        if isinstance(doc, dict):
            names = (
                [p[-1] for p, _ in walk(doc.get("inputs"))]
                if isinstance(doc.get("inputs"), dict)
                else [i.get("name") for i in doc.get("inputs") or [] if isinstance(i, dict)]
            )
            r["inputs"] = names
            r["figure"] = {"inputs": len(names), "params": doc.get("params"), "opset": doc.get("opset")}
        res["inspect"] = judge(r)

    if "bench" in steps:
        r, doc = step("bench", ["bench", onnx, *rt_args, *shape_args(model.shapes), *BENCH_FLAGS])
        thr = {row.get("runtime"): row.get("throughput") for row in bench_rows(doc) if row.get("status") == "ok"}
        errs = {row.get("runtime"): row.get("error") for row in bench_rows(doc) if row.get("status") != "ok"}
        r["throughput"] = thr
        if isinstance(doc, dict) and doc.get("skipped"):
            r["skipped_combinations"] = doc["skipped"]
        if errs:
            r["combination_errors"] = errs
        r["figure"] = thr or None
        res["bench"] = judge(r)

    if "fuse" in steps:
        out = work / "fused"
        shutil.rmtree(out, ignore_errors=True)
        r, doc = step("fuse", ["fuse", onnx, *shape_args(model.shapes), "-o", str(out)])
        parity = doc.get("parity") if isinstance(doc, dict) else None
        if parity is None and isinstance(doc, dict):
            parity = next((v for p, v in walk(doc) if p[-1] == "parity"), None)
        if parity is not None:
            diffs = numbers(parity, "max_abs_diff")
            passed = [v for p, v in walk(parity) if p[-1] == "passed" and isinstance(v, bool)]
            r["parity"] = {"max_abs_diff": max(diffs) if diffs else None, "passed": all(passed) if passed else None}
            r["figure"] = r["parity"]
        res["fuse"] = judge(r)

    for backend in QUANT_BACKENDS:
        key = f"quantize_{backend}"
        if key not in steps:
            continue
        out = work / f"q_{backend}"
        shutil.rmtree(out, ignore_errors=True)
        # OpenVINO's int8 as QDQ ONNX (run by OpenVINO): one bench run then times fp32 and both int8 files on
        # both runtimes (a native IR in the set would keep the plain .onnx off OpenVINO)
        fmt = ["--format", "onnx"] if backend == "openvino" else []
        r, doc = step(key, ["quantize", "-m", onnx, "-d", str(data["calib"]), "-b", backend, *fmt, "-o", str(out)])
        fid = fidelity_figures(doc)
        r["fidelity"] = fid
        r["figure"] = fid["min_cosine"]
        found = sorted(p for p in (out.glob("*_quantize") if out.is_dir() else []) if p.is_dir()) or sorted(
            p for p in (out.rglob("*_quantize") if out.is_dir() else []) if p.is_dir()
        )
        if r["rc"] == 0 and found:
            int8[backend] = found[-1]
            r["artifact"] = rel(found[-1])
        elif r["rc"] == 0:
            r["why"] = f"no *_quantize artifact folder under {out}"
            r["figure"] = None
        res[key] = judge(r)

    for backend in QUANT_BACKENDS:
        key = f"eval_{backend}"
        if key not in steps:
            continue
        if backend not in int8:
            res[key] = skipped(f"no int8 artifact from quantize_{backend}")
            continue
        r, doc = step(key, ["eval", "-m", str(int8[backend]), "--reference", onnx, "-d", str(data["heldout"])])
        fid = fidelity_figures(doc)
        r["fidelity"] = fid
        r["figure"] = fid["min_cosine"]
        res[key] = judge(r)

    if "bench_int8" in steps:
        if not int8:
            res["bench_int8"] = skipped("no int8 artifact from either quantize step")
        else:
            targets = [onnx, *(str(p) for p in int8.values())]
            r, doc = step("bench_int8", ["bench", *targets, *rt_args, *shape_args(model.shapes), *BENCH_FLAGS])
            labelled = {"fp32": model.onnx_path, **{f"int8_{b}": p for b, p in int8.items()}}
            thr, ratios = int8_ratios(doc, labelled)
            r["throughput"] = thr
            r["ratio"] = ratios
            if isinstance(doc, dict) and doc.get("skipped"):
                r["skipped_combinations"] = doc["skipped"]
            errs = [
                f"{row.get('artifact')} on {row.get('runtime')}: {row.get('error')}"
                for row in bench_rows(doc)
                if row.get("status") != "ok"
            ]
            if errs:
                r["combination_errors"] = errs
            got = {rt: v for rt, d in ratios.items() for v in d.values() if v is not None}
            r["figure"] = ratios if got else None
            if r["rc"] == 0 and not got:
                r["why"] = "exit 0 but no runtime ran both the fp32 model and an int8 artifact"
            res["bench_int8"] = judge(r)
    return res


# --------------------------------------------------------------------------- report


def figure_text(step: str, r: dict[str, Any]) -> str:
    if r["status"] == "skipped":
        return r["why"]
    if r["status"] != "ok":
        return r.get("error") or r.get("why") or (r.get("stderr_tail") or [""])[-1]
    f = r.get("figure")
    if step == "inspect":
        opset = f["opset"].get("ai.onnx", f["opset"]) if isinstance(f["opset"], dict) else f["opset"]
        return f"inputs {', '.join(r.get('inputs') or [])}; opset {opset}, params {f['params']}"
    if step == "bench":
        return ", ".join(f"{rt} {v:.0f}/s" for rt, v in f.items())
    if step == "fuse":
        return f"parity max|diff| {f['max_abs_diff']}, passed {f['passed']}"
    if step.startswith(("quantize", "eval")):
        fid = r["fidelity"]
        mean = "?" if fid["mean_cosine"] is None else f"{fid['mean_cosine']:.4f}"
        diff = "?" if fid["max_abs_diff"] is None else f"{fid['max_abs_diff']:.3g}"
        return f"min cos {fid['min_cosine']:.4f}, mean {mean}, max|diff| {diff}"
    if step == "bench_int8":
        return "; ".join(
            f"{rt}: " + ", ".join(f"{k} {'n/a' if v is None else f'x{v}'}" for k, v in d.items()) for rt, d in f.items()
        )
    return str(f)


def print_table(models: dict[str, Any]) -> None:
    print(f"{'model':<12} {'step':<20} {'status':<9} {'rc':>4} {'sec':>6}  figure / error")
    for name, m in models.items():
        if "build_error" in m:
            print(f"{name:<12} {'(build)':<20} {'FAILED':<9} {'':>4} {'':>6}  {m['build_error']}")
        for step, r in m.get("steps", {}).items():
            rc = "" if r.get("rc", "") is None else str(r.get("rc", ""))
            sec = f"{r['seconds']:.1f}" if r.get("seconds") is not None else ""
            text = figure_text(step, r)
            print(f"{name:<12} {step:<20} {r['status']:<9} {rc:>4} {sec:>6}  {text[:110]}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "any_model")
    ap.add_argument("--only", nargs="*", default=None, choices=list(BUILDERS), help="run only these models")
    ap.add_argument("--steps", nargs="*", default=None, choices=STEPS, help="run only these steps")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per step")
    ap.add_argument("--calib-n", type=int, default=CALIB_N, help="calibration samples per model")
    ap.add_argument("--heldout-n", type=int, default=HELDOUT_N, help="held-out samples per model (eval)")
    args = ap.parse_args()
    from slimline.api import environment, write_json

    out = args.out if args.out.is_absolute() else ROOT / args.out
    work_root, logs = out / "work", out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    names = args.only or list(BUILDERS)
    steps = args.steps or STEPS
    models: dict[str, Any] = {}
    t_all = time.perf_counter()
    for i, name in enumerate(names):
        work = work_root / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            model = BUILDERS[name](work)
            data = {}
            for kind, n, seed in (("calib", args.calib_n, SEED + 1 + i), ("heldout", args.heldout_n, SEED + 101 + i)):
                data[kind] = work / f"{name}_{kind}.npz"
                np.savez(data[kind], **model.sample(np.random.default_rng(seed), n))
        except Exception as e:  # noqa: BLE001 - a model that does not build is recorded, the others still run
            models[name] = {"build_error": f"{type(e).__name__}: {e}", "steps": {}}
            print(f"{name}: the model did not build: {type(e).__name__}: {e}", flush=True)
            continue
        entry: dict[str, Any] = {
            "onnx": rel(model.onnx_path),
            "inputs": {k: list(v) for k, v in model.shapes.items()},
            "calibration": rel(data["calib"]),
            "heldout": rel(data["heldout"]),
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        print(f"{name}: built in {entry['build_seconds']} s; running {len(steps)} steps", flush=True)
        entry["steps"] = run_model(name, model, data, work, logs, steps, args.timeout)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        models[name] = entry

    all_steps = [r for m in models.values() for r in m["steps"].values()]

    def count(status: str) -> int:
        return sum(1 for r in all_steps if r["status"] == status)

    summary = {
        "steps": len(all_steps),
        "ok": count("ok"),
        "one_line_failures": count("one_line"),
        "tracebacks": count("traceback"),
        "other_failures": count("bad"),
        "skipped": count("skipped"),
        "passed": sum(1 for r in all_steps if r["pass"]),
        "build_failures": sum(1 for m in models.values() if "build_error" in m),
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    settings = {
        "models": names,
        "steps": steps,
        "seed": SEED,
        "calibration_samples": args.calib_n,
        "heldout_samples": args.heldout_n,
        "runtimes": RUNTIMES,
        "quantize_backends": QUANT_BACKENDS,
        "bench_flags": BENCH_FLAGS,
        "step_timeout_s": args.timeout,
        "pass_rule": "exit 0 with its figure, or non-zero with exactly one 'error:' line and no traceback",
    }
    doc = {"models": models, "summary": summary, "settings": settings, "environment": environment()}
    write_json(out / "results.json", doc)
    print()
    print_table(models)
    print(
        f"\n{summary['passed']}/{summary['steps']} steps pass: {summary['ok']} ok, {summary['one_line_failures']} "
        f"one-line failures, {summary['tracebacks']} tracebacks, {summary['other_failures']} other failures, "
        f"{summary['skipped']} skipped ({summary['seconds']} s) -> {out / 'results.json'}"
    )
    if summary["build_failures"]:
        print("some models did not build: nothing was tested for them")
    return 1 if summary["tracebacks"] or summary["build_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
