"""Every command's ``--help`` renders literally (no markup, no emoji codes) and shows one runnable example."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from slimline.cli import app

_ROOT = typer.main.get_command(app)
_COMMANDS = sorted(getattr(_ROOT, "commands", {}))


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def _flat(text: str) -> str:
    return "".join(text.split())  # wrapping may break lines (and words at hyphens) anywhere


def test_there_are_commands() -> None:
    assert {"run", "bench", "export", "inspect"} <= set(_COMMANDS)


@pytest.mark.parametrize("name", _COMMANDS)
def test_help_renders_every_option_literally(name: str) -> None:
    out = _flat(_help(name))
    cmd = _ROOT.commands[name]  # type: ignore[attr-defined]
    for param in cmd.params:
        text = getattr(param, "help", None)
        if text:
            assert _flat(text) in out, f"{name}: option help {text!r} is not printed as written"
    assert not re.search(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", out), f"{name}: emoji in help"


@pytest.mark.parametrize("name", _COMMANDS)
def test_help_has_one_runnable_example(name: str) -> None:
    examples = re.findall(r"Example: (slimline \S+.*)", _help(name))
    assert len(examples) == 1, f"`slimline {name} --help` should show exactly one 'Example:' line"
    assert examples[0].split()[1] == name


def test_factory_syntax_is_not_emoji() -> None:
    out = _help("bench")
    assert "🏭" not in out


def test_version_and_completion() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("slimline ")
    assert "--show-completion" in _help() and "--install-completion" in _help()


def test_sensitivity_refuses_an_unknown_kind_in_one_line(tmp_path) -> None:
    args = ["sensitivity", "-m", "small_cnn", "-d", "fashion-mnist", "-k", "bogus", "-o", str(tmp_path / "s")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "--kind 'bogus' is not one of weight, channel, block" in result.output
    assert not (tmp_path / "s").exists()
