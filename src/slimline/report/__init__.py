"""The run report: one self-contained HTML file (``report.html``) in the run folder, from ``results.json``.

``write_report(run_dir)`` is called at the end of every recipe run and by ``slimline report RUN_DIR``.
It holds a stage table (accuracy with 95% intervals and its change, parameters, MACs, file size,
latency per runtime and batch size), plots (accuracy vs throughput with the Pareto front,
sensitivity curves, per-layer quantization error, latency distributions), the environment, the
commands that reproduce each figure, and plain-language findings computed from the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slimline.fileio import write_text

REPORT_HTML = "report.html"


@dataclass
class Report:
    html: str
    summary: dict[str, Any]  # the figures behind the report, for --json and tests


def build_report(run_dir: str | Path, count_missing: bool = True) -> Report:
    """Read ``run_dir`` and build the report (not written). Raises SlimlineError if it is not a run folder."""
    from slimline.report.collect import collect, reproduce_commands
    from slimline.report.findings import compute_findings
    from slimline.report.html import render
    from slimline.report.plots import make_plots

    data = collect(run_dir, count_missing=count_missing)
    findings = compute_findings(data)
    plots = make_plots(data)
    commands = reproduce_commands(data)
    errors = [f["text"] for f in findings if f["topic"] == "error"]
    page = render(data, [f for f in findings if f["topic"] != "error"], plots, commands, errors)
    summary = {
        "run_dir": str(data.run_dir),
        "reference": data.reference,
        "stages": [
            {k: v for k, v in asdict(s).items() if k != "record"}
            | {"accuracy": asdict(s.accuracy) if s.accuracy else None}
            for s in data.stages
        ],
        "findings": findings,
        "plots": [{"key": p.key, "title": p.title, "drawn": p.svg is not None, "note": p.note} for p in plots],
        "commands": commands,
        "notes": data.notes,
        "errors": errors,
    }
    return Report(page, summary)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path.

    A folder that is not a run raises SlimlineError. Any other failure while building the report
    (a bug, a record nobody foresaw) writes a short page with the error instead, so a finished run
    never loses its results to its report; ``slimline report RUN_DIR`` can rebuild it later.
    """
    from slimline.errors import SlimlineError

    try:
        page = build_report(run_dir).html
    except SlimlineError:
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring
        from slimline.progress import console

        console.print(f"[yellow]warning:[/] the report could not be built: {type(e).__name__}: {e}", highlight=False)
        page = error_page(run_dir, e)
    return write_text(Path(run_dir) / REPORT_HTML, page)


def error_page(run_dir: str | Path, error: BaseException) -> str:
    """A minimal self-contained page saying that (and why) the report could not be built."""
    import html
    import traceback

    from slimline.report.html import CSP, CSS

    tb = "".join(traceback.format_exception(error)[-6:])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP)}">'
        f"<title>slimline report: error</title><style>{CSS}</style></head><body>"
        f"<h1>slimline report: {html.escape(str(run_dir))}</h1>"
        f'<p class="note">The report could not be built: {html.escape(f"{type(error).__name__}: {error}")}. '
        f"The run's figures are in results.json; rebuild this page with "
        f"<code>slimline report {html.escape(str(run_dir))}</code>.</p>"
        f"<pre>{html.escape(tb)}</pre></body></html>\n"
    )


__all__ = ["REPORT_HTML", "Report", "build_report", "write_report"]
