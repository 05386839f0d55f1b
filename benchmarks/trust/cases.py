"""The trust cases: a hostile folder, the network, stale checkpoints, concurrent runs, invalid values,
SIGTERM during a benchmark, a full disk and a busy machine, each tried as a user would (the CLI in fresh
processes) and checked. Writes ``OUT/results.json``: ``{"cases": {name: {expected, observed, pass}}, ...}``.

``python benchmarks/trust/cases.py --out runs/benchmarks/trust [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
SHARED = next(
    (Path(p) for p in (os.environ.get("SLIMLINE_SHARED"), ROOT.parent / "shared") if p and Path(p).is_dir()),
    ROOT.parent / "shared",
)
R20 = SHARED / "data" / "cifar10" / "resnet20-12fca82f.th"
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), SLIMLINE_PROGRESS="0")

Case = Callable[[Path], dict[str, Any]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


class Skip(Exception):
    """The case cannot run on this machine (the reason is recorded)."""


# --------------------------------------------------------------------------- helpers


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "slimline", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=timeout,
        cwd=cwd,
    )
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "seconds": round(time.perf_counter() - t0, 2)}


def error_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("error:")]


def one_line(res: dict[str, Any]) -> bool:
    """Failed with exactly one error line and no traceback."""
    text = res["stdout"] + res["stderr"]
    return res["rc"] != 0 and "Traceback" not in text and len(error_lines(text)) == 1


def last_error(res: dict[str, Any]) -> str:
    lines = error_lines(res["stdout"] + res["stderr"])
    return lines[-1] if lines else (res["stderr"].strip().splitlines() or [""])[-1]


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        raise Skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def hostile_artifact(folder: Path, marker: Path) -> Path:
    """A torch artifact whose architecture names os.system with a command that creates ``marker``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.zeros(1)}, folder / "weights.pt")
    (folder / "model.json").write_text(
        json.dumps({"source": {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}, "layers": {}})
    )
    (folder / "artifact.json").write_text(
        json.dumps(
            {
                "kind": "torch",
                "files": {"model": "weights.pt", "architecture": "model.json"},
                "meta": {"model": "os:system", "input_shape": [1, 8, 8], "num_classes": 10},
                "lineage": [{"step": "baseline"}],
            }
        )
    )
    return folder


# --------------------------------------------------------------------------- the cases


@case
def hostile_artifact_folder(work: Path) -> dict[str, Any]:
    marker = work / "PWNED"
    art = hostile_artifact(work / "evil", marker)
    runs = {
        "eval": cli("eval", "-m", str(art), "-d", "digits"),
        "bench": cli("bench", str(art), "-r", "torch", "-b", "1", "--no-peak", "--min-runs", "1"),
        "export": cli("export", str(art), "-o", str(work / "exp")),
    }
    observed = {k: {"rc": r["rc"], "message": last_error(r)} for k, r in runs.items()} | {"code_ran": marker.exists()}
    ok = not marker.exists() and all(
        r["rc"] != 0 and "--trust-code" in (r["stdout"] + r["stderr"]) for r in runs.values()
    )
    return {
        "expected": "no code named in the folder runs; each command refuses in one line naming --trust-code",
        "observed": observed,
        "pass": ok,
    }


@case
def hostile_run_folder(work: Path) -> dict[str, Any]:
    marker = work / "PWNED"
    run = work / "run"
    hostile_artifact(run / "00_baseline", marker)
    (run / "results.json").write_text(
        json.dumps(
            {
                "recipe": {"name": "evil", "model": {"name": "os:system"}, "data": {"name": "digits"}},
                "stages": [{"index": 0, "step": "baseline", "artifact": "00_baseline", "record": {"step": "baseline"}}],
            }
        )
    )
    res = cli("report", str(run))
    return {
        "expected": "report reads the folder as data: no code runs",
        "observed": {"rc": res["rc"], "code_ran": marker.exists(), "message": last_error(res) or "ok"},
        "pass": not marker.exists() and (res["rc"] == 0 or one_line(res)),
    }


