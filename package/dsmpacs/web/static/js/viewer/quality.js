/* quality.js: what the server is asked to encode, and an instant window preview.
 *
 * Format. A still frame is always lossless PNG ("Diagnostic quality" is shown
 * when the frame on screen is a full-size PNG). While frames move (cine, frame
 * scrolling, a window drag, and until 300 ms after the last change) a phone or a
 * link too slow for lossless frames at the run's frame rate (PNG bytes x fps over
 * 60 % of the measured bandwidth) gets JPEG instead, whose quality follows the
 * measured bandwidth. JPEG rather than WebP: the server encodes JPEG in a few ms
 * where WebP takes ten times as long, which a cine at 15 fps cannot afford. Bandwidth comes from the Resource Timing entries of
 * the frames received (bytes over the time the link was busy with them), so it
 * measures this server, not a generic estimate. On a LAN everything stays PNG.
 *
 * Window preview. During a window drag each step would be a round trip; instead
 * the image on screen (rendered with window A) is mapped at once to the new
 * window B with an SVG feComponentTransfer linear filter, applied as CSS
 * filter: url(#id). The VOI function is linear, so grey_B = slope * grey_A +
 * intercept with slope = (wA - 1) / (wB - 1) and intercept = (lowA - lowB) /
 * (wB - 1): exact wherever A did not clip. When the server's render with B
 * arrives the filter is dropped (or re-aimed at a window dragged further). */
import { t } from "./util.js";

const IDLE_MS = 300;              // a frame left alone this long is asked for losslessly
const LEVELS = [30, 45, 60, 75, 85];
const WINDOW_MS = 4000;           // bandwidth is measured over the frames of the last 4 s
const MIN_BYTES = 150000;
const STICKY_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";
let counter = 0;

export const keys = [];

/* ---- link measurement (shared by all viewports: one link to the server) ---- */

// A download's time on the link is its first-to-last-byte time: the round trip and
// the server's render come before the first byte and are not bandwidth. Chromium's
// network emulation, though, adds its latency after the first byte; so the time is
// also bounded by request-to-last-byte less the floor, the shortest such time of a
// small answer (a few KB): the round trip plus the server's least answer time.
const link = { samples: [], bps: null, pngBytes: 0, floor: null, observing: false };
const SMALL = 8192;

function observe() {
  if (link.observing || !window.PerformanceObserver) { return; }
  link.observing = true;
  const seen = (list) => {
    list.getEntries().forEach((e) => {
      // transferSize 0: from the browser's cache, which says nothing about the link.
      if (e.transferSize && e.encodedBodySize && e.encodedBodySize < SMALL && e.requestStart > 0) {
        const d = e.responseEnd - e.requestStart;
        link.floor = link.floor === null ? d : Math.min(link.floor, d);
      }
      if (e.name.indexOf("/render/") < 0 || !e.encodedBodySize || !e.transferSize || e.responseEnd <= 0) { return; }
      const q = /\.jpeg\?(?:.*&)?q=(\d+)/.exec(e.name);
      link.samples.push({ start: e.requestStart || e.startTime, first: e.responseStart || e.startTime,
                          end: e.responseEnd, bytes: e.encodedBodySize,
                          q: q ? parseInt(q[1], 10) : null, png: /\.png(\?|$)/.test(e.name) && !/[?&]size=/.test(e.name) });
    });
    const now = performance.now();
    link.samples = link.samples.filter((s) => s.end > now - WINDOW_MS);
    link.bps = estimate(link.samples);
    // Entries are also buffered; clearing keeps a long cine from filling the buffer.
    if (performance.clearResourceTimings) { performance.clearResourceTimings(); }
  };
  try { new PerformanceObserver(seen).observe({ type: "resource", buffered: true }); } catch (e) { link.observing = false; }
}

/* Bytes over busy time: the union of the downloads' times on the link (see above),
 * so parallel prefetches
 * count once and idle gaps between them not at all. Null until enough bytes were
 * seen: a few small images say more about latency than about bandwidth. */
function estimate(samples) {
  if (samples.reduce((a, s) => a + s.bytes, 0) < MIN_BYTES) { return null; }
  const floor = link.floor || 0;
  const sorted = samples.map((s) => {
    const onLink = Math.max(1, Math.min(s.end - s.first, s.end - s.start - floor));
    return { start: s.end - onLink, end: s.end, bytes: s.bytes };
  })
    .sort((a, b) => a.start - b.start);
  let busy = 0, bytes = 0, from = sorted[0].start, to = sorted[0].end;
  sorted.forEach((s) => {
    bytes += s.bytes;
    if (s.start > to) { busy += to - from; from = s.start; to = s.end; } else { to = Math.max(to, s.end); }
  });
  busy += to - from;
  return busy > 0 ? bytes * 8 / (busy / 1000) : null;
}

