"""ResNet-18 224x224 int8: slimline's artifacts against by-hand peers, measured in the same run.

Peers, each written the way their documentation shows, with nothing of slimline in the loop:

* ``ort-qdq``: ``quant_pre_process`` then ``onnxruntime.quantization.quantize_static`` (QDQ, U8S8,
  per-channel weights) and a plain ``InferenceSession`` loop;
* ``openvino-nncf``: ``nncf.quantize`` on the OpenVINO model (defaults) and a plain infer-request loop;
* ``torchao-pt2e``: ``torch.export`` -> torchao's ``prepare_pt2e``/``convert_pt2e`` with the
  ``X86InductorQuantizer`` -> ``torch.compile`` (skipped with the reason when torchao is missing).

slimline's contenders are its ``onnxruntime`` and ``openvino`` quantize backends with their defaults,
measured by ``slimline bench``'s harness. Every model gets the same weights (seeded init) and the
same 64 calibration images (crops of scikit-image photos from ``examples/make_photo_folder.py`` when
``--calib-dir`` exists, else seeded noise). Every measurement is a fresh process with the same
threads; rounds alternate the order so drift on the machine hits all alike.

    benchmarks/resnet18_peers/run.sh peers --threads 2 --batch 16 --rounds 2 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHAPE = (3, 224, 224)


def calibration(calib_dir: Path, n: int = 64) -> tuple[np.ndarray, str]:
    if (calib_dir / "train").is_dir():
        from slimline.api import load_dataset

        ds = load_dataset("imagefolder", "train", calib_dir).sample(n, seed=0)
        return ds.inputs(), f"{n} crops from {calib_dir}"
    return np.random.default_rng(0).standard_normal((n, *SHAPE)).astype(np.float32), f"{n} seeded noise images"


def build(work: Path, calib: np.ndarray) -> dict[str, Any]:
    """fp32 ONNX/IR, the by-hand int8 peers and slimline's int8 artifacts, all from the same weights."""
    import torch

    from slimline.api import (
        ArtifactWriter,
        FloatModel,
        QuantConfig,
        export_openvino,
        get_backend,
        import_openvino,
        load_model,
    )

    torch.manual_seed(0)
    model = load_model("resnet18").eval()
    model.slimline_source = {"zoo": "resnet18", "kwargs": {}}
    torch.save(model.state_dict(), work / "resnet18.pt")
    np.save(work / "calib.npy", calib)
    src = FloatModel(SHAPE, work, torch_model=model)
    fp32 = src.onnx()
    export_openvino(fp32, SHAPE, work / "fp32.xml")
    made: dict[str, Any] = {}

    # by hand: ONNX Runtime static QDQ, U8S8, per-channel
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    import onnx

    assert onnx.load(str(fp32)).graph.input[0].name == "input"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(work / "peer_pre.onnx"))  # the documented first step
    quantize_static(
        str(work / "peer_pre.onnx"),
        str(work / "peer_ort.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    made["ort-qdq (by hand)"] = ("ort", work / "peer_ort.onnx")

    # by hand: NNCF on the OpenVINO model
    import nncf

    ov = import_openvino()
    qmodel = nncf.quantize(
        ov.Core().read_model(str(work / "fp32.xml")), nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    )
    ov.save_model(qmodel, str(work / "peer_ov.xml"))
    made["openvino-nncf (by hand)"] = ("openvino", work / "peer_ov.xml")
    made["torchao-pt2e+compile (by hand)"] = ("torchao", work / "resnet18.pt")

    # slimline's backends, defaults
    meta = {"model": "resnet18", "input_shape": list(SHAPE), "num_classes": 1000}
    for name, backend, runtime in (
        ("slimline_int8_ort", "onnxruntime", "onnxruntime"),
        ("slimline_int8_openvino", "openvino", "openvino"),
    ):
        res = get_backend(backend).quantize(src, calib, QuantConfig(), [], work / name)
        with ArtifactWriter(work / f"{name}_art", res.kind, {**meta, **res.meta}, [{"step": name}]) as w:
            for role, f in res.files.items():
                shutil.copyfile(work / name / f, w.add(role, f))
        assert w.artifact is not None
        made[f"slimline {backend}"] = ("slimline:" + runtime, w.artifact.path)
    return made


def torchao_loop(weights: str, calib_file: str, batch: int, seconds: float, warmup: int) -> dict:
    import torch

    from slimline.api import load_model

    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        return {"error": f"torchao PT2E does not import here: {e}"}
    model = load_model("resnet18", weights).eval()
    calib = torch.from_numpy(np.load(calib_file))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, *SHAPE)).astype(np.float32))
    with torch.no_grad():
        exported = torch.export.export(model, (x,)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for i in range(0, len(calib), 16):
            prepared(calib[i : i + 16])
        converted = convert_pt2e(prepared)
        fn = torch.compile(converted)
        for _ in range(max(warmup, 2)):
            fn(x)
        from byhand import timed_loop

        return timed_loop(lambda: fn(x), batch, seconds)


def measure(kind: str, path: Path, args: argparse.Namespace) -> dict:
    from byhand import run_byhand, run_slimline

    if kind.startswith("slimline:"):
        return run_slimline(path, kind.split(":", 1)[1], args.batch, args.threads, args.seconds, args.warmup)
    if kind in ("ort", "openvino"):
        return run_byhand(kind, path, args.batch, args.threads, args.seconds, args.warmup)
    from slimline.api import worker_env

    cmd = [
        sys.executable,
        __file__,
        "--torchao",
        str(path),
        "--calib",
        str(path.parent / "calib.npy"),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--seconds",
        str(args.seconds),
    ]
    out = subprocess.run(cmd, env=worker_env(args.threads), capture_output=True, text=True, timeout=1800)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def main() -> None:
    from byhand import add_timing_args

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap)
    ap.add_argument("--calib-dir", type=Path, default=ROOT / "data" / "photos-224")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "quant_resnet18_peers")
    ap.add_argument("--torchao", help=argparse.SUPPRESS)
    ap.add_argument("--calib", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torchao:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(torchao_loop(args.torchao, args.calib, args.batch, args.seconds, args.warmup)))
        return

    from slimline.api import environment, write_json

    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    calib, calib_note = calibration(args.calib_dir)
    made = build(work, calib)
    results: dict[str, list[dict]] = {k: [] for k in made}
    for rnd in range(args.rounds):
        names = list(made) if rnd % 2 == 0 else list(reversed(made))
        for name in names:
            kind, path = made[name]
            r = measure(kind, Path(path), args)
            results[name].append(r)
            shown = f"{r['throughput']:7.2f} img/s, median {r['median_ms']:.0f} ms" if "error" not in r else r["error"]
            print(f"round {rnd + 1} {name:32s} {shown}", flush=True)
    table = {}
    for name, rs in results.items():
        ok = [r["throughput"] for r in rs if "error" not in r]
        table[name] = {
            "img_s": statistics.mean(ok) if ok else None,
            "error": next((r["error"] for r in rs if "error" in r), None),
        }
    peers = {k: v["img_s"] for k, v in table.items() if "by hand" in k and v["img_s"]}
    ours = {k: v["img_s"] for k, v in table.items() if k.startswith("slimline") and v["img_s"]}
    best_peer, best_ours = max(peers, key=peers.__getitem__), max(ours, key=ours.__getitem__)
    ratio = ours[best_ours] / peers[best_peer]
    summary = {
        "model": "resnet18 (seeded random init; throughput only)",
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "calibration": calib_note,
        "table": table,
        "best_peer": best_peer,
        "best_slimline": best_ours,
        "ratio_best_slimline_to_best_peer": ratio,
        "measurements": results,
        "environment": environment(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    write_json(args.out / "summary.json", summary)
    print(f"\n| int8 artifact | img/s (batch {args.batch}, {args.threads} threads) |\n|---|---|")
    for name, v in table.items():
        shown = f"{v['img_s']:.1f}" if v["img_s"] else v["error"]
        print(f"| {name} | {shown} |")
    print(f"\nbest slimline ({best_ours}) / best peer ({best_peer}) = {ratio:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
