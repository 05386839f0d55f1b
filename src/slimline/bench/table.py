"""Benchmark results as rich tables, and the comparison of two results files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from slimline.errors import SlimlineError


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _ms(v: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def results_table(doc: dict[str, Any], title: str = "benchmark", width: int | None = None) -> Table:
    """One row per result; under 110 columns of terminal the p99 and GFLOP/s columns are left out."""
    if width is None:
        from slimline.progress import console

        width = console.width
    compact = width < 110
    peak = doc.get("peak_gflops")
    thr = doc.get("settings", {}).get("threads")
    cap = (
        f"latency in ms; RSS (peak memory of the process) and size in MB; threads: {thr or 'default'}; "
        f"efficiency = achieved / fp32 GEMM peak ({_f(peak, '.1f')} GFLOP/s)"
    )
    t = Table(title=title, caption=cap)
    cols = ["model", "runtime", "bs", "median", "p90", "p99", "items/s", "GFLOP/s", "eff", "RSS", "size"]
    if compact:
        cols = [c for c in cols if c not in ("p99", "GFLOP/s")]
    for i, col in enumerate(cols):
        if i < 2:
            t.add_column(col, overflow="fold", ratio=1)
        else:
            t.add_column(col, justify="right", no_wrap=True)
    for r in doc.get("results", []):
        if r.get("status") != "ok":
            status = "n/a" if r.get("status") == "unavailable" else "error"
            t.add_row(r["artifact"], r["runtime"], str(r["batch_size"]), f"[red]{status}[/]", *[""] * (len(cols) - 4))
            continue
        lat = r["latency_ms"]
        cells = {
            "model": r["artifact"],
            "runtime": r["runtime"],
            "bs": str(r["batch_size"]),
            "median": _ms(lat["median"]),
            "p90": _ms(lat["p90"]),
            "p99": _ms(lat["p99"]),
            "items/s": _f(r["throughput"], ".1f") + (" [yellow]busy[/]" if is_busy(r) else ""),
            "GFLOP/s": _f(r.get("gflops"), ".1f"),
            "eff": "-" if r.get("efficiency") is None else f"{100 * r['efficiency']:.0f}%",
            "RSS": _f(r.get("peak_rss_mb"), ".0f"),
            "size": _f(r["file_bytes"] / 1e6 if r.get("file_bytes") else None, ".1f"),
        }
        t.add_row(*[cells[c] for c in cols])
    shares = [r["machine_load"]["other_share"] for r in doc.get("results", []) if is_busy(r)]
    if shares:
        t.caption = (
            f"{cap}\nrows marked busy were measured while other processes used up to {100 * max(shares):.0f}% "
            "of the CPUs"
        )
    return t


def is_busy(r: dict[str, Any]) -> bool:
    """Measured while other processes used more than :data:`slimline.environment.BUSY_SHARE` of the CPUs."""
    load = r.get("machine_load")
    return isinstance(load, dict) and bool(load.get("busy"))


def error_lines(doc: dict[str, Any]) -> list[str]:
    """``model | runtime | batch: status: reason`` for every result that was not measured."""
    return [
        f"{r['artifact']} | {r['runtime']} | batch {r['batch_size']}: {r['status']}: {r.get('error')}"
        for r in doc.get("results", [])
        if r.get("status") != "ok"
    ]


def skipped_lines(doc: dict[str, Any]) -> list[str]:
    """``model | runtime: reason`` for every pair that was not run because the runtime cannot run that artifact."""
    return [f"{s['artifact']} | {s['runtime']}: {s['reason']}" for s in doc.get("skipped", [])]


def nothing_measured(doc: dict[str, Any]) -> str | None:
    """One line when no combination was measured (every one failed or was skipped), else None."""
    results = doc.get("results", [])
    if any(r.get("status") == "ok" for r in results):
        return None
    first = (error_lines(doc) + skipped_lines(doc) or ["no combinations"])[0]
    return (
        f"nothing was measured: {len(results)} combination(s) failed and {len(doc.get('skipped', []))} were skipped "
        f"(first: {first}); fix the cause above or pick runtimes that run these models"
    )


def _key(r: dict[str, Any]) -> tuple[str, str, int]:
    return (r["artifact"], r["runtime"], int(r["batch_size"]))


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise SlimlineError(f"results file {p} does not exist")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SlimlineError(f"{p} is not JSON: {e}") from e
    if not isinstance(doc, dict) or "results" not in doc:
        raise SlimlineError(f"{p} is not a slimline benchmark result (no 'results')")
    return doc


def compare_results(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows matched on (model, runtime, batch): throughput new/old and median latency new/old."""
    old_by = {_key(r): r for r in old.get("results", []) if r.get("status") == "ok"}
    rows = []
    for r in new.get("results", []):
        o = old_by.get(_key(r))
        if r.get("status") != "ok" or o is None:
            continue
        rows.append(
            {
                "artifact": r["artifact"],
                "runtime": r["runtime"],
                "batch_size": r["batch_size"],
                "old_throughput": o["throughput"],
                "new_throughput": r["throughput"],
                "throughput_ratio": r["throughput"] / o["throughput"] if o["throughput"] else None,
                "old_median_ms": o["latency_ms"]["median"],
                "new_median_ms": r["latency_ms"]["median"],
                "latency_ratio": (
                    r["latency_ms"]["median"] / o["latency_ms"]["median"] if o["latency_ms"]["median"] else None
                ),
            }
        )
    return rows


def compare_table(rows: list[dict[str, Any]], title: str = "compared with the earlier run") -> Table:
    t = Table(
        "model",
        "runtime",
        "batch",
        "items/s old",
        "items/s new",
        "speed ratio",
        "median ms old",
        "median ms new",
        "latency ratio",
        title=title,
        caption="speed ratio > 1: faster now",
    )
    for r in rows:
        ratio = r["throughput_ratio"]
        style = "green" if ratio and ratio > 1.05 else ("red" if ratio and ratio < 0.95 else "")
        t.add_row(
            r["artifact"],
            r["runtime"],
            str(r["batch_size"]),
            _f(r["old_throughput"], ".1f"),
            _f(r["new_throughput"], ".1f"),
            f"[{style}]{_f(ratio, '.2f')}[/]" if style else _f(ratio, ".2f"),
            _f(r["old_median_ms"], ".2f"),
            _f(r["new_median_ms"], ".2f"),
            _f(r["latency_ratio"], ".2f"),
        )
    return t
