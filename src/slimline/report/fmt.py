"""Number formatting shared by the findings and the HTML (plain text; HTML escaping happens in html.py)."""

from __future__ import annotations

import math
from typing import Any

MINUS = "\u2212"


def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def signed(x: float, digits: int = 1) -> str:
    """``+0.4`` / ``−1.2`` with a real minus sign (and ``±0.0`` for zero)."""
    s = f"{abs(x):.{digits}f}"
    if float(s) == 0:
        return f"\u00b1{s}"
    return ("+" if x > 0 else MINUS) + s


def pt(x: float | None, digits: int = 1) -> str:
    return "–" if missing(x) else f"{signed(x, digits)} pt"  # type: ignore[arg-type]


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if missing(x) else f"{x:.{digits}f}%"


def count(x: float | None) -> str:
    """1234567 -> ``1.23M``."""
    if missing(x):
        return "–"
    v = float(x)  # type: ignore[arg-type]
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def nbytes(x: float | None) -> str:
    if missing(x):
        return "–"
    v = float(x)  # type: ignore[arg-type]
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.0f} B"


def ms(x: float | None) -> str:
    if missing(x):
        return "–"
    v = float(x)  # type: ignore[arg-type]
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def num(x: float | None, digits: int = 3) -> str:
    if missing(x):
        return "–"
    v = float(x)  # type: ignore[arg-type]
    return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:,.0f}"


def span(lo: float, hi: float, digits: int = 3) -> str:
    """``709.6–723.3``: both ends to the same decimals, enough for ``digits`` significant figures of the
    larger end (``516.1–563.0``, not ``516.1–563``); whole numbers stay whole (``1–3``)."""
    if missing(lo) or missing(hi):
        return "–"
    lo, hi = float(lo), float(hi)
    top = max(abs(lo), abs(hi))
    whole = top == 0 or (lo.is_integer() and hi.is_integer())
    places = 0 if whole else max(0, digits - 1 - math.floor(math.log10(top)))
    return f"{lo:,.{places}f}–{hi:,.{places}f}"


def speed(ratio: float) -> str:
    """A latency ratio (old / new) in words: ``3.1× faster``, ``4% slower``, ``0% faster``."""
    if not math.isfinite(ratio) or ratio <= 0:
        return "speed unknown"
    change = (ratio - 1) * 100
    if abs(change) < 10:
        return f"{change:.0f}% faster" if round(change) >= 0 else f"{-change:.0f}% slower"
    r = ratio if ratio > 1 else 1 / ratio
    text = f"{r:.1f}\u00d7" if r < 10 else f"{r:,.0f}\u00d7"
    return f"{text} faster" if ratio > 1 else f"{text} slower"


def ratio_smaller(old: float, new: float) -> str:
    if old <= 0 or new <= 0:
        return "size unknown"
    r = old / new
    if abs(r - 1) < 0.01:
        return "the same size"
    return f"{r:.2f}\u00d7 smaller" if r > 1 else f"{1 / r:.2f}\u00d7 larger"
