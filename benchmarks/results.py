"""Gather a study's part files into ``runs/benchmarks/<study>/results.json``, with the machine's environment.

Every ``benchmarks/<study>/run.sh`` ends with this, so that each study leaves one file in one shape::

    {"study": NAME, "command": "benchmarks/NAME/run.sh ...", "parts": {PART: {...figures...}},
     "checks": {PART: {CHECK: true|false}}, "environment": {...}, "updated": ISO-8601 UTC}

``parts`` holds each part's JSON as its script wrote it (a part's own ``environment``, when it recorded one, stays
inside it: it is the machine the part was measured on). Parts already in an existing results.json are kept unless
this invocation gives them again, so a study's parts can be run one at a time. ``checks`` copies each part's
``checks`` mapping (what the part must show, each true or false), where it has one.

    .venv/bin/python benchmarks/results.py STUDY --command "benchmarks/STUDY/run.sh" --part NAME=FILE [...]

A part file that is missing is an error (the part did not run to the end): nothing is written then.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def gather(study: str, parts: dict[str, Path], command: str, out: Path | None = None) -> Path:
    """Merge ``parts`` (part name -> JSON file) into the study's results.json and return its path."""
    from slimline.api import environment, write_json

    target = out or ROOT / "runs" / "benchmarks" / study / "results.json"
    missing = [f"{name}={path}" for name, path in parts.items() if not path.is_file()]
    if missing:
        raise SystemExit(f"error: {study}: no part file {', '.join(missing)}; the part did not finish, see above")
    doc: dict[str, Any] = json.loads(target.read_text()) if target.is_file() else {}
    merged: dict[str, Any] = dict(doc.get("parts", {}))
    for name, path in parts.items():
        merged[name] = json.loads(path.read_text())
    checks = {name: part["checks"] for name, part in merged.items() if isinstance(part, dict) and "checks" in part}
    result = {
        "study": study,
        "command": command,
        "parts": merged,
        "checks": checks,
        "environment": environment(),
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json(target, result)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--part", action="append", default=[], metavar="NAME=FILE", help="a part's JSON file")
    ap.add_argument("--command", default=None, help="the command that ran (default: the study's run.sh)")
    args = ap.parse_args()
    parts: dict[str, Path] = {}
    for item in args.part:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --part {item!r}: give NAME=FILE")
        parts[name] = Path(path)
    target = gather(args.study, parts, args.command or f"benchmarks/{args.study}/run.sh")
    checks = json.loads(target.read_text())["checks"]
    failed = [f"{p}.{c}" for p, cs in checks.items() for c, ok in cs.items() if not ok]
    print(f"{args.study}: {', '.join(parts)} -> {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    if failed:
        print(f"{args.study}: checks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
