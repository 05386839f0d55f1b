"""Artifacts: a model at one stage, saved as a folder with its files and ``artifact.json``.

An artifact's ``lineage`` holds the records of the steps that made it. Torch artifacts are saved
as the recipe to rebuild the architecture (a zoo name or ``module:factory``), the constructor
arguments of every layer whose shape a step changed (pruning shrinks tensors), and a plain
``state_dict`` loaded with ``weights_only=True``, so no pickled code is ever loaded.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimline.errors import ModelError, SlimlineError, disk_full_check, first_line
from slimline.fileio import dir_mode, write_json

ARTIFACT_JSON = "artifact.json"
KINDS = ("torch", "onnx", "openvino", "tflite")

# Layers whose constructor arguments we can read back from the instance.
_LAYER_ARGS: dict[type[nn.Module], Any] = {
    nn.Conv2d: lambda m: {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    },
    nn.Linear: lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    nn.BatchNorm2d: lambda m: {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    },
    nn.BatchNorm1d: lambda m: {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    },
    nn.Identity: lambda m: {},
}


ALTERNATE_ROLES = frozenset({"ort_model"})  # other forms of the model file, not counted in its size


@dataclass
class Artifact:
    """A model at one stage of a run."""

    kind: str  # "torch" | "onnx" | "openvino" | "tflite"
    path: Path  # the artifact's folder
    files: dict[str, str] = field(default_factory=dict)  # role -> file name inside ``path``
    meta: dict[str, Any] = field(default_factory=dict)  # data spec, model name, runtime config
    lineage: list[dict[str, Any]] = field(default_factory=list)  # records of the steps that made it

    @property
    def model_file(self) -> Path:
        return self.path / self.files["model"]

    @property
    def name(self) -> str:
        return self.path.name

    def size_bytes(self) -> int:
        """Bytes on disk of the model files (weights and graph), not counting ``artifact.json`` or
        alternative forms of the same model (``ort_model``, ONNX Runtime's offline-optimized copy)."""
        return sum(
            (self.path / f).stat().st_size
            for role, f in self.files.items()
            if role not in ALTERNATE_ROLES and (self.path / f).exists()
        )

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": self.files, "meta": self.meta, "lineage": self.lineage}

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        folder = Path(path)
        if folder.is_file() and folder.name == ARTIFACT_JSON:
            folder = folder.parent
        f = folder / ARTIFACT_JSON
        if not f.exists():
            raise SlimlineError(f"{folder} is not a slimline artifact (no {ARTIFACT_JSON} there)")
        try:
            d = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SlimlineError(f"{f} is corrupt ({e}); re-create the artifact with the step that made it") from e
        problem = _describe_problem(d)
        if problem:
            raise SlimlineError(f"{f} is corrupt: {problem}; re-create the artifact with the step that made it")
        return cls(kind=d["kind"], path=folder, files=d["files"], meta=d.get("meta", {}), lineage=d.get("lineage", []))

    def with_record(self, record: dict[str, Any]) -> Artifact:
        """A copy of this artifact's description whose lineage ends with ``record``."""
        return Artifact(self.kind, self.path, dict(self.files), dict(self.meta), [*self.lineage, record])


def _describe_problem(d: Any) -> str:
    """What is wrong with the content of an ``artifact.json``, or '' when nothing is."""
    if not isinstance(d, dict):
        return "it holds no JSON object"
    if d.get("kind") not in KINDS:
        return f"its 'kind' is {d.get('kind')!r}, not one of {', '.join(KINDS)}"
    files = d.get("files")
    if not isinstance(files, dict) or not isinstance(files.get("model"), str):
        return "its 'files' name no model file"
    for role, name in files.items():
        if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            return f"its file {role!r} ({name!r}) is not a name inside the artifact folder"
    if not isinstance(d.get("meta", {}), dict) or not isinstance(d.get("lineage", []), list):
        return "its 'meta' is not an object or its 'lineage' not a list"
    return ""


class ArtifactWriter:
    """Build an artifact folder in a temporary place and move it into position on success.

    >>> with ArtifactWriter(run_dir / "02_prune", "torch", meta, lineage) as w:
    ...     torch.save(state, w.tmp / "weights.pt"); w.add("weights", "weights.pt")
    ...     # w.artifact is the final Artifact once the block exits
    """

    def __init__(self, dest: str | Path, kind: str, meta: dict[str, Any], lineage: list[dict[str, Any]]) -> None:
        if kind not in KINDS:
            raise ValueError(f"artifact kind must be one of {KINDS}, not {kind!r}")
        self.dest = Path(dest)
        self.kind, self.meta, self.lineage = kind, meta, lineage
        self.files: dict[str, str] = {}
        self.artifact: Artifact | None = None

    def __enter__(self) -> ArtifactWriter:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", dir=self.dest.parent))
        self.tmp.chmod(dir_mode())  # mkdtemp makes it 0700; the artifact gets the mode mkdir would give it
        return self

    def add(self, role: str, filename: str) -> Path:
        self.files[role] = filename
        return self.tmp / filename

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            try:
                disk_full_check(self.dest, exc)  # before the partial files go and free the space again
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)
            return
        art = Artifact(self.kind, self.dest, self.files, self.meta, self.lineage)
        write_json(self.tmp / ARTIFACT_JSON, art.to_json())
        if self.dest.exists():
            old = self.dest.with_name(f".{self.dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            self.dest.rename(old)
            self.tmp.rename(self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.dest)
        self.artifact = art


# --------------------------------------------------------------------------- torch models


def layer_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Constructor arguments of every rebuildable layer, keyed by module path."""
    specs = {}
    for name, m in model.named_modules():
        fn = _LAYER_ARGS.get(type(m))
        if fn is not None and name:
            specs[name] = {"type": type(m).__name__, "args": fn(m)}
    return specs


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_layer_specs(model: nn.Module, specs: dict[str, dict[str, Any]]) -> nn.Module:
    """Reshape ``model`` (freshly built) so that its layers match ``specs`` (saved after pruning)."""
    types = {t.__name__: t for t in _LAYER_ARGS}
    current = layer_specs(model)
    for path, spec in specs.items():
        if current.get(path) == spec:
            continue
        cls = types.get(spec["type"])
        if cls is None:
            raise ModelError(f"cannot rebuild layer {path!r} of type {spec['type']}")
        args = dict(spec["args"])
        if cls is nn.Conv2d and isinstance(args.get("padding"), list):
            args["padding"] = tuple(args["padding"])
        try:
            _replace(model, path, cls(**args))
        except AttributeError as e:
            raise ModelError(f"the saved model has a layer {path!r} that the architecture lacks") from e
    return model


def model_signature(model: nn.Module, input_shape: Any = None, num_classes: Any = None) -> dict[str, Any] | None:
    """The signature (``Signature.to_dict()``) a PyTorch model declares (``model.slimline_signature``: a
    ``Signature`` or its dict), else the image classifier's for ``input_shape``, else None."""
    from slimline.signature import Signature

    declared = getattr(model, "slimline_signature", None)
    if isinstance(declared, Signature):
        return declared.to_dict()
    if isinstance(declared, dict) and declared.get("inputs"):
        return Signature.from_dict(declared).to_dict()
    if input_shape:
        return Signature.classifier(input_shape, num_classes).to_dict()
    return None


def save_torch(
    model: nn.Module,
    dest: str | Path,
    meta: dict[str, Any],
    lineage: list[dict[str, Any]],
) -> Artifact:
    """Save a PyTorch model as a torch artifact. ``model.slimline_source`` says how to rebuild it.

    The incoming ``meta["signature"]`` is kept; without one, the model's (see :func:`model_signature`) is recorded."""
    source = getattr(model, "slimline_source", None)
    if source is None:
        raise ModelError(
            "this model has no 'slimline_source' (how to rebuild its architecture); "
            "load it with slimline.load_model so it can be saved"
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if not (isinstance(meta.get("signature"), dict) and meta["signature"].get("inputs")):
        sig = model_signature(model, meta.get("input_shape"), meta.get("num_classes"))
        if sig is not None:
            meta["signature"] = sig
    with ArtifactWriter(dest, "torch", meta, list(lineage)) as w:
        torch.save(state, w.add("model", "weights.pt"))
        (w.add("architecture", "model.json")).write_text(
            json.dumps({"source": source, "layers": layer_specs(model)}, indent=1)
        )
    assert w.artifact is not None
    return w.artifact


def require_trusted(artifact: Artifact) -> None:
    """Raise ``ModelError`` now if loading this torch artifact would import code that is not trusted."""
    from slimline.models import check_trusted

    if artifact.kind != "torch" or "architecture" not in artifact.files:
        return
    arch_file = artifact.path / artifact.files["architecture"]
    try:
        source = json.loads(arch_file.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return  # loading reports it
    if isinstance(source, dict) and "factory" in source:
        check_trusted(str(source["factory"]), str(arch_file))


def load_torch(artifact: Artifact, trust_code: bool = False) -> nn.Module:
    """Rebuild a torch artifact's module (pruned shapes included) and load its weights.

    An artifact is data: a ``module:factory`` named in its ``model.json`` is imported only when the
    caller trusts it (``slimline.models.trusted_factories``) or passes ``trust_code=True``.
    """
    from slimline.models import build_from_source, trusted_factories

    if artifact.kind != "torch":
        raise SlimlineError(f"{artifact.path} holds a {artifact.kind} model, not a PyTorch one")
    if "architecture" not in artifact.files:
        raise ModelError(f"{artifact.path} is corrupt: a torch artifact names no architecture file (model.json)")
    arch_file = artifact.path / artifact.files["architecture"]
    try:
        arch = json.loads(arch_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{arch_file} cannot be read ({first_line(e)}); re-create the artifact") from e
    if not isinstance(arch, dict) or "source" not in arch:
        raise ModelError(f"{arch_file} has no 'source' (how to rebuild the architecture)")
    with trusted_factories(trust_code=trust_code):
        model = build_from_source(arch["source"], where=str(arch_file))
    apply_layer_specs(model, arch.get("layers", {}))
    try:
        state = torch.load(artifact.model_file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise ModelError(
            f"{artifact.model_file} cannot be read as weights ({first_line(e)}); re-create the artifact"
        ) from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"weights in {artifact.model_file} do not fit the rebuilt model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.slimline_source = arch["source"]  # type: ignore[assignment]
    return model.eval()