NET_SCRIPT = r"""
import time, sys
t0 = time.time()
import slimline, os
print("ORT_DISABLE_TELEMETRY", os.environ.get("ORT_DISABLE_TELEMETRY"), flush=True)
from slimline.api import run
run(sys.argv[1], output_dir=sys.argv[2])
time.sleep(max(0.0, float(sys.argv[3]) - (time.time() - t0)))
"""

CONTROL_SCRIPT = "import time, onnxruntime, openvino; time.sleep(float(__import__('sys').argv[1]))"


def _strace_netns(cmd: list[str], log: Path, timeout: float) -> subprocess.Popen[str]:
    if not shutil.which("strace") or not shutil.which("unshare"):
        raise Skip("strace or unshare is missing")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        raise Skip("unshare -n is not permitted here (needs root or user namespaces)")
    inner = f"ip link set lo up 2>/dev/null; exec strace -f -qq -e trace=connect,sendto,sendmsg -o {log} " + " ".join(
        f"'{c}'" for c in cmd
    )
    return subprocess.Popen(
        ["unshare", "-n", "sh", "-c", inner], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def _non_loopback(log: Path) -> list[str]:
    bad = []
    for line in log.read_text().splitlines() if log.exists() else []:
        if "AF_INET6" in line:
            if 'inet_pton(AF_INET6, "::1"' not in line:
                bad.append(line)
        elif "AF_INET" in line and 'inet_addr("127.' not in line:
            bad.append(line)
    return bad


@case
def network_namespace(work: Path) -> dict[str, Any]:
    """A whole recipe (train, ONNX, int8 on both backends, OpenVINO, bench, report) in a fresh network namespace
    under strace, kept alive 40 s after import (ONNX Runtime's telemetry fired about 30 s after import); a
    control process importing onnxruntime and openvino without slimline shows what the trace catches."""
    recipe = write_recipe(
        work / "net.yaml",
        """
name: net
model: small_cnn_half
data: {name: digits, val_size: 200}
steps:
  - train: {epochs: 1}
  - export_onnx: {}
  - quantize: {backend: onnxruntime, calibration_size: 64}
  - quantize: {backend: openvino, calibration_size: 64, input: export_onnx}
benchmark: {runtimes: [torch, onnxruntime, openvino], batch_sizes: [1], min_runs: 3, min_seconds: 0.1}
""",
    )
    seconds = 40.0
    p = _strace_netns(
        [sys.executable, "-c", NET_SCRIPT, str(recipe), str(work / "run"), str(seconds)], work / "slimline.strace", 600
    )
    c = _strace_netns([sys.executable, "-c", CONTROL_SCRIPT, str(seconds)], work / "control.strace", 120)
    out, err = p.communicate(timeout=900)
    c.communicate(timeout=300)
    bad, control = _non_loopback(work / "slimline.strace"), _non_loopback(work / "control.strace")
    observed = {
        "rc": p.returncode,
        "non_loopback_attempts": len(bad),
        "examples": bad[:3],
        "ort_telemetry_env": "ORT_DISABLE_TELEMETRY 1" in out,
        "control_without_slimline_attempts": len(control),
        "control_examples": control[:2],
        "error": last_error({"stdout": out, "stderr": err}) if p.returncode else None,
    }
    return {
        "expected": "the recipe exits 0 and attempts no connection beyond loopback",
        "observed": observed,
        "pass": p.returncode == 0 and not bad,
    }


def _train_recipe(path: Path, lr: float, out: Path, epochs: int = 4) -> Path:
    return write_recipe(
        path,
        f"""
name: stale
model: {{name: cifar_resnet20, weights: {R20}}}
data: {{name: cifar10-sample, val_size: 100, train_limit: 1200}}
steps:
  - train: {{epochs: {epochs}, lr: {lr}, batch_size: 64}}
output_dir: {out}
""",
    )


@case
def stale_checkpoint(work: Path) -> dict[str, Any]:
    import torch

    run = work / "run"
    a = _train_recipe(work / "a.yaml", 0.01, run)
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimline", "run", str(a)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    ckpts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None and not ckpts:
        ckpts = [p for p in run.rglob("*checkpoint*.pt")]
        time.sleep(0.2)
    proc.kill()
    proc.communicate()
    if not ckpts:
        return {
            "expected": "a checkpoint to resume from",
            "observed": "the run ended before writing one",
            "pass": False,
        }
    b = _train_recipe(work / "b.yaml", 0.3, run)
    res = cli("run", str(b))
    fresh = cli("run", str(_train_recipe(work / "c.yaml", 0.3, work / "fresh")))
    record = json.loads((run / "01_train" / "record.json").read_text()) if (run / "01_train").exists() else {}
    same = False
    if res["rc"] == 0 and fresh["rc"] == 0:
        w1 = torch.load(run / "01_train" / "weights.pt", weights_only=True)
        w2 = torch.load(work / "fresh" / "01_train" / "weights.pt", weights_only=True)
        same = all(torch.equal(w1[k], w2[k]) for k in w1)
    said = "afresh" in (res["stdout"] + res["stderr"])
    observed = {
        "rc": res["rc"],
        "said_restart": said,
        "record_lr": record.get("config", {}).get("lr"),
        "record_resume": record.get("resume"),
        "weights_equal_fresh_lr_0.3_run": same,
    }
    return {
        "expected": "the checkpoint of the lr 0.01 run is discarded, the step restarts and says so; weights equal "
        "a fresh lr 0.3 run",
        "observed": observed,
        "pass": res["rc"] == 0 and said and same,
    }


@case
def two_runs_one_folder(work: Path) -> dict[str, Any]:
    run = work / "run"
    recipe = write_recipe(
        work / "r.yaml",
        f"""
name: twice
model: small_cnn_half
data: {{name: digits, val_size: 200}}
steps:
  - train: {{epochs: 3}}
benchmark: {{runtimes: [torch], batch_sizes: [1], min_runs: 5, min_seconds: 0.2}}
output_dir: {run}
""",
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "slimline", "run", str(recipe)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    second = cli("run", str(recipe))
    out, err = first.communicate(timeout=600)
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
    bench = json.loads((run / "benchmark.json").read_text()) if (run / "benchmark.json").exists() else {}
    consistent = bool(results) and results.get("benchmark", {}).get("created") == bench.get("created")
    observed = {
        "first_rc": first.returncode,
        "second_rc": second["rc"],
        "second_message": last_error(second),
        "second_seconds": second["seconds"],
        "results_and_benchmark_from_one_run": consistent,
    }
    ok = first.returncode == 0 and one_line(second) and "another slimline run" in last_error(second) and consistent
    return {
        "expected": "the second run stops at once with one line naming the lock holder; the first completes",
        "observed": observed,
        "pass": ok,
    }


@case
def invalid_values(work: Path) -> dict[str, Any]:
    bad_recipe = write_recipe(
        work / "bad.yaml",
        f"""
name: bad
model: small_cnn_half
data: {{name: digits}}
steps:
  - train: {{epochs: 1}}
benchmark: {{runtimes: [torch], batch_sizes: [0], threads: -1, warmup: -3}}
output_dir: {work / "badrun"}
""",
    )
    folder = work / "images"
    for split in ("train", "test"):
        for cls in ("cat", "dog", "emu"):
            (folder / split / cls).mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "emu"):  # "dog" stays empty: its label would shift emu's
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / split / cls / f"{i}.png")
    tries = {
        "bench -b 0": ["bench", "small_cnn_half", "-r", "torch", "-b", "0", "--no-peak"],
        "bench -t -1": ["bench", "small_cnn_half", "-r", "torch", "-t", "-1", "--no-peak"],
        "bench -r onnxruntime:thread=2": ["bench", "small_cnn_half", "-r", "onnxruntime:thread=2", "--no-peak"],
        "eval --limit -5": ["eval", "-m", "small_cnn_half", "-d", "digits", "--limit", "-5"],
        "eval --limit 0": ["eval", "-m", "small_cnn_half", "-d", "digits", "--limit", "0"],
        "run with an invalid benchmark section": ["run", str(bad_recipe)],
        "imagefolder with an empty class": [
            "eval",
            "-m",
            "small_cnn_half",
            "-d",
            "imagefolder",
            "--data-dir",
            str(folder),
        ],
        "RGB data into a 1-channel model": [
            "train",
            "-m",
            "small_cnn_half",
            "-d",
            "cifar10-sample",
            "--epochs",
            "1",
            "-o",
            str(work / "chan"),
        ],
    }
    observed = {}
    for name, args in tries.items():
        r = cli(*args, timeout=300)
        observed[name] = {"rc": r["rc"], "one_line": one_line(r), "message": last_error(r), "seconds": r["seconds"]}
    steps_ran = (work / "badrun" / "00_baseline").exists() or (work / "chan" / "00_baseline").exists()
    ok = all(v["rc"] != 0 and (v["one_line"] or v["rc"] == 2) for v in observed.values()) and not steps_ran
    return {
        "expected": "each is refused before any work, in one line (usage errors: exit 2)",
        "observed": observed | {"stage_written_before_refusal": steps_ran},
        "pass": ok,
    }


