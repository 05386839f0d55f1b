"""Plain-language findings computed from a run's figures.

Each finding is ``{"topic", "text", "figures"}``: ``text`` is one sentence for a reader,
``figures`` the numbers it was computed from (for ``--json`` and tests). Examples:
``unstructured pruning (50%) on torch: 0% faster (batch 1: +1%, batch 64: −2%), within the latency
spread`` or ``int8 quantization on openvino: 3.1× faster, −0.2 pt``.
"""

from __future__ import annotations

from typing import Any

from slimline.report import fmt
from slimline.report.collect import RunData, Stage
from slimline.report.stats import diff_ci, pareto_front, significant

DENSE_RUNTIMES = ("torch", "torch_compile", "onnxruntime", "openvino")

Finding = dict[str, Any]


def _finding(topic: str, text: str, **figures: Any) -> Finding:
    return {"topic": topic, "text": text, "figures": figures}


def change_between(data: RunData, st: Stage, ref: Stage) -> dict[str, Any] | None:
    """Accuracy change of ``st`` against ``ref`` with a 95% interval (paired bound where it is valid)."""
    a, b = st.accuracy, ref.accuracy
    if a is None or b is None or a.split != b.split:
        return None
    first = data.stages[0].name if data.stages else None
    agreement = a.agreement if ref.name == first else None
    return diff_ci(a.top1, a.n, b.top1, b.n, agreement)


def _ci_text(ci: dict[str, Any]) -> str:
    return f"{fmt.pt(ci['delta'])} [95% CI {fmt.signed(ci['lo'])}, {fmt.signed(ci['hi'])}]"


def accuracy_findings(data: RunData) -> list[Finding]:
    ref = data.stage(data.reference)
    out = []
    if ref is None or ref.accuracy is None:
        return [_finding("accuracy", "No stage was evaluated: add an `evaluate` step after the steps to measure.")]
    r = ref.accuracy
    for st in data.stages:
        if st.change is None or st.accuracy is None:
            continue
        ci = st.change
        verdict = "beyond the noise of" if significant(ci) else "within the noise of"
        out.append(
            _finding(
                "accuracy",
                f"{st.name} ({st.label}): top-1 {fmt.pct(st.accuracy.top1)} vs {fmt.pct(r.top1)} for {ref.name}, "
                f"{_ci_text(ci)} — {verdict} {st.accuracy.n:,} test images ({ci['method']}).",
                artifact=st.name,
                reference=ref.name,
                top1=st.accuracy.top1,
                delta=ci["delta"],
                ci95=[ci["lo"], ci["hi"]],
                method=ci["method"],
                significant=significant(ci),
            )
        )
    return out


def _rows(st: Stage) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["runtime"], r["batch_size"]): r for r in st.bench}