function phone() {
  const coarse = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  return coarse && Math.min(window.screen.width, window.screen.height) < 600;
}

/* Would lossless frames at this frame rate take more than 60 % of the measured link?
 * Judged on the sizes of the PNG frames actually received, so small images stay
 * lossless whatever the link, and big ones go lossy only where they must. */
function slow(fps) {
  const pngs = link.samples.filter((s) => s.png);
  if (pngs.length) { link.pngBytes = pngs.reduce((a, s) => a + s.bytes, 0) / pngs.length; }
  let bps = link.bps;
  const c = navigator.connection;
  if (bps === null && c && c.downlink) { bps = c.downlink * 1e6; }
  if (bps === null || !link.pngBytes) { return false; }
  return link.pngBytes * 8 * fps > 0.6 * bps;
}

/* ---- per viewport ---- */

class Quality {
  constructor(vp) {
    this.vp = vp;
    this.moving = false;
    this.idleTimer = null;
    this.level = 3;                  // index into LEVELS
    this.adjusted = 0;
    this.wanted = null;              // window the user wants (preview target)
    this.shown = null;               // window of the image on screen
    this.sticky = new WeakMap();     // image -> {q, t}: the quality a frame was asked with
  }

  lossy() { return this.moving && (phone() || slow(this.vp.fps || 15)); }

  /* Cine playing or a change under way: lossy (if the link needs it) until idle. */
  touch() {
    this.moving = true;
    window.clearTimeout(this.idleTimer);
    this.idleTimer = window.setTimeout(() => this.idle(), IDLE_MS);
  }

  idle() {
    if (this.vp.playing()) { this.idleTimer = window.setTimeout(() => this.idle(), IDLE_MS); return; }
    const wasLossy = this.lossy();
    this.moving = false;
    if (wasLossy) { this.vp.draw(); }   // the same frame again, now lossless
  }

  /* Quality for the bandwidth: frame bytes x frame rate within about 70 % of the
   * link. Re-judged at most every 1.5 s, in coarse steps. */
  quality() {
    const now = performance.now();
    if (link.bps && now - this.adjusted > 1500) {
      const fps = this.vp.fps || 15;
      const jpegs = link.samples.filter((s) => s.q === LEVELS[this.level]);
      const mean = jpegs.length ? jpegs.reduce((a, s) => a + s.bytes, 0) / jpegs.length : 0;
      const need = mean * 8 * fps;
      if (mean) {
        if (need > 0.7 * link.bps && this.level > 0) { this.level -= 1; this.adjusted = now; }
        else if (need < 0.3 * link.bps && this.level < LEVELS.length - 1) { this.level += 1; this.adjusted = now; }
      }
    }
    return LEVELS[this.level];
  }

  format() {
    const format = this.lossy() ? "jpeg" : "png";
    if (link.bps) { this.vp.el.setAttribute("data-bandwidth", (link.bps / 1e6).toFixed(1)); }   // Mbit/s, for diagnosis
    if (format === "jpeg" && this.lastFormat === "png") { this.dropPending(); }
    this.lastFormat = format;
    return format;
  }

  /* Going lossy because the link is slow: PNG frames still on their way (fetched
   * ahead) would hold the link for seconds; stop them (a new src aborts a load). */
  dropPending() {
    const cache = this.vp.cache;
    if (!cache) { return; }
    Array.from(cache.entries()).forEach(([url, img]) => {
      // Not the one the viewport waits for: its error event would read as a failed render.
      if (!img.complete && /\.png(\?|$)/.test(url) && url !== this.vp.loading) { img.src = ""; cache.delete(url); }
    });
  }

  /* ---- the on-screen image and the diagnostic-quality label ---- */

  loaded() {
    const vp = this.vp;
    if (!vp.window) { this.wanted = null; }
    const src = vp.img.getAttribute("data-src") || vp.img.src || "";
    const lossless = /\.png(\?|$)/.test(src.split("#")[0]) && !/[?&]size=/.test(src);
    vp.el.setAttribute("data-quality", lossless ? "lossless" : "lossy");
    const m = /[?&]q=(\d+)/.exec(src);
    this.label.textContent = lossless ? t("js.viewer.diagnostic") : t("js.viewer.lossy", { q: m ? m[1] : "" });
    this.label.classList.toggle("diagnostic", lossless);
    const wc = /[?&]wc=([-0-9.e]+)/.exec(src), ww = /[?&]ww=([-0-9.e]+)/.exec(src);
    this.shown = wc && ww ? { center: parseFloat(wc[1]), width: parseFloat(ww[1]) } : this.defaultWindow();
    this.applyFilter();
  }

