from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RESNET20
from typer.testing import CliRunner

from slimline.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("run", "train", "eval", "demo"):
        assert cmd in res.output
    sub = runner.invoke(app, ["eval", "--help"])
    assert sub.exit_code == 0 and "Example:" in sub.output


def test_eval_json(tmp_path: Path, cifar_dir: Path) -> None:
    out = tmp_path / "m.json"
    args = ["eval", "-m", "cifar_resnet20", "--weights", str(RESNET20), "-d", "cifar10-sample", "--limit", "100"]
    res = runner.invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["n"] == 100 and data["top1"] >= 80
    assert set(data) >= {"top1", "top5", "n", "top1_ci95", "runtime"}


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", "-m", "small_cnn", "-d", "digits", "--weights", str(tmp_path / "missing.pt")])
    assert res.exit_code == 1
    assert "error:" in res.output and "does not exist" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["run", str(tmp_path / "none.yaml")])
    assert res.exit_code == 1 and "recipe" in res.output and "does not exist" in res.output


def test_train_command_writes_artifact(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "train",
            "-m",
            "small_cnn_half",
            "-d",
            "digits",
            "--epochs",
            "1",
            "-o",
            str(tmp_path / "t"),
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t" / "01_train" / "weights.pt").exists()
    assert json.loads(out.read_text())["stages"][1]["record"]["val"]["n"] > 0


def test_help_texts_render_literally() -> None:
    """Every command's --help shows each option's help text as written (no markup, no ':name:' emoji codes)."""
    import typer

    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    assert "bench" in commands
    for name, cmd in commands.items():
        res = runner.invoke(app, [name, "--help"], terminal_width=100)
        assert res.exit_code == 0, (name, res.output)
        flat = " ".join(res.output.split())
        assert all(ord(ch) < 0x2600 for ch in res.output), f"{name} --help has a symbol substituted"
        for param in cmd.params:
            text = getattr(param, "help", None)
            if text:
                assert " ".join(text.split()) in flat, (name, param.name, text)
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("slimline ")


def test_counts_below_one_are_refused_before_any_work(tmp_path: Path) -> None:
    for args, field in [
        (["-b", "0"], "batch_sizes"),
        (["-t", "-1"], "threads"),
        (["--repeats", "0"], "repeats"),
        (["--min-runs", "0"], "min_runs"),
    ]:
        # bench's settings are checked by the model a recipe's benchmark section uses: one line naming the field
        res = runner.invoke(app, ["bench", "small_cnn", *args, "--workdir", str(tmp_path / "w")])
        assert res.exit_code == 1 and f"error: bench: {field}" in res.output, args
    assert not (tmp_path / "w").exists()
    bad = [
        ["eval", "-m", "small_cnn", "-d", "digits", "--limit", "-5"],
        ["eval", "-m", "small_cnn", "-d", "digits", "--limit", "0"],
        ["train", "-m", "small_cnn", "-d", "digits", "--limit", "0", "-o", str(tmp_path / "t")],
    ]
    for args in bad:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "Invalid value" in res.output, args
    assert not (tmp_path / "t").exists()


def test_bench_refuses_a_misspelt_runtime_option_at_once(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "small_cnn", "-r", "onnxruntime:thread=2", "--workdir", str(tmp_path / "w")])
    assert res.exit_code == 1
    assert "runtime onnxruntime has no option 'thread' (did you mean 'threads'?)" in " ".join(res.output.split())
    assert not (tmp_path / "w").exists()  # nothing was built or exported


def test_options_mirroring_a_settings_model_are_declared_there() -> None:
    """`quantize` and `bench` options take default and help from QuantizeOptions / BenchSettings (declared once)."""
    import typer

    from slimline.bench.settings import BenchSettings
    from slimline.steps.quantize import QuantizeOptions

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    pairs = {
        "quantize": (QuantizeOptions, {"model_format": "format", "symmetric_activations": "activation_symmetric"}),
        "bench": (BenchSettings, {"batch": "batch_sizes"}),
    }
    for command, (model, renamed) in pairs.items():
        checked = 0
        for param in commands[command].params:
            field = renamed.get(param.name, param.name)
            if field not in model.model_fields or not model.model_fields[field].description:
                continue
            checked += 1
            assert model.model_fields[field].description in (param.help or ""), (command, param.name)
            default = model.model_fields[field].get_default(call_default_factory=True)
            if field not in ("threads", "exclude", "max_seconds"):
                assert param.default == default, (command, param.name, param.default, default)
        assert checked >= 8, (command, checked)