@case
def sigterm_during_bench(work: Path) -> dict[str, Any]:
    tmp = work / "tmp"
    tmp.mkdir()
    env = dict(ENV, TMPDIR=str(tmp))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slimline",
            "bench",
            "small_cnn",
            "-r",
            "torch",
            "-b",
            "1",
            "--no-peak",
            "--min-seconds",
            "120",
            "--workdir",
            str(work / "wd"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and not workers and proc.poll() is None:
        workers = [c for c in children(proc.pid)]
        time.sleep(0.2)
    time.sleep(2.0)  # the worker is measuring now
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    time.sleep(2.0)
    left_alive = [w for w in workers if alive(w)]
    for w in left_alive:
        os.kill(w, signal.SIGKILL)
    leftovers = sorted(p.name for p in tmp.iterdir())
    observed = {
        "rc": proc.returncode,
        "workers_seen": len(workers),
        "workers_alive_after": len(left_alive),
        "temp_left": leftovers,
        "message": last_error({"stdout": out, "stderr": err}),
    }
    ok = bool(workers) and not left_alive and not leftovers and proc.returncode == 143
    return {
        "expected": "the worker dies with the bench, temporary folders go, exit 143 with one line",
        "observed": observed,
        "pass": ok,
    }


@case
def disk_full(work: Path) -> dict[str, Any]:
    with tmpfs(work / "small", "size=256k") as small:
        exp = cli("export", "small_cnn", "-o", str(small / "exported"))
        recipe = write_recipe(
            work / "r.yaml",
            f"""
name: full
model: small_cnn
data: {{name: digits, val_size: 200}}
steps:
  - export_onnx: {{}}
output_dir: {small / "run"}
""",
        )
        run = cli("run", str(recipe))
        left = sorted(
            str(p.relative_to(small)) for p in small.rglob("*") if p.name.startswith(".") and p.name != ".slimline.lock"
        )  # the run folder's lock stays
    observed = {
        "export": {"rc": exp["rc"], "message": last_error(exp)},
        "run": {"rc": run["rc"], "message": last_error(run)},
        "hidden_temporaries_left": left,
    }
    ok = all(one_line(r) and "disk is full" in last_error(r) and "MB free" in last_error(r) for r in (exp, run))
    return {
        "expected": "one line: the disk is full, with the path and the free space; no temporaries left",
        "observed": observed,
        "pass": ok and not left,
    }


@case
def other_failures_one_line(work: Path) -> dict[str, Any]:
    (work / "afile").write_text("x")
    corrupt = work / "corrupt"
    corrupt.mkdir()
    (corrupt / "artifact.json").write_text('{"files": {}}')
    (work / "zero.pt").write_bytes(b"")
    tries = {
        "-o under a file": ["export", "small_cnn", "-o", str(work / "afile" / "x")],
        "artifact.json without kind": ["eval", "-m", str(corrupt), "-d", "digits"],
        "0-byte weights file": ["eval", "-m", "small_cnn", "--weights", str(work / "zero.pt"), "-d", "digits"],
    }
    observed = {}
    for name, args in tries.items():
        r = cli(*args)
        observed[name] = {"rc": r["rc"], "one_line": one_line(r), "message": last_error(r)}
    with contextlib.suppress(Skip), tmpfs(work / "ro", "size=64k,ro") as ro:
        r = cli("export", "small_cnn", "-o", str(ro / "x"))
        observed["read-only filesystem"] = {"rc": r["rc"], "one_line": one_line(r), "message": last_error(r)}
    ok = all(v["one_line"] and "unexpected" not in v["message"] for v in observed.values())
    return {"expected": "each failure is one line naming the cause and the fix", "observed": observed, "pass": ok}


@case
def interrupted_run(work: Path) -> dict[str, Any]:
    run = work / "run"
    recipe = _train_recipe(work / "r.yaml", 0.01, run, epochs=30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimline", "run", str(recipe)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(run.rglob("*checkpoint*.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    msg = last_error({"stdout": out, "stderr": err})
    kept = (run / "00_baseline" / "artifact.json").exists()
    observed = {"rc": proc.returncode, "message": msg, "baseline_kept": kept, "traceback": "Traceback" in err}
    ok = proc.returncode == 130 and "run the same command again" in msg.lower() and kept and "Traceback" not in err
    return {
        "expected": "exit 130 with one line saying what was kept and how to resume",
        "observed": observed,
        "pass": ok,
    }


@case
def file_permissions(work: Path) -> dict[str, Any]:
    recipe = write_recipe(
        work / "r.yaml",
        f"""
name: perms
model: small_cnn_half
data: {{name: digits, val_size: 200}}
steps:
  - train: {{epochs: 1}}
output_dir: {work / "run"}
""",
    )
    old = os.umask(0o022)
    try:
        res = cli("run", str(recipe))
    finally:
        os.umask(old)
    modes = {
        p: oct((work / "run" / p).stat().st_mode & 0o777)
        for p in ("results.json", "report.html", "01_train", "01_train/artifact.json", "01_train/weights.pt")
        if (work / "run" / p).exists()
    }
    want = {
        "results.json": "0o644",
        "report.html": "0o644",
        "01_train": "0o755",
        "01_train/artifact.json": "0o644",
        "01_train/weights.pt": "0o644",
    }
    return {
        "expected": f"with umask 022: {want}",
        "observed": {"rc": res["rc"], "modes": modes},
        "pass": res["rc"] == 0 and modes == want,
    }


@case
def busy_latency_table(work: Path) -> dict[str, Any]:
    """The latency table measured while a CPU-bound process runs beside it: re-measured or refused, never
    silently kept; the planner's prediction is checked against the timed pruned graph."""
    env = dict(ENV, SLIMLINE_CACHE=str(work / "cache"))
    args = [
        "prune",
        "-m",
        "cifar_resnet20",
        "--weights",
        str(R20),
        "-d",
        "cifar10-sample",
        "--method",
        "block",
        "--target",
        "speedup=1.4",
        "--epochs",
        "0",
        "--samples",
        "100",
        "--limit",
        "200",
        "--no-test",
        "--threads",
        "2",
    ]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = cli(*args, "-o", str(work / "busy"), env=env, timeout=900)
    finally:
        hog.kill()
        hog.wait()
    quiet = cli(*args, "-o", str(work / "quiet"), env=dict(env, SLIMLINE_CACHE=str(work / "cache2")), timeout=900)
    observed: dict[str, Any] = {"busy": {"rc": busy["rc"], "message": last_error(busy)}, "quiet": {"rc": quiet["rc"]}}
    for name in ("busy", "quiet"):
        rec = next((work / name).rglob("record.json"), None) if (work / name).exists() else None
        if rec is not None:
            r = json.loads(rec.read_text())
            observed[name]["latency"] = {
                k: v
                for k, v in (r.get("latency") or {}).items()
                if k in ("predicted_speedup", "measured_speedup", "busy", "remeasured", "prediction_error")
            }
    refused = busy["rc"] != 0 and "busy" in last_error(busy)
    remeasured = busy["rc"] == 0
    ok = (refused or remeasured) and quiet["rc"] == 0
    return {
        "expected": "busy: the table is re-measured or refused with one line; quiet: the plan is made",
        "observed": observed,
        "pass": ok,
    }


def _example_prune_recipe(work: Path, name: str, sens_dir: Path | None, allow_busy: bool = False) -> Path:
    """The CIFAR ResNet-56 example's prune step as it is (sensitivity, latency table, plan, the planner's check
    against the timed pruned graph), with its recovery switched off: the prediction is made before recovery."""
    import yaml

    r = yaml.safe_load((ROOT / "examples" / "cifar_resnet56.yaml").read_text())
    prune = next(s["prune"] for s in r["steps"] if "prune" in s)
    prune.pop("input", None)
    prune["finetune"] = {"epochs": 0}
    if allow_busy:
        prune["latency"] = {**prune.get("latency", {}), "allow_busy": True}
    if sens_dir is not None:
        prune["sensitivity"] = {
            **prune.get("sensitivity", {}),
            "files": [str(sens_dir / f"sensitivity_{k}.json") for k in ("block", "channel")],
        }
    r["model"]["weights"] = str((ROOT / r["model"]["weights"]).resolve())
    r |= {"name": name, "output_dir": str(work / name), "steps": [{"prune": prune}]}
    r.pop("benchmark", None)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


@case
def cifar_prune_prediction(work: Path) -> dict[str, Any]:
    """The example's prune step on a quiet machine, then again with a CPU-bound process beside it (the latency
    table from the quiet run's cache, the sensitivity reused, ``latency: {allow_busy: true}``: without it the
    busy table is refused, see busy_latency_table): the speed-up the planner predicted vs the one measured on
    the whole pruned graph, both in the step's record."""
    env = dict(ENV, SLIMLINE_CACHE=str(work / "cache"))
    observed: dict[str, Any] = {}
    for name in ("quiet", "busy"):
        sens = work / "quiet" / "01_prune" if name == "busy" else None
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if name == "busy" else None
        try:
            res = cli(
                "run", str(_example_prune_recipe(work, name, sens, allow_busy=name == "busy")), env=env, timeout=1800
            )
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        rec_file = work / name / "01_prune" / "record.json"
        rec = json.loads(rec_file.read_text()) if rec_file.exists() else {}
        lat = rec.get("latency_ms") or {}
        pred, meas = lat.get("predicted_speedup"), lat.get("measured_speedup")
        observed[name] = {
            "rc": res["rc"],
            "seconds": res["seconds"],
            "message": last_error(res) or None,
            "predicted_speedup": pred,
            "measured_speedup": meas,
            "error": abs(pred / meas - 1) if pred and meas else None,
            "blocks_removed": len((rec.get("plan") or {}).get("blocks", [])),
            "calibration_rounds": len(rec.get("latency_calibration") or []),
        }
    ok = all(o["error"] is not None and o["error"] <= 0.15 for o in observed.values())
    return {"expected": "predicted vs measured speed-up within 15%, quiet and busy", "observed": observed, "pass": ok}


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "trust")
    ap.add_argument("--only", nargs="*", default=None, help="run only these cases")
    args = ap.parse_args()
    from slimline.api import environment, write_json

    results: dict[str, Any] = {}
    names = args.only or list(CASES)
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"trust-{name}-") as tmp:
            try:
                res = CASES[name](Path(tmp))
            except Skip as e:
                res = {"expected": None, "observed": f"skipped: {e}", "pass": None}
            except Exception as e:  # noqa: BLE001 - a broken case is a failed case, recorded
                res = {"expected": None, "observed": f"the case itself failed: {type(e).__name__}: {e}", "pass": False}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        print(
            f"{'PASS' if res['pass'] else ('SKIP' if res['pass'] is None else 'FAIL')}  {name}  ({res['seconds']} s)",
            flush=True,
        )
    doc = {
        "cases": results,
        "passed": sum(1 for r in results.values() if r["pass"]),
        "failed": sum(1 for r in results.values() if r["pass"] is False),
        "skipped": sum(1 for r in results.values() if r["pass"] is None),
        "seconds": round(time.perf_counter() - t_all, 1),
        "environment": environment(),
    }
    write_json(args.out / "results.json", doc)
    print(f"{doc['passed']} passed, {doc['failed']} failed, {doc['skipped']} skipped -> {args.out / 'results.json'}")
    return 0 if doc["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
