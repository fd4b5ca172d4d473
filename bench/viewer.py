"""Viewer benchmark: what a reader waits for, in headless Chromium against `dsmpacs serve`.

    .venv/bin/python -m bench.viewer [--rounds 5] [--seconds 4] [--frames 120] [--quick]

One XA run of 512x512 frames at 15 fps (smooth anatomy, a bolus and quantum-like noise,
so frames compress like real ones: about 166 KB as PNG) is stored with storescu. Each
round opens a fresh browser context (empty caches, HTTP cache disabled) signed in as a
radiologist, once on the LAN (loopback) and once through Chromium's network emulation
of a 9 Mbit/s, 60 ms link (CDP Network.emulateNetworkConditions); the two links take
turns going first. Measured, per round and link:

- time to first image: from navigation start to the first frame decoded on screen;
- window/level: from a pointer move of a window drag to (a) the in-browser preview
  applied (the SVG filter, see docs/viewer.md) and (b) the server's exact render of the
  drag's last window on screen;
- cine: frames shown per second over ``--seconds`` after 1.5 s of play (the file's
  rate is 15 fps).

No peer is measured beside it yet: neither the Orthanc web viewer nor OHIF is installed
on the development machine, so this section prints our figures only and says so.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    WORK,
    exit_cleanly_on_sigterm,
    our_version,
    print_versions,
    rotated,
    section_parser,
    spread,
    table,
)

LINKS = {
    "LAN": None,
    "9 Mbit/s, 60 ms": {"offline": False, "latency": 60, "downloadThroughput": 9_000_000 / 8,
                        "uploadThroughput": 9_000_000 / 8},
}

FIRST_IMAGE = """() => new Promise((resolve) => {
  const done = () => { const img = document.querySelector('[data-viewport] [data-image]');
    if (img && (img.getAttribute('data-src') || '').includes('/render/') && img.complete && img.naturalWidth) {
      resolve(performance.now()); return true; } return false; };
  if (!done()) { const timer = setInterval(() => { if (done()) { clearInterval(timer); } }, 5); }
})"""

WATCH_DRAG = """() => { const vp = window.DSMViewer.viewports[0]; window.__wl = {preview: [], exact: []};
  vp.stage.addEventListener('pointermove', () => { const t0 = performance.now();
    requestAnimationFrame(() => { if ((vp.img.style.filter || '').includes('url(')) { window.__wl.preview.push(performance.now() - t0); } });
    window.__wl.last = {t0: t0, ww: vp.window && vp.window.width}; }, false);
  new MutationObserver(() => { const l = window.__wl.last; const src = vp.img.getAttribute('data-src') || '';
    if (l && l.ww && src.includes('ww=' + l.ww + '') && !l.seen) { l.seen = true; window.__wl.exact.push(performance.now() - l.t0); } })
    .observe(vp.img, {attributes: true, attributeFilter: ['data-src']}); }"""

COUNT_FRAMES = """() => { const el = document.querySelector('[data-viewport]'); window.__frames = [];
  new MutationObserver(() => window.__frames.push(performance.now()))
    .observe(el, {attributes: true, attributeFilter: ['data-index']}); }"""


@dataclass(frozen=True)
class Sizes:
    rounds: int
    seconds: float
    frames: int


FULL = Sizes(rounds=5, seconds=4.0, frames=120)
QUICK = Sizes(rounds=1, seconds=2.0, frames=60)


def build_parser():
    parser = section_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds per link (default {FULL.rounds}, "
                        f"--quick {QUICK.rounds})")
    parser.add_argument("--seconds", type=float, default=None, help="cine seconds counted per round")
    parser.add_argument("--frames", type=int, default=None, help="frames of the 512x512 run")
    return parser


def one_round(browser, server, url: str, user: str, password: str, link: dict | None, seconds: float) -> dict:
    from tests.browser import sign_in

    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        page = context.new_page()
        page.set_default_timeout(60000)
        sign_in(page, server, user, password)
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        if link:
            cdp.send("Network.emulateNetworkConditions", link)
        page.goto(url, wait_until="commit")
        first = page.evaluate(FIRST_IMAGE)
        # Window drags: four steps each, then let go and wait for the exact render.
        page.evaluate(WATCH_DRAG)
        box = page.locator("[data-stage]").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for k in range(3):
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 30 * (1 if k % 2 else -1), cy + 10 * (k - 1), steps=4)
            page.mouse.up()
            page.wait_for_function(f"() => window.__wl.exact.length >= {k + 1}")
            page.wait_for_timeout(400)          # idle: the still frame is asked for losslessly
        wl = page.evaluate("() => window.__wl")
        # Cine from frame 0.
        page.evaluate("() => { const vp = window.DSMViewer.viewports[0]; vp.windowChanged(null); vp.go(0, false); }")
        page.evaluate(COUNT_FRAMES)
        page.click("[data-action=play]")
        page.wait_for_timeout(1500)
        start = page.evaluate("() => performance.now()")
        page.wait_for_function(f"() => performance.now() > {start} + {seconds * 1000}")
        shown = page.evaluate(f"() => window.__frames.filter(t => t >= {start} && t <= {start} + {seconds * 1000}).length")
        page.click("[data-action=play]")
        return {"first": first, "preview": max(wl["preview"]) if wl["preview"] else float("nan"),
                "exact": sorted(wl["exact"])[len(wl["exact"]) // 2], "fps": shown / seconds}
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_cleanly_on_sigterm()
    sizes = QUICK if args.quick else FULL
    rounds = max(1, min(args.rounds or sizes.rounds, 100))
    seconds = max(1.0, args.seconds or sizes.seconds)
    frames = max(30, args.frames or sizes.frames)
    from tests.browser import ARGS, chromium_path

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if not shutil.which("storescu") or chromium_path() is None or sync_playwright is None:
        print("[viewer] storescu, Chromium or Playwright not installed, skipped", file=sys.stderr)
        return 0
    from bench.web import PASSWORD, USER, Ours, store
    from tests import dsa_runs

    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="viewer-", dir=WORK))
    ours = None
    results: dict[str, list[dict]] = {name: [] for name in LINKS}
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        run = dsa_runs.bolus_run(frames=frames, size=512, peak=frames // 2, spread=frames / 8, noise=25)
        dsa_runs.write(run, corpus / "run.dcm")
        ours = Ours(tmp / "ours").start()
        store(ours.ae_title, ours.port, corpus)
        url = ours.url + f"/viewer?study={run.StudyInstanceUID}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
            try:
                for r in range(rounds):
                    for name in rotated(list(LINKS), r):
                        results[name].append(one_round(browser, ours.server, url, USER, PASSWORD, LINKS[name], seconds))
                        print(f"[viewer] round {r + 1} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
            finally:
                browser.close()
    finally:
        if ours is not None:
            ours.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def cells(key: str, fmt: str, unit: str) -> list[str]:
        return [spread([r[key] for r in results[name]], fmt, unit) for name in LINKS]

    print(f"\nViewer{' (--quick)' if args.quick else ''}, headless Chromium, {rounds} round(s) per link, "
          f"one XA run 512x512x{frames} at 15 fps")
    print(table(["measure", *LINKS], [
        ["time to first image", *cells("first", "{:.0f}", " ms")],
        ["window/level: preview on screen (slowest step)", *cells("preview", "{:.1f}", " ms")],
        ["window/level: exact server render on screen", *cells("exact", "{:.0f}", " ms")],
        [f"cine over {seconds:g} s (file: 15 fps)", *cells("fps", "{:.1f}", " fps")],
    ]))
    print("  cells: median (min–max) over the rounds. No peer viewer measured (Orthanc web viewer and\n"
          "  OHIF are not installed here): these are this archive's figures alone.")
    print_versions("viewer", [our_version()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
