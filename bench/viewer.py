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

Beside it, in the same rounds: the Orthanc web viewer (Debian's orthanc-webviewer, the
plugin /usr/share/orthanc/plugins/libOrthancWebViewer.so loaded through the "Plugins" list
of Orthanc's JSON configuration) on an Orthanc that received the same file by storescu,
opened at /web-viewer/app/viewer.html?series=<Orthanc series id>. The four (viewer, link)
pairs of a round run in an order that rotates from round to round, after one untimed
round per viewer (so that a cold server is not paid for by the first timed round alone).
Measured for it:

- time to first image: from navigation start to the first non-black pixels in the middle
  of its cornerstone canvas (polled every 5 ms, the same clock and poll as ours);
- window/level: from a pointer move of a left-button drag to cornerstone's
  CornerstoneImageRendered event for it (the canvas redrawn with the new window, in the
  browser: the counterpart of our preview; it has no server render to wait for). cornerstone
  0.11 redraws in its own animation-frame loop, so this includes the wait for that frame, as
  ours includes the wait for the frame in which the preview filter is set;
- cine: none. Orthanc web viewer 2.8 has no play control (a slider and the mouse wheel
  only), so there is no rate to count: printed as n/a.

Ratios are Orthanc's time over ours, round i against round i: above 1.0x we are faster.
Orthanc's viewer is opened without a login (Orthanc on loopback, authentication off),
ours after a sign-in that happens before navigation starts and is not timed.
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
    ratio_cell,
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

# Orthanc web viewer: cornerstone draws into a canvas inside #dicomImage; the first image is
# the first time the middle of that canvas holds non-black pixels (the run's anatomy is
# nowhere black there), which needs no knowledge of its code.
THEIR_FIRST_IMAGE = """() => new Promise((resolve) => {
  const done = () => { const c = document.querySelector('#dicomImage canvas');
    if (!c || !c.width || !c.height) { return false; }
    const d = c.getContext('2d').getImageData((c.width >> 1) - 16, (c.height >> 1) - 16, 32, 32).data;
    for (let i = 0; i < d.length; i += 4) { if (d[i] || d[i + 1] || d[i + 2]) { resolve(performance.now()); return true; } }
    return false; };
  if (!done()) { const timer = setInterval(() => { if (done()) { clearInterval(timer); } }, 5); }
})"""

# Its window drag is a jQuery mousemove handler on the document calling cornerstone.setViewport;
# cornerstone 0.11 announces each redraw with a jQuery event on the element.
THEIR_WATCH_DRAG = """() => { const el = document.getElementById('dicomImage'); window.__wl = {preview: []};
  window.addEventListener('pointermove', (e) => { if (e.buttons & 1) { window.__wl.last = {t0: performance.now()}; } }, true);
  $(el).on('CornerstoneImageRendered', () => { const l = window.__wl.last;
    if (l && !l.seen) { l.seen = true; window.__wl.preview.push(performance.now() - l.t0); } }); }"""

WEBVIEWER_PLUGIN = "/usr/share/orthanc/plugins/libOrthancWebViewer.so"


class TheirViewer:
    """Orthanc with its web viewer plugin, on loopback without authentication."""
    name = "Orthanc web viewer"

    def __init__(self, workdir: Path):
        from tests.orthanc import Orthanc

        self.orthanc = Orthanc(workdir, extra={
            "Plugins": [WEBVIEWER_PLUGIN],
            "WebViewer": {"CachePath": str(workdir / "webviewer-cache")}})

    def start(self) -> "TheirViewer":
        self.orthanc.start()
        self.url, self.ae_title, self.port = self.orthanc.url, self.orthanc.ae_title, self.orthanc.dicom_port
        return self

    def viewer_url(self) -> str:
        series = self.orthanc.get("/series")
        if len(series) != 1:
            raise RuntimeError(f"Orthanc holds {len(series)} series, expected the one run")
        return self.url + f"/web-viewer/app/viewer.html?series={series[0]}"

    def version(self) -> str:
        system = self.orthanc.get("/system").get("Version", "?")
        plugin = self.orthanc.get("/plugins/web-viewer").get("Version", "?")
        return f"Orthanc {system} + Web Viewer plugin {plugin}"

    def stop(self) -> None:
        self.orthanc.stop()


def webviewer_available() -> bool:
    from tests.orthanc import orthanc_available

    return orthanc_available() and Path(WEBVIEWER_PLUGIN).exists()


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
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds per viewer and link (default {FULL.rounds}, "
                        f"--quick {QUICK.rounds})")
    parser.add_argument("--seconds", type=float, default=None, help="cine seconds counted per round")
    parser.add_argument("--frames", type=int, default=None, help="frames of the 512x512 run")
    return parser


def new_page(browser):
    """A fresh context (nothing cached), its page, and a CDP session on it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(60000)
    return context, page, context.new_cdp_session(page)


def emulate(cdp, link: dict | None) -> None:
    """The HTTP cache off and, for the slow link, Chromium's throttling from here on."""
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    if link:
        cdp.send("Network.emulateNetworkConditions", link)


def their_round(browser, url: str, link: dict | None) -> dict:
    context, page, cdp = new_page(browser)
    try:
        emulate(cdp, link)
        page.goto(url, wait_until="commit")
        first = page.evaluate(THEIR_FIRST_IMAGE)
        # Its mouse handlers are bound once the first image is shown, i.e. by now.
        page.evaluate(THEIR_WATCH_DRAG)
        box = page.locator("#dicomImage").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for k in range(3):
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 30 * (1 if k % 2 else -1), cy + 10 * (k - 1), steps=4)
            page.mouse.up()
            # Every drag redraws at least once; a drag without a redraw is a broken peer, not a figure.
            page.wait_for_function(f"() => window.__wl.preview.length >= {k + 1}", timeout=15000)
        wl = page.evaluate("() => window.__wl")
        return {"first": first, "preview": max(wl["preview"])}
    finally:
        context.close()


