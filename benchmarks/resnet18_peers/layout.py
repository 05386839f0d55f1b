"""ResNet-18, batch 16, PyTorch eager: plain vs fused vs channels_last vs both, in one process.

The four variants go through the real path: a resnet18 artifact (random init, random non-trivial
BatchNorm statistics), the ``fuse`` step (BN folded into the saved weights; torch.fx Conv+add+ReLU
fusion switched on), and ``open_session(artifact, "torch", fuse=..., channels_last=...)``:

- plain:         the original artifact, NCHW, no fusion
- fused:         the fused artifact with the fx fusion, NCHW
- channels_last: the original artifact, channels_last
- both:          the fused artifact with the fx fusion, channels_last

They take turns (``slimline.optimize.tune.alternate``) after a warm-up, so background load hits
all alike; medians are reported, with speedups against plain. Timings on a shared machine are noisy:
compare the ratios, not the absolute times.

    benchmarks/resnet18_peers/run.sh layout --rounds 7 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
    return model.eval()


def main() -> None:
    from slimline import apply_step, load_model, save_torch
    from slimline.api import alternate, environment, medians_ms, open_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path("runs/optimize/resnet18_layout.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="r18-") as tmp:
        base = save_torch(
            randomize_bn(load_model("resnet18")),
            Path(tmp) / "00_baseline",
            {"model": "resnet18", "input_shape": [3, 224, 224], "num_classes": 1000},
            [],
        )
        fused = apply_step("fuse", base, Path(tmp) / "01_fuse", layout="nchw")
        sessions = {
            "plain": open_session(base, "torch", threads=args.threads),
            "fused": open_session(fused, "torch", threads=args.threads, fuse=True, channels_last=False),
            "channels_last": open_session(base, "torch", threads=args.threads, channels_last=True),
            "both": open_session(fused, "torch", threads=args.threads, fuse=True, channels_last=True),
        }
        x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
        ref = sessions["plain"].run(x)
        diffs = {k: float(np.abs(s.run(x) - ref).max()) for k, s in sessions.items()}
        times = alternate({k: (lambda s=s: s.run(x)) for k, s in sessions.items()}, rounds=args.rounds, warmup=2)
        ms = medians_ms(times)
    from slimline.api import count_macs, fp32_peak

    peak = fp32_peak(torch.get_num_threads(), seconds=3.0)["gflops"]
    gflop = 2 * count_macs(load_model("resnet18"), (3, 224, 224)) * args.batch / 1e9
    efficiency = {k: gflop / (v / 1e3) / peak for k, v in ms.items()}
    result = {
        "model": "resnet18 (random init, random BN statistics)",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "median_ms": ms,
        "all_ms": {k: [round(t * 1e3, 2) for t in v] for k, v in times.items()},
        "speedup_vs_plain": {k: ms["plain"] / v for k, v in ms.items()},
        "max_abs_diff_vs_plain": diffs,
        "gemm_peak_gflops": peak,
        "efficiency_vs_peak": efficiency,
        "fuse_record": {k: fused.lineage[-1][k] for k in ("fold_bn", "fx_fuse", "graph_nodes_original")},
        "environment": environment(),
        "note": "measured in one process, variants taking turns, on a shared machine (other jobs running)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from slimline.api import write_json

    write_json(args.out, result)
    for k in ms:
        print(
            f"{k:14s} median {ms[k]:9.1f} ms   {result['speedup_vs_plain'][k]:.2f}x vs plain   "
            f"{100 * efficiency[k]:4.0f}% of GEMM peak   max |diff| {diffs[k]:.2e}"
        )
    print(
        f"fp32 GEMM peak {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads); ideal speedup over plain "
        f"{1 / efficiency['plain']:.2f}x"
    )
    print(f"threads {result['threads']}, batch {args.batch}, rounds {args.rounds}; wrote {args.out}")


if __name__ == "__main__":
    main()
