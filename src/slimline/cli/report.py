"""``slimline report``: (re)write a run folder's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.progress import console


@app.command()
@friendly
def report(
    run_dir: Path = typer.Argument(..., help="run folder (holds results.json)"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Write RUN_DIR/report.html: stage table, plots, findings, environment, commands to reproduce.

    The file is self-contained (inline CSS and SVG, no scripts, nothing fetched): open it in any browser.

    Example: slimline report runs/demo --json runs/demo/report.json
    """
    from contextlib import nullcontext

    from slimline.fileio import write_text
    from slimline.report import REPORT_HTML, build_report
    from slimline.runlock import run_lock

    with run_lock(run_dir) if run_dir.is_dir() else nullcontext():  # not while a run writes the folder
        rep = build_report(run_dir)
        path = write_text(run_dir / REPORT_HTML, rep.html)
    for f in rep.summary["findings"]:
        console.print(f"[bold]{f['topic']}[/] {f['text']}", highlight=False, soft_wrap=True)
    for p in rep.summary["plots"]:
        if not p["drawn"]:
            console.print(f"[dim]plot {p['title']}: {p['note']}[/]", highlight=False, soft_wrap=True)
    console.print(f"report: [bold]{path}[/]")
    dump_json(json_path, rep.summary | {"report": str(path)})