def _within_spread(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two medians differ by less than either measurement's spread (p90 − median)."""
    spread = max((r["p90"] - r["median"] for r in (a, b) if r.get("p90") is not None), default=0.0)
    return abs(a["median"] - b["median"]) <= spread


def same_computation(a: Stage, b: Stage) -> bool:
    """Same kind, same parameter count and same MACs: a dense runtime does the same work for both."""
    return (
        a.kind == b.kind and a.params is not None and a.params == b.params and a.macs is not None and a.macs == b.macs
    )


def benchmarked_ancestor(data: RunData, st: Stage) -> Stage | None:
    """The nearest earlier artifact of the chain that was benchmarked (usually the one ``st`` was made from)."""
    parent = data.stage(st.parent)
    while parent is not None and not parent.bench:
        parent = data.stage(parent.parent)
    return parent


def speed_findings(data: RunData) -> list[Finding]:
    """Each step's effect on latency: the artifact against the one it was made from, runtime by runtime."""
    out = []
    for st in data.stages:
        parent = benchmarked_ancestor(data, st)
        if parent is None or not st.bench:
            continue
        mine, theirs = _rows(st), _rows(parent)
        common = sorted(set(mine) & set(theirs))
        ci = change_between(data, st, parent)
        acc = f", {fmt.pt(ci['delta'])}" if ci else ""
        if common:
            by_rt: dict[str, list[tuple[int, float, bool]]] = {}
            for rt, bs in common:
                ratio = theirs[(rt, bs)]["median"] / mine[(rt, bs)]["median"]
                by_rt.setdefault(rt, []).append((bs, ratio, _within_spread(mine[(rt, bs)], theirs[(rt, bs)])))
            for rt, items in by_rt.items():
                best = max(items, key=lambda t: t[0])  # the largest batch size speaks for throughput
                per_batch = ", ".join(f"batch {bs}: {fmt.speed(r)}" for bs, r, _ in items)
                if all(w for _, _, w in items):
                    noise = " — within the latency spread"
                elif same_computation(st, parent) and any(abs(r - 1) >= 0.1 for _, r, _ in items):
                    noise = (
                        " — the two do the same dense computation, so this difference is measurement noise "
                        "(a busy machine?), not an effect of the step"
                    )
                else:
                    noise = ""
                dense = (
                    " (a dense runtime)"
                    if st.step == "prune" and rt.split(":")[0] in DENSE_RUNTIMES and "unstructured" in st.label
                    else ""
                )
                out.append(
                    _finding(
                        "speed",
                        f"{st.label} on {rt}{dense}: {fmt.speed(best[1])}{acc} vs {parent.name} ({per_batch}){noise}.",
                        artifact=st.name,
                        parent=parent.name,
                        runtime=rt,
                        speedup={str(bs): r for bs, r, _ in items},
                        accuracy_delta=ci["delta"] if ci else None,
                    )
                )
        else:  # e.g. an export: the new runtime against the parent's runtimes at the same batch size
            for (rt, bs), row in sorted(mine.items()):
                others = [(prt, r) for (prt, pbs), r in theirs.items() if pbs == bs]
                if not others:
                    continue
                prt, prow = min(others, key=lambda t: t[0] != "torch")
                ratio = prow["median"] / row["median"]
                out.append(
                    _finding(
                        "speed",
                        f"{st.label}, on {rt}: {fmt.speed(ratio)} than {parent.name} on {prt} at batch {bs}{acc}.",
                        artifact=st.name,
                        parent=parent.name,
                        runtime=rt,
                        parent_runtime=prt,
                        batch_size=bs,
                        speedup=ratio,
                        accuracy_delta=ci["delta"] if ci else None,
                    )
                )
    return out


def overall_findings(data: RunData) -> list[Finding]:
    """The fastest configuration at each batch size against the reference artifact's own runtime."""
    ref = data.stage(data.reference)
    if ref is None or not ref.bench:  # the reference was not benchmarked: the first artifact that was
        ref = next((s for s in data.stages if s.bench), None)
    if ref is None or not data.bench:
        return []
    out = []
    ref_rows = _rows(ref)
    for bs in sorted({r["batch_size"] for r in data.bench}):
        candidates = [r for r in data.bench if r["batch_size"] == bs and r.get("throughput")]
        base = [r for (rt, b), r in ref_rows.items() if b == bs]
        if not candidates or not base:
            continue
        b = min(base, key=lambda r: r["runtime"] != "torch")
        best = max(candidates, key=lambda r: r["throughput"])
        st = data.stage(best["artifact"])
        ci = change_between(data, st, ref) if st is not None and st is not ref else None
        ratio = b["median"] / best["median"]
        acc = f", accuracy {_ci_text(ci)}" if ci else ""
        out.append(
            _finding(
                "overall",
                f"Fastest at batch {bs}: {best['artifact']} on {best['runtime']}, "
                f"{fmt.num(best['throughput'])} samples/s — {fmt.speed(ratio)} than {ref.name} on {b['runtime']} "
                f"({fmt.ms(b['median'])} → {fmt.ms(best['median'])} ms median){acc}.{_processes(best, b)}",
                batch_size=bs,
                artifact=best["artifact"],
                runtime=best["runtime"],
                speedup=ratio,
                accuracy_delta=ci["delta"] if ci else None,
            )
        )
    return out


def _processes(*rows: dict[str, Any]) -> str:
    """`` Each measured in 3 fresh processes, the median one kept (…)`` when the benchmark repeated them."""
    rows = tuple({id(r): r for r in rows}.values())  # the reference may itself be the fastest
    reps = [r.get("repeats") or [] for r in rows]
    if not all(len(x) > 1 for x in reps):
        return ""
    ranges = ", ".join(f"{r['artifact']} {fmt.span(min(x), max(x))}" for r, x in zip(rows, reps, strict=True))
    n = "/".join(sorted({str(len(x)) for x in reps}))
    return f" Each measured in {n} fresh processes, the median one kept (samples/s: {ranges})."


def _fewer(new: float, old: float, what: str) -> str:
    """``78% fewer MACs``; past a 10x cut ``418× fewer MACs``; ``12% more MACs``."""
    if new >= old:
        return f"{(new / old - 1) * 100:.0f}% more {what}"
    if new * 10 <= old:
        return f"{old / new:,.0f}\u00d7 fewer {what}"
    return f"{(1 - new / old) * 100:.0f}% fewer {what}"


def size_findings(data: RunData) -> list[Finding]:
    out = []
    for st in data.stages:
        parent = data.stage(st.parent)
        if parent is None:
            continue
        parts, figs = [], {}
        if st.file_bytes and parent.file_bytes and abs(st.file_bytes / parent.file_bytes - 1) >= 0.02:
            parts.append(
                f"file {fmt.ratio_smaller(parent.file_bytes, st.file_bytes)} "
                f"({fmt.nbytes(parent.file_bytes)} → {fmt.nbytes(st.file_bytes)})"
            )
            figs["file_ratio"] = parent.file_bytes / st.file_bytes
        if st.macs and parent.macs and abs(st.macs / parent.macs - 1) >= 0.01:
            parts.append(_fewer(st.macs, parent.macs, "MACs"))
            figs["macs_ratio"] = st.macs / parent.macs
        if st.params and parent.params and abs(st.params / parent.params - 1) >= 0.01 and st.kind == parent.kind:
            parts.append(_fewer(st.params, parent.params, "parameters"))
            figs["params_ratio"] = st.params / parent.params
        if parts:
            out.append(_finding("size", f"{st.label} ({st.name}): " + "; ".join(parts) + ".", artifact=st.name, **figs))
    return out


def pareto_findings(data: RunData) -> list[Finding]:
    out = []
    for bs, pts in accuracy_throughput_points(data).items():
        if len(pts) < 2:
            continue
        idx = pareto_front([(p["throughput"], p["top1"]) for p in pts])
        names = [f"{pts[i]['artifact']} on {pts[i]['runtime']}" for i in idx]
        out.append(
            _finding(
                "pareto",
                f"At batch {bs}, {len(idx)} of {len(pts)} configurations are Pareto-optimal (no other is both faster "
                f"and more accurate): {', '.join(names)}.",
                batch_size=bs,
                front=names,
            )
        )
    return out


def accuracy_throughput_points(data: RunData) -> dict[int, list[dict[str, Any]]]:
    """Per batch size, one point per benchmarked (artifact, runtime) that also has an accuracy."""
    out: dict[int, list[dict[str, Any]]] = {}
    for st in data.stages:
        for r in st.bench:
            ev = st.accuracy_on(r["runtime"])
            if ev is None or not r.get("throughput"):
                continue
            out.setdefault(r["batch_size"], []).append(
                {
                    "artifact": st.name,
                    "label": st.label,
                    "runtime": r["runtime"],
                    "throughput": r["throughput"],
                    "top1": ev.top1,
                    "ci95": ev.ci95,
                }
            )
    return dict(sorted(out.items()))


def step_findings(data: RunData) -> list[Finding]:
    """What single steps recorded: export parity, sensitivity extremes, quantization error."""
    out = []
    for st in data.stages:
        parity = st.record.get("parity")
        if isinstance(parity, dict) and parity.get("max_rel_diff") is not None:
            tol = parity.get("tolerance")
            ok = parity.get("passed")
            out.append(
                _finding(
                    "export",
                    f"{st.label} ({st.name}): outputs match the source model to a max relative difference of "
                    f"{parity['max_rel_diff']:.1e}"
                    + (f" (tolerance {tol:g}" + (", passed)" if ok else ")") if tol else "")
                    + ".",
                    artifact=st.name,
                    max_rel_diff=parity["max_rel_diff"],
                )
            )
    for sens in data.sensitivity:
        drops = {}
        for layer, curve in sens["curves"].items():
            ys = [y for _, y in curve]
            drops[layer] = max(ys) - min(ys)
        if len(drops) >= 2:
            worst, best = max(drops, key=drops.__getitem__), min(drops, key=drops.__getitem__)
            kind = f" ({sens['kind']} pruning)" if sens.get("kind") else ""
            out.append(
                _finding(
                    "sensitivity",
                    f"Most sensitive layer{kind}: {worst} ({sens['metric']} varies by {fmt.num(drops[worst])} "
                    f"over the ratios tried); least: {best} ({fmt.num(drops[best])}). "
                    "Prune the least sensitive layers hardest.",
                    stage=sens["stage"],
                    most=worst,
                    least=best,
                )
            )
    for q in data.quant_errors:
        layers = q["layers"]
        higher_is_better = "sqnr" in q["metric"] or q["metric"] == "cosine"
        worst = (min if higher_is_better else max)(layers, key=layers.__getitem__)
        text = f"Quantization ({q['stage']}): the largest error is in {worst} ({q['metric']} {fmt.num(layers[worst])})"
        if q.get("float_layers"):
            text += f"; {len(q['float_layers'])} layer(s) kept in float: {', '.join(q['float_layers'][:6])}"
            text += "…" if len(q["float_layers"]) > 6 else ""
        out.append(_finding("quantization", text + ".", stage=q["stage"], worst=worst, value=layers[worst]))
    eff = [r for r in data.bench if r.get("efficiency") is not None]
    if eff:
        best = max(eff, key=lambda r: r["efficiency"])
        e = best["efficiency"]
        share = e * 100  # a fraction of the measured fp32 GEMM peak
        out.append(
            _finding(
                "efficiency",
                f"Best use of the machine: {best['artifact']} on {best['runtime']} at batch {best['batch_size']} "
                f"reaches {share:.1f}% of the measured fp32 GEMM peak.",
                artifact=best["artifact"],
                efficiency=e,
            )
        )
    return out


def compute_findings(data: RunData) -> list[Finding]:
    """Every finding, most important first; a failing group is reported as a finding, not raised."""
    out: list[Finding] = []
    for fn in (overall_findings, accuracy_findings, speed_findings, size_findings, pareto_findings, step_findings):
        try:
            out += fn(data)
        except Exception as e:  # noqa: BLE001 - one odd record must not cost the whole report
            out.append(_finding("error", f"{fn.__name__} could not be computed: {type(e).__name__}: {e}"))
    return out