  defaultWindow() {
    const w = this.vp.shownWindow;
    return this.vp.window === null && w ? { center: w.center, width: w.width } : null;
  }

  /* ---- window preview ---- */

  buildFilter() {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("width", "0"); svg.setAttribute("height", "0");
    svg.setAttribute("aria-hidden", "true");
    svg.classList.add("preview-filter");
    const filter = document.createElementNS(SVG_NS, "filter");
    this.filterId = "dsm-window-preview-" + (++counter);
    filter.setAttribute("id", this.filterId);
    // The image's grey levels are sRGB values; filter them as they are, not linearised.
    filter.setAttribute("color-interpolation-filters", "sRGB");
    const transfer = document.createElementNS(SVG_NS, "feComponentTransfer");
    this.funcs = ["feFuncR", "feFuncG", "feFuncB"].map((name) => {
      const f = document.createElementNS(SVG_NS, name);
      f.setAttribute("type", "linear");
      transfer.appendChild(f);
      return f;
    });
    filter.appendChild(transfer);
    svg.appendChild(filter);
    this.vp.stage.appendChild(svg);
  }

  preview(from, to) {
    this.wanted = { center: to.center, width: to.width };
    if (!this.shown && from) { this.shown = { center: from.center, width: from.width }; }
    this.applyFilter();
  }

  applyFilter() {
    const vp = this.vp, a = this.shown, b = this.wanted;
    let filter = "";
    if (a && b && (a.center !== b.center || a.width !== b.width)) {
      const wa = Math.max(a.width, 1), wb = Math.max(b.width, 1);
      const lowA = a.center - 0.5 - (wa - 1) / 2, lowB = b.center - 0.5 - (wb - 1) / 2;
      let slope = (wa - 1) / Math.max(wb - 1, 1e-6);
      let intercept = (lowA - lowB) / Math.max(wb - 1, 1e-6);
      const info = vp.info();
      if (info && info.photometric === "MONOCHROME1" && !vp.subtractBox.checked) {
        // The server inverted: shown = 1 - grey. Map 1 - gA to 1 - gB.
        intercept = 1 - slope - intercept;
      }
      this.funcs.forEach((f) => { f.setAttribute("slope", String(slope)); f.setAttribute("intercept", String(intercept)); });
      filter = "url(#" + this.filterId + ")";
      vp.el.setAttribute("data-preview", Math.round(b.center) + "/" + Math.round(b.width));
    } else {
      vp.el.removeAttribute("data-preview");
    }
    // Keep the viewport's own inversion, which is also a CSS filter.
    vp.img.style.filter = [filter, vp.inverted ? "invert(1)" : ""].filter(Boolean).join(" ");
  }
}

export function attach(vp) {
  observe();
  const q = new Quality(vp);
  vp.quality = q;
  q.buildFilter();
  q.label = document.createElement("output");
  q.label.className = "hint quality";
  q.label.setAttribute("data-quality-label", "");
  const toolbar = vp.q("[role=toolbar]") || vp.el;
  toolbar.appendChild(q.label);

  vp.format = () => q.format();
  // url() calls renderParams before format(): decide the format here, format() agrees.
  // A frame keeps the quality it was first asked with for a few seconds, so that a
  // quality step does not throw away the frames already fetched ahead for the cine.
  vp.renderParams.push((v, image) => {
    if (q.format() !== "jpeg") { return []; }
    const now = performance.now();
    let kept = q.sticky.get(image);
    if (!kept || now - kept.t > STICKY_MS) { kept = { q: q.quality(), t: now }; q.sticky.set(image, kept); }
    return ["q=" + kept.q];
  });
  vp.windowPreview = (from, to) => { q.touch(); q.preview(from, to); };
  vp.img.addEventListener("load", () => q.loaded());
  vp.el.addEventListener("vp:frame", () => q.touch());
  vp.el.addEventListener("vp:window", () => { if (!vp.window) { q.wanted = null; } });
  vp.el.addEventListener("vp:series", () => { q.wanted = null; q.shown = null; });
}
