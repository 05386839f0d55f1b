"""Render the report as one self-contained HTML file: inline CSS, inline SVG plots, no scripts, no network.

Every piece of text from the run (names, configs, messages) goes through :func:`e` (HTML escaping);
a Content-Security-Policy forbids any network access, so a viewer never fetches anything.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
from typing import Any

from slimline.bench.table import is_busy
from slimline.report import fmt
from slimline.report.collect import RunData, Stage
from slimline.report.findings import Finding
from slimline.report.plots import Plot
from slimline.report.records import as_dict, scalars

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"

CSS = """
:root { --fg:#1d2330; --muted:#5b6577; --line:#d9dee7; --bg:#ffffff; --soft:#f4f6fa; --accent:#1f5fbf;
        --good:#1b7f3b; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 24px 28px 64px; color: var(--fg); background: var(--bg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
ul.findings { padding-left: 20px; }
ul.findings li { margin: 4px 0; }
.tag { display: inline-block; min-width: 86px; font-size: 11px; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); }
.table-wrap { overflow-x: auto; }
.busy { display: inline-block; font-size: 10px; text-transform: uppercase; padding: 0 4px; margin-left: 4px;
        border-radius: 3px; background: #fde68a; color: #7c2d12; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { white-space: nowrap; font-weight: 600; }
.small { font-size: 11px; color: var(--muted); }
.good { color: var(--good); }
.bad { color: var(--bad); }
figure { margin: 12px 0 24px; }
figure svg.plot { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; max-width: 900px; }
p.note { background: var(--soft); border-left: 4px solid var(--line); padding: 6px 10px; color: var(--muted); }
pre { background: var(--soft); padding: 8px 10px; font-size: 12px; margin: 2px 0 10px;
      white-space: pre-wrap; overflow-wrap: anywhere; }
details { margin: 4px 0; }
summary { cursor: pointer; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0 10px; font-size: 13px; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; word-break: break-word; }
"""


def e(x: Any) -> str:
    """Escape any value for HTML text or attributes."""
    return _html.escape("" if x is None else str(x), quote=True)


def _td(text: Any, cls: str = "", rowspan: int = 1, colspan: int = 1, raw: bool = False) -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' rowspan="{rowspan}"' if rowspan > 1 else "")
    attrs += f' colspan="{colspan}"' if colspan > 1 else ""
    return f"<td{attrs}>{text if raw else e(text)}</td>"


def _accuracy_cell(st: Stage) -> str:
    ev = st.accuracy
    if ev is None:
        return "–"
    ci = f"[{ev.ci95[0]:.1f}, {ev.ci95[1]:.1f}]" if ev.ci95 else ""
    out = f'{e(fmt.pct(ev.top1))} <span class="small">{e(ci)}</span>'
    where = ", ".join(x for x in (ev.split, ev.runtime, f"n={ev.n:,}") if x)
    out += f'<div class="small">{e(where)}</div>'
    for other in st.evaluations:
        if other is not ev:
            out += f'<div class="small">{e(other.runtime or "?")} ({e(other.split)}): {e(fmt.pct(other.top1))}</div>'
    return out


def _change_cell(st: Stage, reference: str | None) -> str:
    if st.name == reference:
        return '<span class="small">reference</span>'
    ci = st.change
    if ci is None:
        return "–"
    cls = ""
    if ci["lo"] > 0:
        cls = "good"
    elif ci["hi"] < 0:
        cls = "bad"
    main = f'<span class="{cls}">{e(fmt.pt(ci["delta"], 2))}</span>' if cls else e(fmt.pt(ci["delta"], 2))
    return (
        f'{main} <span class="small">[{e(fmt.signed(ci["lo"]))}, {e(fmt.signed(ci["hi"]))}]</span>'
        f'<div class="small">{e(ci["method"])}</div>'
    )


def stage_table(data: RunData) -> str:
    has_eff = any(r.get("efficiency") is not None for r in data.bench)
    bench_cols = ["runtime", "batch", "median ms", "p90 ms", "throughput /s", "peak MB"] + (
        ["% of peak"] if has_eff else []
    )
    head = [
        "#",
        "artifact",
        "what (kind)",
        "top-1 % [95% CI]",
        f"Δ top-1 vs {data.reference or 'reference'} [95% CI]",
        "params",
        "MACs",
        "file size",
        *bench_cols,
    ]
    rows = []
    for st in data.stages:
        bench = sorted(st.bench, key=lambda r: (r["runtime"], r["batch_size"]))
        span = max(len(bench), 1)
        first = [
            _td(f"{st.index:02d}", "num", span),
            _td(st.name, "name", span),
            _td(f'{e(st.label)}<div class="small">{e(st.kind or "?")}</div>', "", span, raw=True),
            _td(_accuracy_cell(st), "num", span, raw=True),
            _td(_change_cell(st, data.reference), "num", span, raw=True),
            _td(fmt.count(st.params), "num", span),
            _td(fmt.count(st.macs), "num", span),
            _td(fmt.nbytes(st.file_bytes), "num", span),
        ]
        if not bench:
            rows.append(
                f'<tr id="stage-{e(st.name)}">'
                + "".join(first)
                + _td("not benchmarked", "small", colspan=len(bench_cols))
                + "</tr>"
            )
            continue
        for i, r in enumerate(bench):
            cells = [
                _td(r["runtime"]),
                _td(r["batch_size"], "num"),
                _td(fmt.ms(r["median"]), "num"),
                _td(fmt.ms(r.get("p90")), "num"),
                _td(_throughput_cell(r), "num", raw=True),
                _td(fmt.num(r.get("peak_rss_mb"), 4), "num"),
            ]
            if has_eff:
                eff = r.get("efficiency")
                cells.append(_td("–" if eff is None else f"{eff * 100:.1f}", "num"))
            prefix = (f'<tr id="stage-{e(st.name)}">' + "".join(first)) if i == 0 else "<tr>"
            rows.append(prefix + "".join(cells) + "</tr>")
    thead = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
    body = "".join(rows)
    table = f'<div class="table-wrap"><table class="stages"><thead>{thead}</thead><tbody>{body}</tbody></table></div>'
    return table + _busy_note(data.bench)


def _busy_note(rows: list[dict[str, Any]]) -> str:
    """A sentence under the table when some rows were measured while other processes used the CPUs."""
    shares = [r["machine_load"]["other_share"] for r in rows if is_busy(r)]
    if not shares:
        return ""
    return (
        f'<p class="note">Rows marked <span class="busy">busy</span> were measured while other processes used '
        f"up to {100 * max(shares):.0f}% of the CPUs; their timings are likely slower than on an idle machine.</p>"
    )


def _throughput_cell(r: dict[str, Any]) -> str:
    """The throughput; measured in several processes, also their range (the kept one is the median)."""
    text = e(fmt.num(r.get("throughput"), 4))
    if is_busy(r):
        share = r["machine_load"]["other_share"]
        text += f'<span class="busy" title="other processes used {100 * share:.0f}% of the CPUs">busy</span>'
    reps = r.get("repeats")
    if reps and len(reps) > 1:
        text += f'<div class="small">{len(reps)} processes: {e(fmt.span(min(reps), max(reps), 4))}</div>'
    return text


def _findings(findings: list[Finding]) -> str:
    if not findings:
        return '<p class="note">No findings: the run holds no evaluated or benchmarked stage.</p>'
    items = "".join(f'<li><span class="tag">{e(f["topic"])}</span> {e(f["text"])}</li>' for f in findings)
    return f'<ul class="findings">{items}</ul>'


def _plots(plots: list[Plot]) -> str:
    out = []
    for p in plots:
        if p.svg:
            out.append(
                f'<figure id="plot-{e(p.key)}"><h3>{e(p.title)}</h3>{p.svg}'
                f"<figcaption>{e(p.caption)}</figcaption></figure>"
            )
        else:
            out.append(f'<h3>{e(p.title)}</h3><p class="note">{e(p.note or "No data.")}</p>')
    return "".join(out)


def _kv(d: dict[str, Any]) -> str:
    if not d:
        return ""
    items = "".join(f"<dt>{e(k)}</dt><dd>{e('–' if v is None or v == '' else v)}</dd>" for k, v in d.items())
    return f'<dl class="kv">{items}</dl>'


_DETAIL_SKIP = ("step", "index", "config", "history", "metrics", "seconds")


def _details(data: RunData) -> str:
    out = []
    for s in data.results.get("stages") or []:
        if not isinstance(s, dict):
            continue
        rec = as_dict(s.get("record"))
        idx = s.get("index")
        title = f"{idx:02d} {s.get('step', '?')}" if isinstance(idx, int) else str(s.get("step", "?"))
        secs = rec.get("seconds")
        summary = e(title) + (f' <span class="small">{e(secs)} s</span>' if secs is not None else "")
        if s.get("artifact"):
            summary += f' <span class="small">→ {e(s["artifact"])}</span>'
        body = ""
        if isinstance(rec.get("config"), dict) and rec["config"]:
            body += "<h3>options</h3>" + _kv(scalars(rec["config"]))
        if isinstance(rec.get("metrics"), dict):
            body += "<h3>metrics</h3>" + _kv(scalars(rec["metrics"]))
        rest = scalars(rec, _DETAIL_SKIP)
        if rest:
            body += "<h3>record</h3>" + _kv(rest)
        if isinstance(rec.get("history"), list) and rec["history"]:
            body += f'<p class="small">training history: {len(rec["history"])} epochs (in results.json)</p>'
        out.append(f"<details><summary>{summary}</summary>{body or '<p class=small>nothing recorded</p>'}</details>")
    return "".join(out)


def _environment(data: RunData) -> str:
    env = as_dict(data.results.get("environment"))
    cpu = as_dict(env.get("cpu"))
    flags = as_dict(cpu.get("flags"))
    d: dict[str, Any] = {
        "CPU": cpu.get("model"),
        "cores": cpu.get("cores"),
        "CPU flags present": ", ".join(k for k, v in flags.items() if v) or "none of those checked",
        "CPU flags absent": ", ".join(k for k, v in flags.items() if not v) or "–",
        "PyTorch threads": env.get("torch_threads"),
        "Python": env.get("python"),
        "platform": env.get("platform"),
    }
    versions = as_dict(env.get("versions"))
    d |= {f"{k}": v if v is not None else "not installed" for k, v in versions.items()}
    bench_env = data.bench_info.get("environment")
    extra: dict[str, Any] = {}
    if isinstance(bench_env, dict):  # the benchmark's own record of the machine, where it differs
        flat_run = scalars(env)
        extra = {k: v for k, v in scalars(bench_env).items() if flat_run.get(k) != v and not k.startswith("cpu.flags")}
    peak = data.bench_info.get("peak_gflops")
    if isinstance(peak, int | float):
        extra["measured fp32 GEMM peak (GFLOP/s)"] = f"{peak:.1f}"
    pdoc = data.bench_info.get("peak")
    if isinstance(pdoc, dict):
        if isinstance(pdoc.get("int8_gops"), int | float):
            extra["measured int8 GEMM peak (GOP/s)"] = f"{pdoc['int8_gops']:.1f}"
        for part in ("fp32", "int8"):
            if isinstance(pdoc.get(part), dict) and pdoc[part].get("method"):
                extra[f"{part} peak measured with"] = pdoc[part]["method"]
    cfg = data.bench_info.get("settings")
    if not isinstance(cfg, dict):
        cfg = data.recipe.get("benchmark") if isinstance(data.recipe.get("benchmark"), dict) else None
    html = _kv({k: v for k, v in d.items() if v is not None})
    if extra:
        html += "<h3>benchmark environment</h3>" + _kv(extra)
    if cfg:
        html += "<h3>benchmark settings</h3>" + _kv(scalars(cfg))
    return html


def _commands(commands: list[dict[str, str]]) -> str:
    return "".join(
        f'<div class="small">{e(c["what"])}</div><pre><code>{e(c["command"])}</code></pre>' for c in commands
    )


def render(
    data: RunData,
    findings: list[Finding],
    plots: list[Plot],
    commands: list[dict[str, str]],
    errors: list[str] | None = None,
) -> str:
    name = data.recipe.get("name") or data.run_dir.name
    dcfg = as_dict(data.recipe.get("data"))
    model = as_dict(data.recipe.get("model"))
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    dname = dcfg.get("name") or dcfg.get("factory") or "?"
    sub = (
        f"model {e(model.get('name', '?'))} · data {e(dname)} · run folder {e(data.run_dir)} · "
        f"final artifact {e(data.results.get('final_artifact', '–'))} · written {e(now)}"
    )
    notes = [
        "Accuracy intervals: 95% Wilson score interval of each top-1 accuracy. Changes: the 95% interval of the "
        "difference of two accuracies on the same test images — paired (McNemar normal approximation, with the "
        "share of discordant images bounded by 1 − top-1 agreement) when the evaluate step measured agreement "
        "against the compared model, otherwise the unpaired normal approximation (conservative on the same images).",
        "Latency is per batch; throughput = batch size / median latency unless the benchmark measured it. "
        "Timings depend on the machine and its load at the time (see the environment).",
        *data.notes,
        *(f"error: {x}" for x in errors or []),
    ]
    body = [
        f"<h1>slimline report: {e(name)}</h1>",
        f'<p class="sub">{sub}</p>',
        "<h2>Findings</h2>",
        _findings(findings),
        "<h2>Stages</h2>",
        stage_table(data),
        "<h2>Plots</h2>",
        _plots(plots),
        "<h2>Step details</h2>",
        _details(data),
        "<h2>Environment</h2>",
        _environment(data),
        "<h2>Reproduce</h2>",
        _commands(commands),
        "<h2>Notes</h2>",
        "<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>slimline report: {e(name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
