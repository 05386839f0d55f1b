"""Text files as a data source: texts with optional labels, for a tokenizer-based task.

A ``.txt`` file holds one text a line (no labels); a ``.jsonl`` file one JSON object a line and a ``.tsv`` file a
header line then tab-separated rows, each with a text column (``text_column``, default ``text``) and an optional
label column (``label_column``). Labels that are all whole numbers are kept as they are; otherwise they become
indices into their sorted vocabulary (``label_names``).

    samples = load_text("reviews.jsonl", label_column="stars")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import DataError

TEXT_SUFFIXES = (".txt", ".jsonl", ".tsv")
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"


def is_text_path(data: str | Path) -> bool:
    """Whether ``data`` (a ``-d/--data`` value) names a text file: ``.txt``, ``.jsonl`` or ``.tsv``."""
    return Path(str(data)).suffix.lower() in TEXT_SUFFIXES


@dataclass
class TextSamples:
    """Texts, with optional integer ``labels`` (indices into ``label_names``)."""

    texts: list[str]
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or "the texts"
        if not self.texts:
            raise DataError(f"{where} holds no texts; write one sample a line")
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise DataError(f"{where}: {len(self.texts)} texts but {len(self.labels)} labels; give one label a text")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray | slice) -> TextSamples:
        texts = self.texts[idx] if isinstance(idx, slice) else [self.texts[int(i)] for i in idx]
        return TextSamples(texts, None if self.labels is None else self.labels[idx], self.label_names, self.source)

    def take(self, n: int | None) -> TextSamples:
        """The first ``n`` samples (all when ``n`` is None or at least the count)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))


FORTUNES = "fortunes"


def is_text_source(data: str | Path) -> bool:
    """Whether a ``-d/--data`` value names raw text: a text file, or ``fortunes`` (``fortunes:CAT,...``)."""
    return is_text_path(data) or str(data) == FORTUNES or str(data).startswith(FORTUNES + ":")


def load_text_source(data: str | Path, split: str = "test") -> TextSamples | None:
    """Texts named by a ``-d/--data`` value, or None when it names no text: a ``.txt``/``.jsonl``/``.tsv`` file
    (labels from its ``label`` column when every row has one), or ``fortunes`` / ``fortunes:CAT,CAT`` (Debian's
    quotations, ``split`` of the seeded train/test rule, labelled by category)."""
    text = str(data)
    if is_text_source(data) and not is_text_path(data):
        from slimline.data.fortunes import load_fortunes

        cats = tuple(c for c in text.partition(":")[2].split(",") if c) or None
        return load_fortunes(split, categories=cats)
    if not is_text_path(data):
        return None
    p = Path(text)
    if p.suffix.lower() == ".txt":
        return load_text(p)
    return load_text(p, label_column=DEFAULT_LABEL_COLUMN if _every_row_has_label(p) else None)


def _every_row_has_label(p: Path) -> bool:
    try:
        lines = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False  # load_text says what is wrong
    if p.suffix.lower() == ".tsv":
        return bool(lines) and DEFAULT_LABEL_COLUMN in lines[0].split("\t")
    try:
        rows = [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        return False
    return bool(rows) and all(isinstance(r, dict) and DEFAULT_LABEL_COLUMN in r for r in rows)


def load_text(path: str | Path, text_column: str | None = None, label_column: str | None = None) -> TextSamples:
    """Read a ``.txt``, ``.jsonl`` or ``.tsv`` file (see the module's docstring); errors are one line each."""
    p = Path(str(path))
    suffix = p.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"{p} is not a text file; give a .txt (one text a line), .jsonl or .tsv file")
    if not p.is_file():
        raise DataError(f"{p} does not exist; give a .txt, .jsonl or .tsv file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    if not any(line.strip() for line in lines):
        raise DataError(f"{p} is empty; write one sample a line")
    if suffix == ".txt":
        if text_column or label_column:
            raise DataError(
                f"{p}: a .txt file holds one text a line and no columns; put texts and labels in a "
                ".jsonl or .tsv file to use text_column/label_column"
            )
        return TextSamples([line for line in lines if line.strip()], source=str(p))
    rows = _jsonl_rows(p, lines) if suffix == ".jsonl" else _tsv_rows(p, lines)
    tcol = text_column or DEFAULT_TEXT_COLUMN
    texts = [str(_cell(p, n, row, tcol, "text_column")) for n, row in rows]
    raw = [_cell(p, n, row, label_column, "label_column") for n, row in rows] if label_column else None
    labels, names = _label_vocabulary(p, raw) if raw is not None else (None, ())
    return TextSamples(texts, labels, names, str(p))


def _jsonl_rows(p: Path, lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{n} is not JSON ({e.msg}); write one JSON object a line") from e
        if not isinstance(row, dict):
            raise DataError(f"{p}:{n} is a JSON {type(row).__name__}, not an object; write one object a line")
        rows.append((n, row))
    return rows


def _tsv_rows(p: Path, lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    header = lines[0].split("\t")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DataError(
                f"{p}:{n} has {len(cells)} tab-separated cells but the header has {len(header)} "
                f"({', '.join(header)}); give every row one cell per column"
            )
        rows.append((n, dict(zip(header, cells, strict=True))))
    if not rows:
        raise DataError(f"{p} has a header line but no rows; write one sample a line below the header")
    return rows


def _cell(p: Path, n: int, row: dict[str, Any], column: str, option: str) -> Any:
    if column not in row:
        raise DataError(
            f"{p}:{n} has no column {column!r} (columns: {', '.join(map(str, row))}); name the right one with {option}"
        )
    return row[column]


def _label_vocabulary(p: Path, raw: list[Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Whole-number labels as they are (names "0".."max"); any other labels by their sorted vocabulary."""
    ints = [_as_int(v) for v in raw]
    if all(i is not None for i in ints):
        labels = np.asarray(ints, dtype=np.int64)
        if labels.min() < 0:
            raise DataError(f"{p}: labels must be 0 or more, found {int(labels.min())}; number classes from 0")
        return labels, tuple(str(i) for i in range(int(labels.max()) + 1))
    if any(isinstance(v, dict | list) or v is None for v in raw):
        raise DataError(f"{p}: labels must be strings or whole numbers, not lists, objects or null")
    names = tuple(sorted({str(v) for v in raw}))
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[str(v)] for v in raw], dtype=np.int64), names


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None
