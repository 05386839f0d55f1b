"""Read step records defensively: find sensitivity curves and per-layer quantization error in them.

Records are written by different steps and their layout may change, so these readers accept the
common shapes and return ``None`` when nothing usable is there (the report then skips the plot
with a note instead of failing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

Curve = list[tuple[float, float]]

_CURVE_KEYS = ("curves", "sensitivity", "per_layer", "layers", "results")
_Y_KEYS = ("metric", "metrics", "values", "top1", "accuracy", "acc", "scores", "score", "loss", "drop")
_X_KEYS = ("ratios", "ratio", "sparsities", "sparsity", "amounts", "x")
_ERROR_KEYS = ("sqnr_db", "sqnr", "quant_error", "error", "rel_error", "relative_error", "mse", "nmse", "cosine")
_FLOAT_KEYS = (
    "kept_float",
    "float_layers",
    "fp32_layers",
    "keep_float",
    "excluded_nodes",
    "left_float",
    "skipped_layers",
    "ignored",
    "ignored_scope",
    "excluded",
    "exclude",
)


def as_dict(x: Any) -> dict[str, Any]:
    """``x`` when it is a mapping read from a record, else an empty dict."""
    return x if isinstance(x, dict) else {}


def num(x: Any) -> float | None:
    """``x`` as a finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        return None
    try:
        v = float(x)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _pairs(v: Any) -> Curve | None:
    """A curve from ``[[x, y], ...]``, ``{x: y}``, ``{"ratios": [...], "top1": [...]}`` or a list of dicts."""
    pts: Curve = []
    if isinstance(v, list) and v:
        if all(isinstance(p, list | tuple) and len(p) >= 2 for p in v):
            pts = [(a, b) for a, b in ((num(p[0]), num(p[1])) for p in v) if a is not None and b is not None]
        elif all(isinstance(p, dict) for p in v):
            for p in v:
                x = next((num(p[k]) for k in _X_KEYS if k in p), None)
                y = next((num(p[k]) for k in _Y_KEYS if k in p and num(p[k]) is not None), None)
                if x is not None and y is not None:
                    pts.append((x, y))
    elif isinstance(v, dict) and v:
        xs = next((v[k] for k in _X_KEYS if isinstance(v.get(k), list)), None)
        ys = next((v[k] for k in _Y_KEYS if isinstance(v.get(k), list)), None)
        if xs is not None and ys is not None and len(xs) == len(ys):
            pts = [
                (a, b)
                for a, b in ((num(x), num(y)) for x, y in zip(xs, ys, strict=True))
                if a is not None and b is not None
            ]
        elif all(num(k) is not None and num(val) is not None for k, val in v.items()):
            pts = [(num(k), num(val)) for k, val in v.items()]  # type: ignore[misc]
        else:
            for key in ("curve", "points"):
                if key in v:
                    return _pairs(v[key])
    pts.sort()
    return pts if len(pts) >= 2 else None


def _curves_in(obj: Any) -> dict[str, Curve] | None:
    """``{layer: curve}`` when ``obj`` maps (at least one) layer names to curves."""
    if isinstance(obj, dict):
        out = {str(k): c for k, c in ((k, _pairs(v)) for k, v in obj.items()) if c is not None}
        return out or None
    if isinstance(obj, list) and obj and all(isinstance(p, dict) for p in obj):
        out = {}
        for p in obj:
            name = p.get("layer", p.get("name"))
            c = _pairs(p)
            if name is not None and c is not None:
                out[str(name)] = c
        return out or None
    return None


def _json_files(record: dict[str, Any], step_dir: Path | None) -> list[Any]:
    """Contents of JSON files that a record names, or that lie in the step's folder."""
    found: list[Any] = []
    paths: list[Path] = []
    for v in record.values():
        if isinstance(v, str) and v.endswith(".json"):
            p = Path(v)
            for cand in (p, *([step_dir / p, step_dir / p.name] if step_dir else [])):
                if cand.is_file():
                    paths.append(cand)
                    break
    if step_dir is not None and step_dir.is_dir():
        paths += sorted(p for p in step_dir.glob("*.json") if p.name not in ("record.json", "artifact.json"))
    seen = set()
    for p in paths:
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        try:
            found.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return found


def find_curves(record: dict[str, Any], step_dir: Path | None = None) -> dict[str, Curve] | None:
    """Per-layer sensitivity curves ``{layer: [(ratio, metric), ...]}`` from a record or its files."""
    sources: list[Any] = [record, *_json_files(record, step_dir)]
    for src in sources:
        if not isinstance(src, dict):
            curves = _curves_in(src)
            if curves:
                return curves
            continue
        for key in _CURVE_KEYS:
            if key in src:
                curves = _curves_in(src[key])
                if not curves and isinstance(src[key], dict):  # one more level: {"sensitivity": {"curves": ...}}
                    curves = next((c for k in _CURVE_KEYS if (c := _curves_in(src[key].get(k)))), None)
                if curves:
                    return curves
    return None


def _unit_curves(result: dict[str, Any], metric: str) -> dict[str, Curve]:
    """``{unit: [(ratio, metric), ...]}`` from :func:`slimline.prune.sensitivity.sensitivity`'s result.

    Each unit holds ``curve: [{ratio, top1, loss, ...}]``; the unpruned model (``baseline``) is
    the point at ratio 0. Blocks (one point each, no curve) are left out.
    """
    base = as_dict(result.get("baseline"))
    out: dict[str, Curve] = {}
    for name, unit in (result.get("units") or {}).items():
        curve = unit.get("curve") if isinstance(unit, dict) else None
        if not isinstance(curve, list):
            continue
        pts = [(num(c.get("ratio")), num(c.get(metric))) for c in curve if isinstance(c, dict)]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        if num(base.get(metric)) is not None and pts:
            pts.insert(0, (0.0, float(base[metric])))
        if len(pts) >= 2:
            out[str(name)] = sorted(pts)  # type: ignore[arg-type]
    return out


