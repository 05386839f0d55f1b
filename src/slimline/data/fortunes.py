"""Debian's ``fortunes`` package as a labelled text corpus: each quotation is a text, its file's name the label.

The files live in ``/usr/share/games/fortunes/<category>`` (entries separated by lines holding only ``%``); install
them with ``apt-get install fortunes`` (``make data`` does where apt exists). The split is deterministic: a hash
of each text puts about ``test_share`` of every category in ``test`` and the rest in ``train``, so the split
never changes with the order files are read in, and calibration/recovery use ``train`` only.

    train = load_fortunes(split="train", categories=("science", "computers"))
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from slimline.data.text import TextSamples
from slimline.errors import DataError

FORTUNES_DIR = Path("/usr/share/games/fortunes")


def fortune_entries(path: Path) -> list[str]:
    """The quotations in one fortunes file, whitespace-normalised, empty ones dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    entries: list[str] = []
    cur: list[str] = []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append(" ".join(" ".join(cur).split()))
            cur = []
        else:
            cur.append(line)
    entries.append(" ".join(" ".join(cur).split()))
    return [e for e in entries if e]


def _in_test(text: str, test_share: float) -> bool:
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return (h % 10_000) < test_share * 10_000


def load_fortunes(
    split: str = "train",
    categories: tuple[str, ...] | None = None,
    test_share: float = 0.2,
    root: str | Path = FORTUNES_DIR,
    min_chars: int = 20,
) -> TextSamples:
    """Quotations of ``split`` (``train``, ``test`` or ``all``) from ``categories`` (default: every category
    file), labelled by category; texts shorter than ``min_chars`` and duplicates are dropped."""
    if split not in ("train", "test", "all"):
        raise DataError(f"split {split!r} is not one of train, test, all; pick one")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base} does not exist; install Debian's fortunes (`apt-get install fortunes`)")
    names = categories or tuple(
        sorted(p.name for p in base.iterdir() if p.is_file() and not p.suffix and (base / f"{p.name}.dat").is_file())
    )
    missing = [n for n in names if not (base / n).is_file()]
    if missing or not names:
        raise DataError(
            f"fortune categories {', '.join(missing) or '(none)'} not found in {base}; "
            f"pick from {', '.join(sorted(p.name for p in base.iterdir() if not p.suffix))}"
        )
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for li, name in enumerate(names):
        for t in fortune_entries(base / name):
            if len(t) < min_chars or t in seen:
                continue
            seen.add(t)
            if split == "all" or _in_test(t, test_share) == (split == "test"):
                texts.append(t)
                labels.append(li)
    return TextSamples(texts, np.asarray(labels, dtype=np.int64), tuple(names), f"fortunes:{split}")
