from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter, load_torch, save_torch
from slimline.errors import SlimlineError
from slimline.fileio import atomic_path, torch_save, write_json
from slimline.models import build_model


def test_atomic_write_crash_leaves_no_half_file(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    torch_save({"v": torch.ones(3)}, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("simulated crash mid-write")
    assert target.read_bytes() == before  # old content intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp file left behind


def test_torch_save_failure_keeps_previous(tmp_path: Path) -> None:
    target = tmp_path / "w.pt"
    torch_save({"a": torch.zeros(2)}, target)

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        torch_save({"bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True)["a"].shape == (2,)
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


def test_artifact_writer_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with ArtifactWriter(tmp_path / "01_step", "onnx", {}, []) as w:
            w.add("model", "model.onnx").write_bytes(b"x")
            raise ValueError("step failed")
    assert list(tmp_path.iterdir()) == []


def test_save_load_roundtrip_with_changed_shapes(tmp_path: Path) -> None:
    model = build_model("cifar_resnet20").eval()
    # shrink a block the way channel pruning does and drop another block, as depth pruning does
    block = model.layer1[0]
    block.conv1 = nn.Conv2d(16, 8, 3, 1, 1, bias=False)
    block.bn1 = nn.BatchNorm2d(8)
    block.conv2 = nn.Conv2d(8, 16, 3, 1, 1, bias=False)
    model.layer2[1] = nn.Identity()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    art = save_torch(model, tmp_path / "art", {"input_shape": [3, 32, 32]}, [{"step": "baseline"}])
    again = Artifact.load(tmp_path / "art")
    assert again.kind == "torch" and again.lineage == [{"step": "baseline"}]
    rebuilt = load_torch(again)
    assert rebuilt.layer1[0].conv1.out_channels == 8
    assert isinstance(rebuilt.layer2[1], nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), want)
    assert art.size_bytes() > 0


def test_artifact_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SlimlineError, match="not a slimline artifact"):
        Artifact.load(tmp_path)
    (tmp_path / "artifact.json").write_text("{broken")
    with pytest.raises(SlimlineError, match="corrupt"):
        Artifact.load(tmp_path)


def test_write_json_numpy(tmp_path: Path) -> None:
    import numpy as np

    write_json(tmp_path / "r.json", {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1.5, "b": [0, 1, 2]}
