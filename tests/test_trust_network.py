"""No traffic beyond loopback: eval, ONNX export + ONNX Runtime, and OpenVINO, traced in a network namespace.

The child runs in a fresh network namespace (only loopback up) under ``strace``; every ``connect``/
``sendto``/``sendmsg`` to a non-loopback address (or a DNS lookup) fails the test. ONNX Runtime's
telemetry fires about 30 s after it is imported, so the child stays alive past that.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import CIFAR_DIR, RESNET20

netcheck = pytest.importorskip("netcheck")

SRC = Path(__file__).resolve().parents[1] / "src"
LINGER_S = 33.0  # ONNX Runtime's telemetry uploader starts ~30 s after import

CHILD = r"""
import json, os, sys, time
out = sys.argv[1]
import slimline  # first: sets ORT_DISABLE_TELEMETRY / NNCF_CI before anything imports onnxruntime
seen = {"ORT_DISABLE_TELEMETRY": os.environ.get("ORT_DISABLE_TELEMETRY"), "NNCF_CI": os.environ.get("NNCF_CI")}
t_import = time.monotonic()
import numpy as np
from slimline.cli import app
app(["eval", "-m", "cifar_resnet20", "--weights", sys.argv[2], "-d", "cifar10-sample", "--data-dir", sys.argv[3],
     "--limit", "50"], standalone_mode=False)
from slimline.models import load_model
from slimline.onnx_export import export_onnx_artifact
from slimline.runtimes import availability, open_session
net = load_model("small_cnn")
art, _ = export_onnx_artifact(net, os.path.join(os.path.dirname(out), "onnx"), {"input_shape": [1, 28, 28]}, [])
x = np.zeros((2, 1, 28, 28), np.float32)
seen["ort_shape"] = list(np.asarray(open_session(art, "onnxruntime").run(x)).shape)
if availability().get("openvino", (False, ""))[0]:
    seen["openvino_shape"] = list(np.asarray(open_session(art, "openvino").run(x)).shape)
time.sleep(max(0.0, float(sys.argv[4]) - (time.monotonic() - t_import)))
with open(out, "w") as f:
    json.dump(seen, f)
"""


def test_no_traffic_beyond_loopback(tmp_path: Path) -> None:
    why = netcheck.unavailable()
    if why:
        pytest.skip(f"network check unavailable: {why}")
    if not RESNET20.is_file():
        pytest.skip(f"shared CIFAR-10 weights not found at {RESNET20}")
    script, out = tmp_path / "child.py", tmp_path / "seen.json"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "NNCF_CI")}
    env |= {"PYTHONPATH": str(SRC), "SLIMLINE_PROGRESS": "0", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    cmd = [sys.executable, str(script), str(out), str(RESNET20), str(CIFAR_DIR), str(LINGER_S)]
    rc, attempts = netcheck.non_loopback_attempts(cmd, env, timeout=150)
    assert rc == 0, f"the child failed (exit {rc}); see the captured output"
    assert attempts == [], "traffic beyond loopback:\n" + "\n".join(attempts)
    seen = json.loads(out.read_text())
    assert seen["ORT_DISABLE_TELEMETRY"] == "1" and seen["NNCF_CI"] == "1", seen
    assert seen["ort_shape"] == [2, 10]


def test_netcheck_flags_outside_addresses() -> None:
    v4 = '1 connect(3, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("13.107.5.1")}, 16) = -1'
    lo4 = '1 connect(3, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0'
    dns = '1 sendto(3, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.53")}, 16) = 1'
    v6 = (
        "1 connect(4, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), "
        'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1'
    )
    lo6 = v6.replace("2001:db8::1", "::1")
    unix = '1 connect(5, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110) = 0'
    assert [netcheck.offending(x) for x in (v4, lo4, dns, v6, lo6, unix)] == [True, False, True, True, False, False]
