"""The report's plots, drawn with matplotlib (no pyplot, no GUI backend) and returned as inline SVG text.

Every plot function returns a :class:`Plot`; when its data is missing the plot carries a note
instead of an image, and a plot that fails to draw carries the error: the report never crashes
on a plot.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slimline.report.collect import RunData
from slimline.report.findings import accuracy_throughput_points
from slimline.report.stats import pareto_front

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_CURVES = 12
MAX_BARS = 60


@dataclass
class Plot:
    key: str
    title: str
    caption: str = ""
    svg: str | None = None  # inline <svg> element
    note: str | None = None  # why there is no image (missing data or an error)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def to_svg(fig: Any, label: str) -> str:
    """An inline ``<svg>`` element: no XML prolog, no metadata, scalable, labelled for screen readers."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.image_inline": True}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label, quote=True)}" class="plot" ', 1)
    return text


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def accuracy_vs_throughput(data: RunData) -> Plot:
    plot = Plot(
        "pareto",
        "Accuracy vs throughput",
        "One point per benchmarked artifact and runtime (error bars: 95% interval of top-1); the line "
        "and ringed points are the Pareto front: no other configuration is both faster and more accurate.",
    )
    groups = accuracy_throughput_points(data)
    if not groups:
        why = "no benchmark in this run" if not data.bench else "no benchmarked artifact has a measured accuracy"
        plot.note = f"Skipped: {why} (add a `benchmark:` section and `evaluate` steps to the recipe)."
        return plot
    runtimes = sorted({p["runtime"] for pts in groups.values() for p in pts})
    ncols = min(len(groups), 3)
    nrows = math.ceil(len(groups) / ncols)
    fig = _figure(4.6 * ncols, 3.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, (bs, pts) in zip(axes.flat, groups.items(), strict=False):
        for p in pts:
            k = runtimes.index(p["runtime"])
            yerr = None
            if p["ci95"]:
                yerr = [[max(p["top1"] - p["ci95"][0], 0)], [max(p["ci95"][1] - p["top1"], 0)]]
            ax.errorbar(
                p["throughput"],
                p["top1"],
                yerr=yerr,
                fmt=_MARKERS[k % len(_MARKERS)],
                color=_color(k),
                ecolor=_color(k),
                elinewidth=0.8,
                capsize=2,
                markersize=6,
            )
            ax.annotate(
                p["artifact"],
                (p["throughput"], p["top1"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color="#333333",
            )
        idx = pareto_front([(p["throughput"], p["top1"]) for p in pts])
        fx = [pts[i]["throughput"] for i in idx]
        fy = [pts[i]["top1"] for i in idx]
        ax.step(fx, fy, where="pre", color="#444444", linewidth=1.2, linestyle="--", zorder=0)
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="#ff7f0e", linewidths=2, zorder=3)
        xs = [p["throughput"] for p in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 8:
            ax.set_xscale("log")
        ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
        ax.set_title(f"batch size {bs}", fontsize=10)
        ax.set_xlabel("throughput (samples/s)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker=_MARKERS[k % len(_MARKERS)], color=_color(k), linestyle="", label=rt)
        for k, rt in enumerate(runtimes)
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            markerfacecolor="none",
            markeredgecolor="#ff7f0e",
            markersize=11,
            linestyle="--",
            color="#444444",
            label="Pareto front",
        )
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=8, frameon=False)
    plot.svg = to_svg(fig, plot.title)
    return plot


def accuracy_per_stage(data: RunData) -> Plot:
    plot = Plot("accuracy", "Accuracy per stage", "Top-1 accuracy of each evaluated artifact with its 95% interval.")
    pts = [(s.name, s.accuracy) for s in data.stages if s.accuracy is not None]
    if not pts:
        plot.note = "Skipped: no stage was evaluated (add `evaluate` steps to the recipe)."
        return plot
    fig = _figure(max(4.5, 1.1 * len(pts) + 2), 3.4)
    ax = fig.subplots()
    for i, (_name, ev) in enumerate(pts):
        yerr = [[ev.top1 - ev.ci95[0]], [ev.ci95[1] - ev.top1]] if ev.ci95 else None
        ax.errorbar(i, ev.top1, yerr=yerr, fmt="o", color=_color(0), capsize=4)
    ax.set_xticks(range(len(pts)), [n for n, _ in pts], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    plot.svg = to_svg(fig, plot.title)
    return plot


def sensitivity_curves(data: RunData) -> list[Plot]:
    if not data.sensitivity:
        return [
            Plot(
                "sensitivity",
                "Sensitivity per layer",
                note="Skipped: this run has no sensitivity analysis (add a `sensitivity` step to the recipe).",
            )
        ]
    out = []
    for sens in data.sensitivity:
        kind = f", {sens['kind']}" if sens.get("kind") else ""
        plot = Plot(
            f"sensitivity-{sens['stage']}{('-' + sens['kind']) if sens.get('kind') else ''}",
            f"Sensitivity per layer ({sens['stage']}{kind})",
            f"{sens['metric']} after pruning one layer at a time to each ratio; the other layers untouched.",
        )
        curves = sens["curves"]
        spread = {k: max(y for _, y in c) - min(y for _, y in c) for k, c in curves.items()}
        shown = sorted(curves, key=lambda k: -spread[k])[:MAX_CURVES]
        if len(curves) > len(shown):
            plot.caption += f" The {len(shown)} most sensitive of {len(curves)} layers are drawn."
        fig = _figure(7.5, 4.2)
        ax = fig.subplots()
        for i, layer in enumerate(shown):
            xs, ys = zip(*curves[layer], strict=True)
            ax.plot(
                xs, ys, marker=_MARKERS[i % len(_MARKERS)], markersize=4, color=_color(i), label=layer, linewidth=1.2
            )
        ax.set_xlabel("pruning ratio")
        ax.set_ylabel(sens["metric"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncols=1 if len(shown) <= 6 else 2)
        plot.svg = to_svg(fig, plot.title)
        out.append(plot)
    return out


def quantization_error(data: RunData) -> list[Plot]:
    if not data.quant_errors:
        return [
            Plot(
                "quant-error",
                "Quantization error per layer",
                note="Skipped: no quantization step recorded per-layer error in this run.",
            )
        ]
    out = []
    for q in data.quant_errors:
        metric = q["metric"]
        higher_is_better = "sqnr" in metric or metric == "cosine"
        plot = Plot(
            f"quant-{q['stage']}",
            f"Quantization error per layer ({q['stage']})",
            f"{metric} per layer ({'higher' if higher_is_better else 'lower'} is better); "
            "grey bars: layers kept in float.",
        )
        layers = q["layers"]
        names = list(layers)
        if len(names) > MAX_BARS:
            names = sorted(names, key=lambda n: layers[n], reverse=not higher_is_better)[:MAX_BARS]
            plot.caption += f" The {MAX_BARS} worst of {len(layers)} layers are drawn."
        floats = set(q.get("float_layers") or [])
        fig = _figure(7.5, max(2.5, 0.22 * len(names) + 1.2))
        ax = fig.subplots()
        ys = range(len(names))
        ax.barh(list(ys), [layers[n] for n in names], color=["#9e9e9e" if n in floats else _color(0) for n in names])
        ax.set_yticks(list(ys), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
        ax.grid(alpha=0.3, axis="x")
        plot.svg = to_svg(fig, plot.title)
        out.append(plot)
    return out


def latency_distributions(data: RunData) -> Plot:
    plot = Plot(
        "latency",
        "Latency per runtime",
        "One row per artifact and batch size. With raw samples: box plots (whiskers: 1st–99th percentile). "
        "From percentiles: thin line min–p99, thick bar median–p90, dot: median, ×: mean.",
    )
    if not data.bench:
        plot.note = "Skipped: this run has no benchmark (add a `benchmark:` section to the recipe)."
        return plot
    runtimes = sorted({r["runtime"] for r in data.bench})
    ncols = min(len(runtimes), 2)
    nrows = math.ceil(len(runtimes) / ncols)
    per_rt = {
        rt: sorted((r for r in data.bench if r["runtime"] == rt), key=lambda r: (r["batch_size"], r["artifact"]))
        for rt in runtimes
    }
    tallest = max(len(v) for v in per_rt.values())
    fig = _figure(5.2 * ncols, nrows * (0.35 * tallest + 1.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(runtimes) :]:
        ax.set_visible(False)
    batches = sorted({r["batch_size"] for r in data.bench})
    for ax, rt in zip(axes.flat, runtimes, strict=False):
        rows = per_rt[rt]
        values = []
        for y, r in enumerate(rows):
            c = _color(batches.index(r["batch_size"]))
            if r.get("samples"):
                ax.boxplot(
                    [r["samples"]],
                    positions=[y],
                    **_horizontal(),
                    whis=(1, 99),
                    widths=0.5,
                    showfliers=False,
                    patch_artist=True,
                    boxprops={"facecolor": c, "alpha": 0.5},
                    medianprops={"color": "black"},
                )
                values += r["samples"]
            else:
                lo = r.get("min") if r.get("min") is not None else r["median"]
                hi = r.get("p99") if r.get("p99") is not None else (r.get("p90") or r["median"])
                ax.hlines(y, lo, hi, color=c, linewidth=1.2)
                ax.hlines(y, r["median"], r.get("p90") or r["median"], color=c, linewidth=7, alpha=0.55)
                ax.plot([r["median"]], [y], "o", color="black", markersize=4)
                if r.get("mean") is not None:
                    ax.plot([r["mean"]], [y], "x", color="black", markersize=5)
                values += [lo, hi]
        ax.set_yticks(range(len(rows)), [f"{r['artifact']} · bs {r['batch_size']}" for r in rows], fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        pos = [v for v in values if v and v > 0]
        if pos and max(pos) / min(pos) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("latency per batch (ms)")
        ax.set_title(rt, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    from matplotlib.patches import Patch

    handles = [Patch(color=_color(i), alpha=0.6, label=f"batch {b}") for i, b in enumerate(batches)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8, frameon=False)
    plot.svg = to_svg(fig, plot.title)
    return plot


def _horizontal() -> dict[str, Any]:
    """``boxplot`` keyword for horizontal boxes (``orientation`` from matplotlib 3.10, ``vert`` before)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def serving_latency(data: RunData) -> list[Plot]:
    """Latency (p50, p99) and throughput against concurrency from the load tests saved in ``RUN/serving/*.json``
    (``slimline loadtest --json``); no plot when no load test ran."""
    from pathlib import Path

    from slimline.serving import load_test_runs

    runs = load_test_runs(Path(data.run_dir) / "serving")
    if not runs:
        return []
    fig = _figure(6.4, 3.4)
    ax, ax2 = fig.subplots(1, 2)
    for i, (name, rows) in enumerate(sorted(runs.items())):
        rows = sorted(rows, key=lambda r: r["concurrency"])
        c = [r["concurrency"] for r in rows]
        ax.plot(c, [r["p50_ms"] for r in rows], marker="o", color=_color(i), label=f"{name} p50")
        ax.plot(c, [r["p99_ms"] for r in rows], marker="^", ls="--", color=_color(i), label=f"{name} p99")
        ax2.plot(c, [r["throughput_rps"] for r in rows], marker="o", color=_color(i), label=name)
    ax.set(xlabel="concurrent requests", ylabel="latency (ms)", xscale="log", yscale="log")
    ax2.set(xlabel="concurrent requests", ylabel="answered per second", xscale="log")
    ax.legend(fontsize=7)
    n = sum(r.get("sent", 0) for rows in runs.values() for r in rows)
    caption = (
        f"slimline serve under slimline loadtest ({n} requests in all); errors and lost requests are in each JSON file."
    )
    return [
        Plot(
            "serving",
            "Serving: latency and throughput vs concurrency",
            caption,
            svg=to_svg(fig, "serving latency vs concurrency"),
        )
    ]


def make_plots(data: RunData) -> list[Plot]:
    """Every plot of the report, in order; missing data gives a note, a failure gives the error."""
    makers: list[tuple[str, str, Callable[[RunData], Plot | list[Plot]]]] = [
        ("pareto", "Accuracy vs throughput", accuracy_vs_throughput),
        ("accuracy", "Accuracy per stage", accuracy_per_stage),
        ("latency", "Latency per runtime", latency_distributions),
        ("sensitivity", "Sensitivity per layer", sensitivity_curves),
        ("quant-error", "Quantization error per layer", quantization_error),
        ("serving", "Serving: latency and throughput vs concurrency", serving_latency),
    ]
    out: list[Plot] = []
    for key, title, fn in makers:
        try:
            res = fn(data)
        except Exception as e:  # noqa: BLE001 - a plot that cannot be drawn must not cost the report
            res = Plot(key, title, note=f"Could not be drawn: {type(e).__name__}: {e}")
        out += res if isinstance(res, list) else [res]
    return out