def one_round(browser, server, url: str, user: str, password: str, link: dict | None, seconds: float) -> dict:
    from tests.browser import sign_in

    context, page, cdp = new_page(browser)
    try:
        sign_in(page, server, user, password)
        emulate(cdp, link)
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

    peer = webviewer_available()
    if not peer:
        print("[viewer] Orthanc or its web viewer plugin (orthanc-webviewer) not installed: "
              "measuring ours alone", file=sys.stderr)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="viewer-", dir=WORK))
    ours = theirs = None
    targets = [OURS, THEIRS] if peer else [OURS]
    results: dict[tuple[str, str], list[dict]] = {(t, name): [] for t in targets for name in LINKS}
    versions = [our_version()]
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        run = dsa_runs.bolus_run(frames=frames, size=512, peak=frames // 2, spread=frames / 8, noise=25)
        dsa_runs.write(run, corpus / "run.dcm")
        ours = Ours(tmp / "ours").start()
        store(ours.ae_title, ours.port, corpus)
        url = {OURS: ours.url + f"/viewer?study={run.StudyInstanceUID}"}
        if peer:
            theirs = TheirViewer(tmp / "orthanc").start()
            store(theirs.ae_title, theirs.port, corpus)
            url[THEIRS] = theirs.viewer_url()
            versions.append(theirs.version())
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
            def measure(target: str, name: str) -> dict:
                if target == OURS:
                    return one_round(browser, ours.server, url[OURS], USER, PASSWORD, LINKS[name], seconds)
                return their_round(browser, url[THEIRS], LINKS[name])

            try:
                # One untimed round per viewer first: each server decodes the run once and keeps
                # what it keeps (our renders, the plugin's image cache), so that the first timed
                # round is not the only one paying for a cold server.
                for target in targets:
                    measure(target, "LAN")
                for r in range(rounds):
                    for target, name in rotated(list(results), r):
                        got = measure(target, name)
                        results[target, name].append(got)
                        print(f"[viewer] round {r + 1} {target}, {name}: {got}", file=sys.stderr, flush=True)
            finally:
                browser.close()
    finally:
        for server in (ours, theirs):
            if server is not None:
                server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(report(results, targets, rounds, frames, seconds, args.quick))
    print_versions("viewer", versions)
    return 0


OURS, THEIRS = "DSM PACS", TheirViewer.name


def report(results: dict, targets: list[str], rounds: int, frames: int, seconds: float, quick: bool) -> str:
    """The table: per measure, ours, Orthanc's viewer and Orthanc's time over ours, per link."""
    def values(target: str, name: str, key: str) -> list[float]:
        return [r[key] for r in results.get((target, name), []) if key in r]

    def times(key: str, fmt: str, unit: str, why: str = "") -> list[list[str]]:
        rows = [["", OURS, *[spread(values(OURS, n, key), fmt, unit) for n in LINKS]]]
        if THEIRS in targets:
            theirs = [values(THEIRS, n, key) for n in LINKS]
            rows.append(["", THEIRS, *[spread(v, fmt, unit) if v else f"n/a{why}" for v in theirs]])
            rows.append(["", "Orthanc / ours", *[ratio_cell(v, values(OURS, n, key)) if v else "n/a"
                                                 for v, n in zip(theirs, LINKS)]])
        return rows

    def measure(title: str, rows: list[list[str]]) -> list[list[str]]:
        rows[0][0] = title
        return rows

    rows = [
        *measure("time to first image", times("first", "{:.0f}", " ms")),
        *measure("window/level: in-browser update (slowest step)", times("preview", "{:.1f}", " ms")),
        *measure("window/level: exact server render on screen",
                 times("exact", "{:.0f}", " ms", " (renders in the browser only)")),
    ]
    cine = [["", OURS, *[spread(values(OURS, n, "fps"), "{:.1f}", " fps") for n in LINKS]]]
    if THEIRS in targets:
        # Frames per second: more is better, so the ratio is ours over theirs; it has none.
        cine.append(["", THEIRS, *["n/a (no play control)" for _ in LINKS]])
    rows += measure(f"cine over {seconds:g} s (file: 15 fps)", cine)
    lines = [f"\nViewer{' (--quick)' if quick else ''}, headless Chromium, {rounds} round(s) per viewer and link, "
             f"one XA run 512x512x{frames} at 15 fps",
             table(["measure", "viewer", *LINKS], rows),
             "  cells: median (min–max) over the rounds. Whole-browser timings on a shared machine."]
    if THEIRS in targets:
        lines.append(
            "  Orthanc / ours: Orthanc's time over ours, round i against round i (above 1.0x we are faster).\n"
            "  Orthanc web viewer: first image = first non-black pixels mid-canvas; window/level = pointer\n"
            "  move to cornerstone's CornerstoneImageRendered (its only update: it windows in the browser,\n"
            "  on 8-bit JPEG by default); no cine (2.8 has a slider and the wheel, no play). It is opened\n"
            "  without a login, ours after an untimed sign-in.")
    else:
        lines.append("  No peer viewer measured (orthanc-webviewer not installed): this archive's figures alone.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
