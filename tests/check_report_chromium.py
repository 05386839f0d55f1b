#!/usr/bin/env python3
"""Open a slimline report in headless Chromium and check that it renders: no console errors, every plot visible.

Usage:
    python tests/check_report_chromium.py RUN_DIR_OR_REPORT_HTML [--screenshot OUT.png] [--json OUT.json]

Three Chromium runs, each with a fresh profile and every network feature off (the report must need
no network; its Content-Security-Policy blocks any fetch, and a blocked fetch shows as a console error):

1. ``--dump-dom`` of the report with ``--enable-logging=stderr --v=0``: no console message at all
   (the report has no scripts, so any message is a problem: a CSP violation, a failed resource),
   and the rendered DOM holds as many ``<svg class="plot">`` / ``<img>`` as the file;
   every ``<img>`` is a ``data:`` image.
2. ``--dump-dom`` of a copy with a small probe script added (the copy only): the layout box of every
   plot and image (non-zero size, displayed, visible) and the page height.
3. ``--screenshot`` of the report with the window as tall as the page: the PNG exists and each
   plot's region of it is drawn (enough non-background pixels).

Exits 0 when every check passes, 1 with the list of problems otherwise, 2 when Chromium is missing
(install it with ``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--mute-audio",
)
WIDTH = 1280
MAX_HEIGHT = 16000  # Chromium's screenshot limit is near 16k pixels
MIN_PLOT_INK = 0.01  # share of a plot's screenshot region that must differ from the background

PROBE_CSP = (
    "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:; script-src 'unsafe-inline'\">"
)
PROBE = """
<script>
window.addEventListener('load', function () {
  function box(el) {
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return {id: (el.closest('figure') || el).id || '', tag: el.tagName.toLowerCase(),
            x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
            shown: s.display !== 'none' && s.visibility !== 'hidden' && parseFloat(s.opacity) > 0,
            children: el.childElementCount,
            loaded: el.tagName.toLowerCase() === 'img' ? (el.complete && el.naturalWidth > 0) : true};
  }
  var out = {height: Math.ceil(document.documentElement.scrollHeight),
             width: Math.ceil(document.documentElement.scrollWidth),
             plots: Array.prototype.map.call(document.querySelectorAll('svg.plot, img'), box)};
  var pre = document.createElement('pre');
  pre.id = 'slimline-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def find_chromium(explicit: str | None) -> str | None:
    for cand in ([explicit] if explicit else []) + list(CHROMIUM_CANDIDATES):
        path = shutil.which(cand) if cand and not os.path.isabs(cand) else cand
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_chromium(chromium: str, url: str, extra: list[str], timeout: float) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory(prefix="slimline-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url]
        env = dict(os.environ, HOME=profile)  # keep Chromium's caches in the throw-away profile
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=profile)
        except subprocess.TimeoutExpired:
            return 124, "", f"chromium timed out after {timeout:g} s"
        return proc.returncode, proc.stdout, proc.stderr


def console_messages(stderr: str) -> list[str]:
    """Console output of the page (Chromium logs it as ``...:CONSOLE...] "message", source: ...``)."""
    return [line.strip() for line in stderr.splitlines() if ":CONSOLE" in line]


def count_tags(html: str) -> tuple[int, int]:
    plots = len(re.findall(r"<svg\b[^>]*\bclass=\"[^\"]*\bplot\b", html))
    imgs = len(re.findall(r"<img\b", html))
    return plots, imgs


def external_refs(html: str) -> list[str]:
    """``src``/``href`` attributes (and CSS ``url()``) that point anywhere but ``data:`` or ``#fragment``."""
    refs = re.findall(r"""\b(?:src|href|xlink:href)\s*=\s*["']([^"']*)["']""", html)
    refs += re.findall(r"""url\(\s*["']?([^"')]*)""", html)
    return [r for r in refs if r and not r.startswith(("data:", "#"))]


def ink_share(png: Path, box: dict[str, Any]) -> float:
    """Share of the pixels inside ``box`` that are not (near) white."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        x0, y0 = max(int(box["x"]), 0), max(int(box["y"]), 0)
        x1, y1 = min(int(box["x"] + box["w"]), rgb.width), min(int(box["y"] + box["h"]), rgb.height)
        if x1 <= x0 or y1 <= y0:
            return 0.0
        region = rgb.crop((x0, y0, x1, y1)).convert("L")
        hist = region.histogram()
        dark = sum(hist[:235])
        return dark / max(sum(hist), 1)


def check(report: Path, screenshot: Path | None, chromium: str, timeout: float) -> dict[str, Any]:
    problems: list[str] = []
    source = report.read_text(encoding="utf-8")
    want_plots, want_imgs = count_tags(source)
    ext = external_refs(source)
    if ext:
        problems.append(f"external references in the file: {ext[:5]}")
    if "Content-Security-Policy" not in source:
        problems.append("no Content-Security-Policy meta tag (the report should forbid network access)")
    if want_plots + want_imgs == 0:
        problems.append("the report holds no plot at all")

    # 1. the report as it is: console, DOM
    rc, dom, err = run_chromium(chromium, report.resolve().as_uri(), ["--dump-dom"], timeout)
    if rc != 0:
        problems.append(f"chromium --dump-dom exited with {rc}: {err.strip().splitlines()[-1:]}")
    console = console_messages(err)
    problems += [f"console: {m}" for m in console]
    got_plots, got_imgs = count_tags(dom)
    if (got_plots, got_imgs) != (want_plots, want_imgs):
        problems.append(f"rendered DOM has {got_plots} plots / {got_imgs} images, the file {want_plots} / {want_imgs}")
    bad_imgs = [s[:40] for s in re.findall(r"""<img\b[^>]*\bsrc=["']([^"']*)""", dom) if not s.startswith("data:")]
    if bad_imgs:
        problems.append(f"images that are not embedded: {bad_imgs}")

    # 2. a probed copy: layout of every plot
    probe: dict[str, Any] = {"height": 0, "plots": []}
    with tempfile.TemporaryDirectory(prefix="slimline-probe-") as tmp:
        copy = Path(tmp) / "probe.html"
        # the copy keeps every network fetch blocked; only the probe's inline script may run
        probed = re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", source, count=1)
        probed = re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + PROBE_CSP, probed, count=1, flags=re.I)
        probed = probed.replace("</body>", PROBE + "</body>", 1)
        copy.write_text(probed, encoding="utf-8")
        rc, pdom, perr = run_chromium(chromium, copy.as_uri(), ["--dump-dom", f"--window-size={WIDTH},1000"], timeout)
        m = re.search(r'<pre id="slimline-probe">(.*?)</pre>', pdom, flags=re.S)
        if rc != 0 or not m:
            problems.append(f"layout probe failed (exit {rc})")
        else:
            import html as _html

            probe = json.loads(_html.unescape(m.group(1)))
    for p in probe["plots"]:
        name = p["id"] or p["tag"]
        if not p["shown"]:
            problems.append(f"plot {name} is hidden")
        if p["w"] < 50 or p["h"] < 50:
            problems.append(f"plot {name} is {p['w']:.0f}x{p['h']:.0f} px: too small to see")
        if not p["loaded"]:
            problems.append(f"image {name} did not load")
        if p["tag"] == "svg" and p["children"] == 0:
            problems.append(f"plot {name} is an empty <svg>")
    if len(probe["plots"]) != want_plots + want_imgs:
        problems.append(f"layout probe saw {len(probe['plots'])} plots, the file holds {want_plots + want_imgs}")

    # 3. screenshot of the whole page, and each plot's region of it is drawn
    shot_info: dict[str, Any] = {}
    if screenshot is not None:
        height = min(max(int(probe.get("height") or 2000), 600), MAX_HEIGHT)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        rc, _, serr = run_chromium(
            chromium,
            report.resolve().as_uri(),
            [f"--screenshot={screenshot.resolve()}", f"--window-size={WIDTH},{height}"],
            timeout,
        )
        problems += [f"console (screenshot run): {m}" for m in console_messages(serr)]
        if rc != 0 or not screenshot.is_file() or screenshot.stat().st_size == 0:
            problems.append(f"no screenshot written (chromium exit {rc})")
        else:
            from PIL import Image

            with Image.open(screenshot) as im:
                shot_info = {"path": str(screenshot), "width": im.width, "height": im.height}
            inks = {}
            for p in probe["plots"]:
                name = p["id"] or p["tag"]
                if p["y"] + p["h"] > height:
                    problems.append(f"plot {name} lies below the screenshot (page taller than {MAX_HEIGHT} px)")
                    continue
                inks[name] = round(ink_share(screenshot, p), 4)
                if inks[name] < MIN_PLOT_INK:
                    problems.append(f"plot {name} looks blank in the screenshot ({inks[name]:.1%} drawn)")
            shot_info["plot_ink"] = inks
    return {
        "report": str(report),
        "chromium": chromium,
        "plots_in_file": want_plots,
        "images_in_file": want_imgs,
        "console_messages": console,
        "page_height": probe.get("height"),
        "plots": probe["plots"],
        "screenshot": shot_info,
        "problems": problems,
        "ok": not problems,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="report.html, or the run folder that holds it")
    ap.add_argument("--screenshot", type=Path, default=None, help="write a full-page PNG here; check the plots in it")
    ap.add_argument("--json", type=Path, default=None, help="write the check's results here")
    ap.add_argument("--chromium", default=None, help="the Chromium binary (default: /usr/bin/chromium)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per Chromium run")
    args = ap.parse_args(argv)
    report = args.report / "report.html" if args.report.is_dir() else args.report
    if not report.is_file():
        print(f"error: {report} does not exist (write it with: slimline report RUN_DIR)", file=sys.stderr)
        return 1
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("error: Chromium not found; install it with: apt-get install -y chromium", file=sys.stderr)
        return 2
    result = check(report, args.screenshot, chromium, args.timeout)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{report}: {result['plots_in_file']} plot(s), {result['images_in_file']} image(s), "
        f"page height {result['page_height']} px, console messages: {len(result['console_messages'])}"
    )
    if result["screenshot"]:
        s = result["screenshot"]
        print(f"screenshot {s['path']} ({s['width']}x{s['height']}); drawn share per plot: {s.get('plot_ink')}")
    for p in result["problems"]:
        print(f"PROBLEM: {p}")
    print("OK" if result["ok"] else f"FAILED: {len(result['problems'])} problem(s)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
