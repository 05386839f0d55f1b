"""A declared image preprocessing: how image files become a model's input, written out in full.

    preprocess: {resize: [320, 320], scale: 1/255, mean: null, std: null, layout: NCHW, channels: RGB}

Order: convert to ``channels`` (RGB, BGR or gray), ``resize`` (``[H, W]``, or one number: the shortest side, ratio
kept; with ``letterbox`` the image is fitted into ``[H, W]`` keeping its ratio and padded with ``pad_value``),
``center_crop`` (``[H, W]`` or one number), then per pixel ``(x * scale - mean) / std`` (``mean``/``std``
omitted: none) in ``layout`` (NCHW or NHWC). Omitted fields: no resize or crop, scale 1/255, no mean/std, RGB, NCHW.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from slimline.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image

LAYOUTS = ("NCHW", "NHWC")
CHANNELS = ("RGB", "BGR", "gray")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = tuple[int, int]


@dataclass(frozen=True)
class Preprocess:
    """Image files -> model input. ``resize``/``center_crop``: ``(H, W)`` or an int (shortest side / square)."""

    resize: Size | int | None = None
    center_crop: Size | int | None = None
    letterbox: bool = False
    pad_value: int = 114
    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    channels: str = "RGB"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            _bad("layout", self.layout, "NCHW or NHWC")
        if self.channels not in CHANNELS:
            _bad("channels", self.channels, "RGB, BGR or gray")
        if self.letterbox and not isinstance(self.resize, tuple):
            raise DataError("preprocess: letterbox fits images into resize [H, W]; give resize: [H, W] as well")
        if not 0 <= self.pad_value <= 255:
            _bad("pad_value", self.pad_value, "a pixel value in 0..255")
        if not math.isfinite(self.scale) or self.scale <= 0:
            _bad("scale", self.scale, "a positive number such as 1/255")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) not in (1, self.num_channels):
                _bad(name, list(v), f"one value, or one per channel ({self.num_channels} for {self.channels})")
        if self.std is not None and any(s == 0 for s in self.std):
            _bad("std", list(self.std), "non-zero values")

    @property
    def num_channels(self) -> int:
        return 1 if self.channels == "gray" else 3

    # ------------------------------------------------------------------ (de)serialising

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included: the spec in force, with nothing left implicit."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"preprocess: unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("resize", "center_crop"):
                kw[k] = _size(k, v)
            elif k in ("mean", "std"):
                kw[k] = None if v is None else tuple(_number(k, x) for x in (v if isinstance(v, list | tuple) else [v]))
            elif k == "scale":
                kw[k] = _number(k, v)
            elif k == "letterbox":
                if not isinstance(v, bool):
                    _bad(k, v, "true or false")
                kw[k] = v
            elif k == "pad_value":
                if isinstance(v, bool) or not isinstance(v, int):
                    _bad(k, v, "a whole number in 0..255")
                kw[k] = v
            elif k == "channels" and isinstance(v, str):
                kw[k] = "gray" if v.lower() in ("gray", "grey") else v.upper()
            else:  # layout
                kw[k] = v.upper() if isinstance(v, str) else v
        return cls(**kw)

    # ------------------------------------------------------------------ applying

    def image(self, img: Image) -> np.ndarray:
        """One decoded image -> uint8 H x W x C in ``channels`` order, resized and cropped."""
        from PIL import Image as PILImage

        img = img.convert("L" if self.channels == "gray" else "RGB")
        if isinstance(self.resize, int):
            w, h = img.size
            k = self.resize / min(w, h)
            img = img.resize((max(1, round(w * k)), max(1, round(h * k))), PILImage.Resampling.BILINEAR)
        elif self.resize is not None:
            th, tw = self.resize
            if self.letterbox:
                w, h = img.size
                k = min(tw / w, th / h)
                nw, nh = max(1, round(w * k)), max(1, round(h * k))
                fill = self.pad_value if self.channels == "gray" else (self.pad_value,) * 3
                canvas = PILImage.new(img.mode, (tw, th), fill)
                canvas.paste(img.resize((nw, nh), PILImage.Resampling.BILINEAR), ((tw - nw) // 2, (th - nh) // 2))
                img = canvas
            else:
                img = img.resize((tw, th), PILImage.Resampling.BILINEAR)
        if self.center_crop is not None:
            ch, cw = (self.center_crop, self.center_crop) if isinstance(self.center_crop, int) else self.center_crop
            w, h = img.size
            if ch > h or cw > w:
                raise DataError(
                    f"preprocess: center_crop {ch} x {cw} (H x W) is larger than the {h} x {w} image; "
                    "crop less or resize to at least the crop first"
                )
            left, top = (w - cw) // 2, (h - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        a = np.asarray(img, dtype=np.uint8)
        if a.ndim == 2:
            a = a[..., None]
        return np.ascontiguousarray(a[..., ::-1]) if self.channels == "BGR" else a

    def input_shape(self, h: int, w: int) -> tuple[int, int, int]:
        """The model's input per sample for an ``h`` x ``w`` image: (C, H, W), or (H, W, C) with NHWC."""
        c = self.num_channels
        return (h, w, c) if self.layout == "NHWC" else (c, h, w)

    # ------------------------------------------------------------------ showing

    def describe(self) -> str:
        """One line, e.g. ``resize 320x320, scale 1/255, mean/std none, RGB, NCHW``."""
        parts = []
        if self.resize is not None:
            how = f"shortest side {self.resize}" if isinstance(self.resize, int) else "x".join(map(str, self.resize))
            parts.append(
                f"{'letterbox' if self.letterbox else 'resize'} {how}"
                + (f" (pad {self.pad_value})" if self.letterbox else "")
            )
        if self.center_crop is not None:
            c = self.center_crop
            parts.append(f"center crop {c}x{c}" if isinstance(c, int) else f"center crop {c[0]}x{c[1]}")
        inv = 1 / self.scale
        whole = math.isclose(inv, round(inv), rel_tol=1e-9)
        parts.append(f"scale 1/{round(inv)}" if whole else f"scale {self.scale:g}")
        if self.mean is None and self.std is None:
            parts.append("mean/std none")
        else:
            for name in ("mean", "std"):
                v = getattr(self, name)
                parts.append(f"{name} " + ("none" if v is None else ",".join(f"{x:g}" for x in v)))
        return ", ".join([*parts, self.channels, self.layout])


