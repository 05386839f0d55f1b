"""``slimline predict`` on the 10,000 Fashion-MNIST test images: 1 worker vs 2 workers, and a run
killed (SIGKILL) mid-way then resumed.

Checks that 2 workers give the same predictions as 1, and that the resumed run's output file is
byte-for-byte the file of an uninterrupted run with the same settings. The model is small_cnn
(random init, seed 0: the predictions only have to agree, not to be right).

    benchmarks/fmnist/run.sh predict
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from slimline.api import load_model, predict, save_torch, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/optimize/predict"))
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--threads", type=int, default=2, help="threads in total")
    ap.add_argument("--shard-size", type=int, default=500)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    art = save_torch(load_model(args.model), out / "model", {"model": args.model, "input_shape": [1, 28, 28]}, [])
    common = {"threads": args.threads, "batch_size": 100, "shard_size": args.shard_size}

    t0 = time.perf_counter()
    r1 = predict(art, "fashion-mnist", out / "w1.npy", workers=1, **common)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    r2 = predict(art, "fashion-mnist", out / "w2.npy", workers=2, **common)
    t2 = time.perf_counter() - t0
    p1, p2 = np.load(out / "w1.npy"), np.load(out / "w2.npy")
    same = bool((p1 == p2).all())
    print(f"1 worker: {t1:.1f} s, 2 workers: {t2:.1f} s; n={len(p1)}; identical predictions: {same}")

    # a run killed mid-way (SIGKILL: no cleanup at all), then the same command again
    target = out / "killed.npy"
    shards = target.with_name(target.name + ".shards")
    cmd = [
        str(Path(sys.executable).with_name("slimline")),
        "predict",
        str(art.path),
        "--data",
        "fashion-mnist",
        "--out",
        str(target),
        "--workers",
        "2",
        "--threads",
        str(args.threads),
        "--batch-size",
        "100",
        "--shard-size",
        str(args.shard_size),
        "--restart",
    ]
    env = dict(os.environ, SLIMLINE_PROGRESS="0")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    n_total = (10000 + args.shard_size - 1) // args.shard_size
    while proc.poll() is None and len(list(shards.glob("shard_*.npy"))) < n_total // 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI process and its workers
    proc.wait()
    done_at_kill = len(list(shards.glob("shard_*.npy")))
    existed = target.exists()
    print(f"killed after {done_at_kill}/{n_total} shards; output exists: {existed}")
    resume_json = out / "resume.json"
    subprocess.run([*cmd[:-1], "--json", str(resume_json)], env=env, check=True, capture_output=True, text=True)
    import json

    resumed = json.loads(resume_json.read_text())
    identical = target.read_bytes() == (out / "w2.npy").read_bytes()
    print(f"resumed: {resumed['shards_reused']} shards reused, {resumed['shards'] - resumed['shards_reused']} computed")
    print(f"resumed output byte-identical to the uninterrupted 2-worker run: {identical}")
    write_json(
        out / "summary.json",
        {
            "n": len(p1),
            "model": args.model,
            "threads_total": args.threads,
            "shard_size": args.shard_size,
            "one_worker": {"seconds": t1, **r1},
            "two_workers": {"seconds": t2, **r2},
            "identical_predictions_1_vs_2_workers": same,
            "kill": {
                "shards_done_at_kill": done_at_kill,
                "shards_total": n_total,
                "output_existed_after_kill": existed,
                "shards_reused_on_resume": resumed["shards_reused"],
                "resumed_identical_bytes": identical,
            },
            "note": "shared busy machine: timings are indicative only",
        },
    )
    if not (same and identical and done_at_kill < n_total and not existed):
        sys.exit(1)


if __name__ == "__main__":
    main()