def find_sensitivity(record: dict[str, Any], step_dir: Path | None = None) -> list[dict[str, Any]]:
    """Sensitivity curves of a step: ``[{"kind", "metric", "curves": {unit: curve}}]`` (empty if none).

    Reads the ``sensitivity`` step's record (``sensitivity: {kind: result}``) or its
    ``sensitivity_<kind>.json`` files, else any common ``{layer: [[ratio, metric], ...]}`` shape.
    """
    results: dict[str, Any] = {}
    sens = record.get("sensitivity")
    if isinstance(sens, dict):
        if isinstance(sens.get("units"), dict):
            results[str(sens.get("kind", "weight"))] = sens
        else:
            results |= {str(k): v for k, v in sens.items() if isinstance(v, dict) and isinstance(v.get("units"), dict)}
    if not results and step_dir is not None and step_dir.is_dir():
        for f in sorted(step_dir.glob("sensitivity_*.json")):
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and isinstance(d.get("units"), dict):
                results[str(d.get("kind", f.stem.removeprefix("sensitivity_")))] = d
    out: list[dict[str, Any]] = []
    for kind, res in results.items():
        raw = res.get("metric")
        metric = raw if isinstance(raw, str) else None
        if metric is None:
            named = as_dict(record.get("config")).get("metric")
            metric = named if isinstance(named, str) else "loss"
        curves = _unit_curves(res, metric)
        if curves:
            split = record.get("split", "val")
            out.append({"kind": kind, "metric": f"{split} {metric}", "curves": curves})
    if not out:
        fallback = find_curves(record, step_dir)
        if fallback:
            out.append({"kind": None, "metric": metric_name(record), "curves": fallback})
    return out


def metric_name(record: dict[str, Any], default: str = "metric") -> str:
    for key in ("metric", "metric_name", "score"):
        v = record.get(key)
        if isinstance(v, str):
            return v
    cfg = record.get("config")
    if isinstance(cfg, dict) and isinstance(cfg.get("metric"), str):
        return cfg["metric"]
    return default


def _layer_value(v: Any) -> tuple[str, float] | None:
    if num(v) is not None:
        return "value", num(v)  # type: ignore[return-value]
    if isinstance(v, dict):
        for k in _ERROR_KEYS:
            if k in v and num(v[k]) is not None:
                return k, num(v[k])  # type: ignore[return-value]
    return None


def find_layer_errors(record: dict[str, Any], step_dir: Path | None = None) -> dict[str, Any] | None:
    """Per-layer quantization error: ``{"metric": "sqnr_db", "layers": {name: value}, "float_layers": [...]}``."""
    sources = [record, *_json_files(record, step_dir)]
    for src in sources:
        if not isinstance(src, dict):
            continue
        for key in ("layers", "per_layer", "layer_errors", "sqnr", "errors", "quant_error", "quantization"):
            obj = src.get(key)
            if isinstance(obj, dict) and isinstance(obj.get("layers"), dict | list):
                obj = obj["layers"]
            layers: dict[str, float] = {}
            metric = None
            if isinstance(obj, dict):
                for name, v in obj.items():
                    lv = _layer_value(v)
                    if lv is not None and (metric is None or lv[0] == metric):
                        metric, layers[str(name)] = lv[0], lv[1]
            elif isinstance(obj, list):
                for v in obj:
                    if isinstance(v, dict) and (name := v.get("layer", v.get("name"))) is not None:
                        lv = _layer_value(v)
                        if lv is not None and (metric is None or lv[0] == metric):
                            metric, layers[str(name)] = lv[0], lv[1]
            if layers:
                if metric == "value":
                    metric = "sqnr_db" if "sqnr" in key else key
                return {"metric": metric, "layers": layers, "float_layers": find_float_layers(src)}
    return None


def _names(v: Any) -> list[str]:
    """Layer names from ``["a", ...]``, ``[{"name": "a", ...}, ...]`` or ``{"names": [...]}``."""
    if isinstance(v, dict) and isinstance(v.get("names"), list):
        v = v["names"]
    if not isinstance(v, list):
        return []
    out = []
    for x in v:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict) and isinstance(name := x.get("name", x.get("layer")), str):
            out.append(name)
    return out


def find_float_layers(record: dict[str, Any]) -> list[str]:
    """Names of the layers a quantization step kept in floating point (asked for, or left by the backend)."""
    cfg = as_dict(record.get("config"))
    names: list[str] = []
    for src in (record, cfg):
        for key in _FLOAT_KEYS:
            names += _names(src.get(key))
    return list(dict.fromkeys(names))


def scalars(record: dict[str, Any], skip: tuple[str, ...] = (), depth: int = 2, prefix: str = "") -> dict[str, Any]:
    """Flattened scalar fields of a record (numbers, strings, booleans), for a compact details table."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k in skip:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, bool | int | float | str) or v is None:
            if isinstance(v, str) and len(v) > 300:
                v = v[:300] + "…"
            out[key] = v
        elif isinstance(v, dict) and depth > 1:
            out.update(scalars(v, (), depth - 1, key + "."))
        elif isinstance(v, list) and len(v) <= 8 and all(isinstance(x, bool | int | float | str) for x in v):
            out[key] = ", ".join(str(x) for x in v)
    return out