# imagefolder's preprocessing when none is declared (what it always did): RGB, scale 1/255, ImageNet mean/std
IMAGENET = Preprocess(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def parse_preprocess(value: str | Path | Mapping[str, Any] | Preprocess | None) -> Preprocess | None:
    """A ``--preprocess`` / recipe value: a mapping, a YAML/JSON string, or a path to a YAML/JSON file."""
    if value is None or isinstance(value, Preprocess):
        return value
    if isinstance(value, Mapping):
        return Preprocess.from_dict(value)
    import yaml

    text = str(value)
    p = Path(text)
    if len(text) < 4096 and "\n" not in text and p.suffix.lower() in (".yaml", ".yml", ".json"):
        if not p.is_file():
            raise DataError(f"preprocess file {p} does not exist; give a YAML/JSON file or an inline mapping")
        text = p.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(
            f"preprocess {str(value)[:60]!r} is not YAML/JSON ({first}); write e.g. "
            "'{scale: 1/255, mean: [0.5], std: [0.5]}'"
        ) from e
    if not isinstance(raw, Mapping):
        raise DataError(f"preprocess {str(value)[:60]!r} is not a mapping; write e.g. '{{resize: [224, 224]}}'")
    return Preprocess.from_dict(raw)


def recorded_preprocess(meta: Mapping[str, Any]) -> Preprocess | None:
    """The preprocessing an artifact's ``meta`` records in its data spec (``meta["data"]["preprocess"]``)."""
    data = meta.get("data")
    recorded = data.get("preprocess") if isinstance(data, Mapping) else None
    return Preprocess.from_dict(recorded) if isinstance(recorded, Mapping) else None


def _bad(name: str, value: Any, want: str) -> NoReturn:
    raise DataError(f"preprocess: {name} {value!r} is not valid; give {want}")


def _number(name: str, v: Any) -> float:
    """A number, or a fraction written ``a/b`` (``1/255``)."""
    if isinstance(v, str) and "/" in v:
        a, _, b = v.partition("/")
        try:
            return float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            pass
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        _bad(name, v, "a number (or a fraction like 1/255)")
    try:
        return float(v)
    except ValueError:
        _bad(name, v, "a number (or a fraction like 1/255)")


def _size(name: str, v: Any) -> Size | int | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    if (
        isinstance(v, list | tuple)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
    ):
        return (int(v[0]), int(v[1]))
    _bad(name, v, "[H, W] or one positive whole number")
