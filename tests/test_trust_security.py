"""Artifacts and run folders are data: loading one never imports code it names, unless the user trusts it.

A hostile ``model.json`` names ``os:system`` with a command that would create a marker file; no command
that reads such a folder (eval, bench, export, predict, report, ``load_torch``) may run it. A user's own
factory still loads when the user names it again (``--model``/``--reference``, a recipe's ``model``) or
passes ``--trust-code``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from slimline.artifact import Artifact, load_torch, save_torch
from slimline.cli import app
from slimline.errors import ModelError
from slimline.models import load_model, trust_state, trusted_factories

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"
META = {"model": "x", "input_shape": [1, 8, 8], "num_classes": 10, "data": {"name": "digits"}}


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's own model module on sys.path (and PYTHONPATH, for worker processes)."""
    mod = f"usermodels_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{mod}.py").write_text(
        "from torch import nn\n\n\ndef tiny():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(SRC), os.environ.get("PYTHONPATH", "")]))
    return f"{mod}:tiny"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _user_artifact(folder: Path, spec: str) -> Artifact:
    return save_torch(load_model(spec), folder, META, [{"step": "baseline", "model": spec}])


def _hostile(folder: Path, spec: str, marker: Path) -> Path:
    """A torch artifact whose model.json asks for ``os.system("touch MARKER")``."""
    _user_artifact(folder, spec)
    arch = json.loads((folder / "model.json").read_text())
    arch["source"] = {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    (folder / "model.json").write_text(json.dumps(arch))
    return folder


def _one_line_refusal(out: str) -> None:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "module 'os'" in lines[0] and "os:system" in lines[0] and "--trust-code" in lines[0], out
    assert "Traceback" not in out


def test_load_torch_never_imports_code_named_in_an_artifact(tmp_path: Path, factory: str, marker: Path) -> None:
    art = Artifact.load(_hostile(tmp_path / "art", factory, marker))
    with pytest.raises(ModelError, match=r"model\.json names code to run \(module 'os', factory 'os:system'\)"):
        load_torch(art)
    with trusted_factories(factory), pytest.raises(ModelError, match="--trust-code"):
        load_torch(art)  # trusting another factory does not trust this one
    assert not marker.exists()


def test_code_nested_in_a_builtin_rebuilder_is_refused(tmp_path: Path, factory: str, marker: Path) -> None:
    art = _hostile(tmp_path / "art", factory, marker)
    arch = json.loads((art / "model.json").read_text())
    arch["source"] = {
        "factory": "slimline.quant.backends.torch_fx:rebuild",
        "kwargs": {
            "float_source": arch["source"],
            "float_layers": {},
            "input_shape": [1, 8, 8],
            "settings": {},
            "keep_float": [],
        },
    }
    (art / "model.json").write_text(json.dumps(arch))
    with pytest.raises(ModelError, match="module 'os'"):
        load_torch(Artifact.load(art))
    assert not marker.exists()


def test_user_factory_loads_when_named_or_trusted(tmp_path: Path, factory: str) -> None:
    art = _user_artifact(tmp_path / "art", factory)
    with pytest.raises(ModelError, match=f"--model {factory}"):
        load_torch(art)
    assert load_torch(art, trust_code=True)[1].out_features == 10
    with trusted_factories(factory):
        assert load_torch(art)[1].out_features == 10
        assert trust_state() == {"factories": [factory], "trust_code": False}
    assert trust_state() == {"factories": [], "trust_code": False}
    zoo = save_torch(load_model("small_cnn"), tmp_path / "zoo", META, [])
    load_torch(zoo)  # zoo models need no trust


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "-m", "{art}", "-d", "digits", "--limit", "10"],
        ["bench", "{art}", "-r", "torch", "--no-peak", "--min-runs", "1", "--min-seconds", "0", "--warmup", "0"],
        ["export", "{art}", "-o", "{tmp}/out"],
        ["fuse", "{art}", "-o", "{tmp}/fused"],
        ["predict", "{art}", "-d", "digits", "--limit", "10", "--out", "{tmp}/p.npy"],
    ],
    ids=lambda a: a[0],
)
def test_cli_refuses_hostile_artifact(tmp_path: Path, factory: str, marker: Path, args: list[str]) -> None:
    art = _hostile(tmp_path / "art", factory, marker)
    res = runner.invoke(app, [a.format(art=art, tmp=tmp_path) for a in args])
    assert res.exit_code == 1, res.output
    _one_line_refusal(res.output)
    assert not marker.exists()


def test_bench_worker_refuses_without_trust_from_parent(tmp_path: Path, factory: str, marker: Path) -> None:
    from slimline.bench.worker import run_spec

    art = _hostile(tmp_path / "art", factory, marker)
    spec: dict[str, Any] = {"artifact": str(art), "runtime": "torch", "batch_size": 1, "min_runs": 1}
    with pytest.raises(ModelError, match="--trust-code"):
        run_spec(spec)
    with pytest.raises(ModelError, match="--trust-code"):
        run_spec(spec | {"trust": {"factories": [factory], "trust_code": False}})
    assert not marker.exists()


def test_report_never_runs_code_of_a_run_folder(tmp_path: Path, factory: str, marker: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _hostile(run / "00_baseline", factory, marker)
    _hostile(run / "01_prune", factory, marker)
    stages = [
        {"index": 0, "step": "baseline", "artifact": "00_baseline", "record": {"step": "baseline", "model": "x"}},
        {"index": 1, "step": "prune", "artifact": "01_prune", "record": {"step": "prune", "index": 1}},
    ]
    recipe = {"name": "hostile", "model": {"name": "os:system"}, "data": {"name": "digits"}, "steps": []}
    (run / "results.json").write_text(json.dumps({"recipe": recipe, "environment": {}, "stages": stages}))
    res = runner.invoke(app, ["report", str(run), "--json", str(tmp_path / "rep.json")])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    assert not marker.exists()
    assert (run / "report.html").is_file()


def test_cli_loads_user_factory_when_trusted(tmp_path: Path, factory: str) -> None:
    art = _user_artifact(tmp_path / "art", factory).path
    res = runner.invoke(app, ["eval", "-m", str(art), "-d", "digits", "--limit", "20"])
    assert res.exit_code == 1 and "--trust-code" in res.output
    for extra in (["--trust-code"], ["--reference", factory]):
        res = runner.invoke(app, ["eval", "-m", str(art), "-d", "digits", "--limit", "20", *extra])
        assert res.exit_code == 0, res.output
        assert "top1=" in res.output


def test_bench_worker_gets_the_trust_of_its_parent(tmp_path: Path, factory: str) -> None:
    """The worker process is told what the bench command trusts (its own factory from the command line)."""
    out = tmp_path / "bench.json"
    args = [
        "bench",
        factory,
        "-r",
        "torch",
        "--no-peak",
        "--min-runs",
        "1",
        "--min-seconds",
        "0",
        "--warmup",
        "0",
        "--no-tuned-batch",
        "--input-shape",
        "1,8,8",
        "--workdir",
        str(tmp_path / "work"),
        "--json",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["results"]
    assert rows and all(r["status"] == "ok" for r in rows), rows


def test_pipeline_trusts_its_own_recipe_model(tmp_path: Path, factory: str) -> None:
    from slimline.api import run

    recipe = {
        "name": "own",
        "model": {"name": factory},
        "data": {"name": "digits", "test_limit": 20},
        "steps": [{"evaluate": {}}],
        "output_dir": str(tmp_path / "run"),
    }
    results = run(recipe)
    assert results["stages"][-1]["record"]["metrics"]["n"] == 20
