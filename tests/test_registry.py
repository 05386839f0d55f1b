"""Registries load their built-in plug-ins and other packages' entry points the same way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _install_fake_plugin(site: Path, entry: str) -> None:
    """A package ``fakeplug`` with a dist-info whose entry_points.txt names ``entry`` (no pip needed)."""
    (site / "fakeplug").mkdir(parents=True)
    (site / "fakeplug" / "__init__.py").write_text("")
    (site / "fakeplug" / "runtime.py").write_text(
        textwrap.dedent("""
        from slimline.runtimes import RUNTIMES, Runtime

        @RUNTIMES.register("fake-rt")
        class FakeRuntime(Runtime):
            name = "fake-rt"
            kinds = ("onnx",)

            def load(self, artifact, threads=None):
                raise NotImplementedError
    """)
    )
    (site / "fakeplug" / "broken.py").write_text("raise RuntimeError('half-installed')\n")
    info = site / "fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry)


def _run(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{site}", "PATH": "/usr/bin:/bin", "SLIMLINE_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_an_entry_point_plugin_is_registered(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path, "[slimline.runtimes]\nfake = fakeplug.runtime\n")
    res = _run(
        tmp_path,
        "from slimline.runtimes import runtime_names, get_runtime; "
        "print(runtime_names()); print(get_runtime('fake-rt').kinds)",
    )
    assert res.returncode == 0, res.stderr
    names = res.stdout.splitlines()[0]
    assert "'fake-rt'" in names and "'onnxruntime'" in names and "'torch'" in names  # plug-in beside built-ins
    assert "('onnx',)" in res.stdout


def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path, "[slimline.steps]\nbad = fakeplug.broken\n")
    res = _run(
        tmp_path,
        "from slimline.steps import step_names\n"
        "try:\n    step_names()\nexcept Exception as e:\n    print(type(e).__name__, e)",
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    assert out.startswith("SlimlineError") and "'bad'" in out and "fakeplug.broken" in out and "half-installed" in out
    assert len(out.splitlines()) == 1


def test_builtins_need_no_installation() -> None:
    """Run from a source tree (no entry points installed), every built-in plug-in is still there."""
    from slimline.quant.backends import backend_names
    from slimline.runtimes import runtime_names
    from slimline.steps import step_names

    assert {"torch", "onnxruntime"} <= set(runtime_names())
    assert {"train", "prune", "quantize", "export_onnx"} <= set(step_names())
    assert {"onnxruntime", "openvino"} <= set(backend_names())
