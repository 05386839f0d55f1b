"""Average the weights of several recoveries of one ResNet-56 pruning plan ("model soup").

Students fine-tuned from the same pruned starting point may stay in one basin, so that their
weights average into one model of the same size and speed (whether they do is what this
measures). BatchNorm statistics are re-estimated for the averaged weights on training images.
The figure to choose by is, as in ``recovery.py``, the fidelity to the unpruned
model on blended validation images (training data only); the 1,000 test images are evaluated
once for the record. Each student's top-1 agreement with the unpruned model on its own training
images and on the test images is given too (with one student: just that report).

    benchmarks/prune_resnet56/run.sh soup --plan runs/benchmarks/cifar_resnet56/run/03_prune/record.json \\
        --students STUDENT_A.pt STUDENT_B.pt   (student.pt files the recovery part wrote)
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from recovery import WEIGHTS, blended_fidelity, load_plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", type=Path, required=True, help="the plan the students were pruned to")
    ap.add_argument("--students", type=Path, nargs="+", required=True, help="student.pt files of the recovery script")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-test", action="store_true")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    args = ap.parse_args()
    import torch

    from slimline.api import apply_plan, evaluate, load_dataset, load_model, recalibrate_bn, write_json

    torch.set_num_threads(args.threads)
    t0 = time.time()
    teacher = load_model("cifar_resnet56", args.weights).eval()
    train, val = load_dataset("cifar10-sample", "train").split_off(200, seed=0)
    test = None if args.no_test else load_dataset("cifar10-sample", "test")
    states = [torch.load(p, map_location="cpu", weights_only=True) for p in args.students]
    rows = []
    plan = load_plan(args.plan)

    def student(state: dict) -> torch.nn.Module:
        s = copy.deepcopy(teacher)
        apply_plan(s, torch.zeros(1, 3, 32, 32), plan)
        s.load_state_dict(state)
        return s.eval()

    def predictions(net: torch.nn.Module, data: Any) -> torch.Tensor:
        with torch.no_grad():
            return net(torch.from_numpy(data.inputs())).argmax(1)

    teacher_says = {"train": predictions(teacher, train)}
    if test is not None:
        teacher_says["test"] = predictions(teacher, test)

    def agreement(s: torch.nn.Module, split: str, data: Any) -> float:
        return 100 * float((predictions(s, data) == teacher_says[split]).float().mean())

    for path, state in zip(args.students, states, strict=True):
        s = student(state)
        row = {
            "student": str(path),
            "val_fidelity": blended_fidelity(s, teacher, val)["mean"],
            "train_agreement": agreement(s, "train", train),
        }
        if test is not None:
            row["test_top1"] = evaluate(s, test)["top1"]
            row["test_agreement"] = agreement(s, "test", test)
        rows.append(row)
    avg = {
        k: (sum(st[k].double() for st in states) / len(states)).to(states[0][k].dtype)
        if states[0][k].is_floating_point()
        else states[0][k]
        for k in states[0]
    }
    soup = student(avg)
    recalibrate_bn(soup, train.sample(2048, seed=1))
    soup.eval()
    out = {"students": rows, "soup": {"val_fidelity": blended_fidelity(soup, teacher, val)}}
    if test is not None:
        ref, got = evaluate(teacher, test), evaluate(soup, test)
        out["soup"]["test_top1"] = {"unpruned": ref["top1"], "pruned": got["top1"], "n": got["n"]}
        out["soup"]["drop_points"] = ref["top1"] - got["top1"]
    out["seconds"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(soup.state_dict(), args.out / "student.pt")
    write_json(args.out / "summary.json", out)
    for r in rows:
        line = f"{r['student']}: fidelity {r['val_fidelity']:.1f}%, agreement on train {r['train_agreement']:.1f}%"
        if test is not None:
            line += f", on test {r['test_agreement']:.1f}%, test top-1 {r['test_top1']:.1f}%"
        print(line)
    f = out["soup"]["val_fidelity"]
    line = f"soup of {len(states)}: fidelity on blended val images {f['mean']:.1f}% (n={f['n']})"
    if test is not None:
        t = out["soup"]["test_top1"]
        line += f"; test top-1 (n={t['n']}) {t['unpruned']:.2f}% -> {t['pruned']:.2f}%"
        line += f" (drop {out['soup']['drop_points']:.2f})"
    print(line)


if __name__ == "__main__":
    main()
