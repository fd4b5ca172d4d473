/* One viewport: a series of a study shown on a stage. Frames are rendered on the
 * server (window, mask, format); zoom, pan, rotation, flips and inversion are
 * CSS on the <img>, so they cost no request. Other modules build on the public
 * interface described in docs/viewer.md ("Viewer modules"): events vp:frame,
 * vp:transform, vp:series and vp:window on vp.el; tools; renderParams; format;
 * windowPreview; vp.layer; clientToImage / imageToClient. DICOM text goes in
 * with textContent only. */
import { base, enc, emit, getJSON, t } from "./util.js";

const PREFETCH = 12;           // frames requested ahead while cine plays
const TIMER_SLACK_MS = 20;     // how late a browser timer may fire under load
const CACHE_LIMIT = 160;       // Image objects kept per viewport

export class Viewport {
  constructor(section, host) {
    this.el = section;
    this.host = host;          // main.js: linked scrolling, the active viewport
    this.study = section.getAttribute("data-study");
    this.img = this.q("[data-image]");
    this.stage = this.q("[data-stage]");
    this.layer = this.q("[data-layer]");
    this.slider = this.q("[data-frame-slider]");
    this.indexOut = this.q("[data-frame-index]");
    this.playBtn = this.q("[data-action=play]");
    this.presets = this.q("[data-presets]");
    this.windowOut = this.q("[data-window]");
    this.fpsOut = this.q("[data-fps]");
    this.dsa = this.q("[data-dsa]");
    this.subtractBox = this.q("[data-subtract]");
    this.maskInput = this.q("[data-mask]");
    this.message = this.q("[data-message]");
    this.series = null;
    this.images = [];          // [{sop, frame, frames}] of the current series
    this.index = 0;
    this.infos = {};           // "sop|" or "sop|frame|mask" -> instance info JSON
    this.window = null;        // explicit {center, width}; null = the server's default
    this.shownWindow = null;   // the window of the frame on screen (for dragging)
    this.zoom = 1; this.panX = 0; this.panY = 0;
    this.rotation = 0;         // degrees clockwise, a multiple of 90
    this.flipH = false; this.flipV = false; this.inverted = false;
    this.timer = null;
    this.cache = new Map();
    this.loading = null; this.dirty = false;
    this.remembered = new Map();  // series UID -> {subtract, mask, window, index}
    // Hooks for feature modules (see the contract in docs/viewer.md).
    this.renderParams = [];    // functions (vp, image) -> ["k=v", ...]
    this.format = () => "png"; // (vp) -> "png" | "jpeg" | "webp"
    this.windowPreview = () => {};  // (fromWindow, toWindow) during a window drag
    this.tools = {};
    this.tool = "window";
    this.registerBuiltinTools();
    this.bindControls();
  }

  q(sel) { return this.el.querySelector(sel); }

  bindControls() {
    this.slider.addEventListener("input", () => this.go(parseInt(this.slider.value, 10), true));
    this.playBtn.addEventListener("click", () => this.togglePlay());
    this.presets.addEventListener("change", () => this.applyPreset(this.presets.value));
    this.subtractBox.addEventListener("change", () => this.windowChanged(null));
    this.maskInput.addEventListener("change", () => { if (this.subtractBox.checked) { this.windowChanged(null); } });
    this.el.querySelectorAll("[data-tool]").forEach((b) => {
      b.addEventListener("click", () => this.setTool(b.getAttribute("data-tool")));
    });
    const action = (name, fn) => { const b = this.q("[data-action=" + name + "]"); if (b) { b.addEventListener("click", fn); } };
    action("zoom-in", () => this.setZoom(this.zoom * 1.25));
    action("zoom-out", () => this.setZoom(this.zoom / 1.25));
    action("reset", () => this.reset());
    // The stage changes size with the layout, the window and full screen.
    if (window.ResizeObserver) { new ResizeObserver(() => this.transform()).observe(this.stage); }
    this.img.addEventListener("load", () => this.transform());
  }

  /* ---- series and images ---- */

  load(data, wantedSeries) {
    this.data = data;
    const first = data.series.find((s) => s.uid === wantedSeries) || data.series.find((s) => s.frames > 0);
    if (first) { return this.selectSeries(first); }
    this.say(t("js.viewer.no_images"));
    return Promise.resolve();
  }

  say(text) {
    this.message.textContent = text || "";
    this.message.hidden = !text;
  }

  /* Keep what the reader set on the series being left, to restore it on return. */
  remember() {
    if (!this.series) { return; }
    this.remembered.set(this.series.uid, {
      subtract: this.subtractBox.checked, mask: this.maskInput.value,
      window: this.window, index: this.index,
    });
  }

  selectSeries(series, study) {
    this.pause();
    this.remember();
    if (study && study !== this.study) { this.study = study; this.el.setAttribute("data-study", study); }
    this.series = series;
    this.el.setAttribute("data-series", series.uid);
    this.images = [];
    series.instances.forEach((inst) => {
      for (let f = 0; f < inst.frames; f++) { this.images.push({ sop: inst.uid, frame: f, frames: inst.frames }); }
    });
    this.cache.clear();
    const kept = this.remembered.get(series.uid);
    this.window = kept ? kept.window : null;
    this.subtractBox.checked = !!(kept && kept.subtract && series.subtraction);
    this.maskInput.value = kept ? kept.mask : "1";
    this.dsa.hidden = !series.subtraction;
    this.slider.max = String(Math.max(0, this.images.length - 1));
    emit(this, "vp:series");
    if (!this.images.length) { this.say(t("js.viewer.no_images")); return Promise.resolve(); }
    this.say("");
    const run = this.images.length > 1 && series.instances.length === 1;
    const middle = run ? 0 : Math.floor(this.images.length / 2);
    this.index = kept ? kept.index : middle;
    return this.instanceInfo(this.images[this.index].sop).then((info) => {
      // Another series chosen before this one's info arrived: that choice stands (its
      // frame must not become this run's peak frame).
      if (this.series !== series) { return; }
      // A run opens on its frame of peak contrast when the server knows it.
      if (!kept && run && info && Number.isInteger(info.peak_frame)) { this.index = info.peak_frame; }
      this.go(this.index, false);
      if (this.window) { this.setShownWindow(this.window); }
      else if (this.subtractBox.checked) { this.windowChanged(null); }
    });
  }

  info(sop) { return this.infos[(sop || (this.current() || {}).sop) + "|"]; }

  instanceInfo(sop, frame, mask) {
    const key = sop + "|" + (mask === undefined ? "" : frame + "|" + mask);
    if (this.infos[key]) { return Promise.resolve(this.infos[key]); }
    let url = base + "/viewer/info/" + enc(this.study) + "/" + enc(this.series.uid) + "/" + enc(sop) + ".json";
    if (mask !== undefined) { url += "?frame=" + frame + "&mask=" + mask; }
    return getJSON(url).then((info) => {
      this.infos[key] = info;
      if (mask === undefined) { this.showInfo(info); }
      return info;
    });
  }

  showInfo(info) {
    this.fps = info.frame_rate || 15;
    this.fpsOut.textContent = info.frames > 1 ? t("js.viewer.fps", { fps: Math.round(this.fps * 10) / 10 }) : "";
    this.presets.textContent = "";
    const def = document.createElement("option");
    def.value = ""; def.textContent = t("js.viewer.preset_default");
    this.presets.appendChild(def);
    (info.presets || []).forEach((p, i) => {
      const o = document.createElement("option");
      o.value = String(i);
      o.textContent = (p.name ? p.name + " " : "") + "C " + p.center + " / W " + p.width;
      this.presets.appendChild(o);
    });
    this.presets.hidden = !info.grey;
    this.maskInput.max = String(info.frames || 1);
    if (info.window && !this.window) { this.setShownWindow(info.window); }
    emit(this, "vp:info");
  }

  applyPreset(value) {
    const info = this.info();
    const preset = info && info.presets && info.presets[parseInt(value, 10)];
    this.presets.value = preset ? String(value) : "";
    this.windowChanged(preset ? { center: preset.center, width: preset.width } : null);
  }

  current() { return this.images[this.index]; }

  maskFrame(image) {
    if (!this.subtractBox.checked || !this.series || !this.series.subtraction) { return null; }
    let m = parseInt(this.maskInput.value, 10);
    if (isNaN(m)) { m = 1; }
    return Math.min(Math.max(m, 1), image.frames) - 1;
  }

  setSubtraction(on) {
    if (!this.series || !this.series.subtraction) { return; }
    this.subtractBox.checked = on;
    this.windowChanged(null);
  }

  setMask(frameNumber) {
    this.maskInput.value = String(frameNumber);
    if (this.subtractBox.checked) { this.windowChanged(null); }
  }

  url(i) {
    const image = this.images[i];
    const params = [];
    if (this.window) { params.push("wc=" + this.window.center, "ww=" + this.window.width); }
    const mask = this.maskFrame(image);
    if (mask !== null) { params.push("mask=" + mask); }
    this.renderParams.forEach((fn) => { params.push(...(fn(this, image) || [])); });
    return base + "/render/" + enc(this.study) + "/" + enc(this.series.uid) + "/" + enc(image.sop) + "/" +
      image.frame + "." + (this.format(this) || "png") + (params.length ? "?" + params.join("&") : "");
  }

  fetchImage(i) {
    const url = this.url(i);
    let img = this.cache.get(url);
    if (!img) {
      img = new Image();
      img.decoding = "async";
      img.src = url;
      this.cache.set(url, img);
      if (this.cache.size > CACHE_LIMIT) { this.cache.delete(this.cache.keys().next().value); }
    }
    return img;
  }

  /* Show image i; ``user`` is true when the user moved (then linked viewports follow). */
  go(i, user) {
    if (!this.images.length) { return; }
    i = Math.min(Math.max(i, 0), this.images.length - 1);
    const previous = this.current();
    this.index = i;
    this.slider.value = String(i);
    this.indexOut.textContent = (i + 1) + " / " + this.images.length;
    this.el.setAttribute("data-index", String(i));
    if (previous && previous.sop !== this.images[i].sop) { this.instanceInfo(this.images[i].sop); }
    this.draw();
    emit(this, "vp:frame");
    if (user && this.host) { this.host.moved(this, i); }
  }

  step(delta) { this.go(this.index + delta, true); }

  /* Re-render the current frame after a render parameter changed (feature modules). */
  refresh() { this.cache.clear(); this.draw(); }

  draw() {
    if (this.loading) { this.dirty = true; return; }
    if (!this.images.length) { return; }
    const url = this.url(this.index);
    const img = this.fetchImage(this.index);
    const finish = (ok) => {
      this.loading = null;
      if (ok) {
        this.img.src = url;
        this.img.setAttribute("data-src", url);
        this.say("");
      } else {
        this.cache.delete(url);
        this.say(t("js.viewer.render_failed"));
      }
      if (this.dirty) { this.dirty = false; this.draw(); }
    };
    if (img.complete && img.naturalWidth) { finish(true); return; }
    // A prefetched frame that already failed fires no more events: say so now.
    if (img.complete) { finish(false); return; }
    this.loading = url;
    img.addEventListener("load", () => finish(true), { once: true });
    img.addEventListener("error", () => finish(false), { once: true });
  }

  /* ---- window ---- */

  setShownWindow(w) {
    this.shownWindow = { center: w.center, width: w.width };
    this.windowOut.textContent = "C " + Math.round(w.center) + " / W " + Math.round(w.width);
    this.el.setAttribute("data-window", Math.round(w.center) + "/" + Math.round(w.width));
    emit(this, "vp:window");
  }

  windowChanged(w) {
    this.window = w;
    this.cache.clear();
    if (w) { this.setShownWindow(w); this.draw(); return; }
    const image = this.current();
    if (!image) { return; }
    const mask = this.maskFrame(image);
    const series = this.series;
    this.instanceInfo(image.sop, image.frame, mask === null ? undefined : mask).then((info) => {
      if (this.series === series && info.window && !this.window) { this.setShownWindow(info.window); }
    });
    this.draw();
  }

  /* ---- tools (mouse and pen; touch gestures are in input.js) ---- */

  registerTool(name, tool) { this.tools[name] = tool; }

  setTool(name) {
    if (!this.tools[name]) { return; }
    if (this.tools[this.tool] && this.tools[this.tool].cancel) { this.tools[this.tool].cancel(); }
    this.tool = name;
    this.el.setAttribute("data-tool", name);
    this.el.querySelectorAll("[data-tool]").forEach((b) => {
      b.setAttribute("aria-pressed", b.getAttribute("data-tool") === name ? "true" : "false");
    });
  }

  /* Window drag from a start window: right wider (less contrast), down a higher
   * centre (darker), scaled to the window. dx, dy in CSS pixels. */
  dragWindow(from, dx, dy) {
    const step = Math.max(from.width / 256, 0.05);
    const width = Math.max(1, from.width + dx * step * 2);
    const center = from.center + dy * step;
    const to = { center: Math.round(center * 100) / 100, width: Math.round(width * 100) / 100 };
    this.windowPreview(from, to);
    this.windowChanged(to);
  }

  registerBuiltinTools() {
    let drag = null;
    const client = (pt) => this.imageToClient(pt.x, pt.y);
    this.registerTool("window", {
      down: (pt, e) => { drag = { x: e.clientX, y: e.clientY, window: this.shownWindow && { ...this.shownWindow } }; },
      move: (pt, e) => { if (drag && drag.window) { this.dragWindow(drag.window, e.clientX - drag.x, e.clientY - drag.y); } },
      up: () => { drag = null; },
      cancel: () => { drag = null; },
    });
    this.registerTool("pan", {
      down: (pt, e) => { drag = { x: e.clientX, y: e.clientY, panX: this.panX, panY: this.panY }; },
      move: (pt, e) => { if (drag) { this.setPan(drag.panX + e.clientX - drag.x, drag.panY + e.clientY - drag.y); } },
      up: () => { drag = null; },
      cancel: () => { drag = null; },
    });
    this.registerTool("zoom", {
      // Drag up to zoom in around the point where the drag started.
      down: (pt, e) => { drag = { y: e.clientY, zoom: this.zoom, pt: pt, at: client(pt) }; },
      move: (pt, e) => { if (drag) { this.zoomAt(drag.zoom * Math.pow(1.01, drag.y - e.clientY), drag.at.x, drag.at.y); } },
      up: () => { drag = null; },
      cancel: () => { drag = null; },
    });
  }

  /* ---- geometry ---- */

  size() {
    const info = this.info();
    if (info && info.columns && info.rows) { return { columns: info.columns, rows: info.rows }; }
    return { columns: this.img.naturalWidth || 1, rows: this.img.naturalHeight || 1 };
  }

  /* Scale from image pixels to CSS pixels at zoom 1: object-fit contain, refitted
   * when the image is turned a quarter so that it still fits the stage. */
  fit() {
    const { columns, rows } = this.size();
    const r = this.stage.getBoundingClientRect();
    const contain = Math.min(r.width / columns, r.height / rows);
    const quarter = this.rotation % 180 !== 0;
    return { contain, scale: quarter ? Math.min(r.width / rows, r.height / columns) : contain, rect: r };
  }

  setZoom(z) { this.zoom = Math.min(Math.max(z, 0.2), 16); this.transform(); }

  /* Zoom keeping the client point (cx, cy) over the same image point. */
  zoomAt(z, cx, cy) {
    const pt = this.clientToImage(cx, cy);
    this.zoom = Math.min(Math.max(z, 0.2), 16);
    this.transform(true);
    const moved = this.imageToClient(pt.x, pt.y);
    this.setPan(this.panX + cx - moved.x, this.panY + cy - moved.y);
  }

  setPan(x, y) { this.panX = x; this.panY = y; this.transform(); }

  rotate(deg) { this.rotation = ((this.rotation + deg) % 360 + 360) % 360; this.transform(); }
  flip(horizontal) { if (horizontal) { this.flipH = !this.flipH; } else { this.flipV = !this.flipV; } this.transform(); }
  invert() { this.inverted = !this.inverted; this.img.style.filter = this.inverted ? "invert(1)" : ""; this.el.setAttribute("data-inverted", String(this.inverted)); }

  reset() {
    this.zoom = 1; this.panX = 0; this.panY = 0; this.rotation = 0; this.flipH = false; this.flipV = false;
    if (this.inverted) { this.invert(); }
    this.presets.value = "";
    this.transform();
    this.windowChanged(null);
  }

  transform(quiet) {
    const f = this.fit();
    const extra = f.scale / (f.contain || 1);
    // CSSOM, not a style attribute: allowed under the page's Content-Security-Policy.
    this.img.style.transform = "translate(" + this.panX + "px," + this.panY + "px) scale(" + (this.zoom * extra) + ") " +
      "rotate(" + this.rotation + "deg) scale(" + (this.flipH ? -1 : 1) + "," + (this.flipV ? -1 : 1) + ")";
    this.el.setAttribute("data-zoom", String(Math.round(this.zoom * 100) / 100));
    this.el.setAttribute("data-rotation", String(this.rotation));
    this.el.setAttribute("data-flip", (this.flipH ? "h" : "") + (this.flipV ? "v" : ""));
    if (!quiet) { emit(this, "vp:transform"); }
  }

  /* Image pixel (x right, y down; 0..columns, 0..rows) -> client pixel. */
  imageToClient(x, y) {
    const { columns, rows } = this.size();
    const f = this.fit();
    let u = (x - columns / 2) * (this.flipH ? -1 : 1);
    let v = (y - rows / 2) * (this.flipV ? -1 : 1);
    const a = this.rotation * Math.PI / 180;
    const ru = u * Math.cos(a) - v * Math.sin(a);
    const rv = u * Math.sin(a) + v * Math.cos(a);
    const s = f.scale * this.zoom;
    return { x: f.rect.left + f.rect.width / 2 + this.panX + ru * s, y: f.rect.top + f.rect.height / 2 + this.panY + rv * s };
  }

  clientToImage(cx, cy) {
    const { columns, rows } = this.size();
    const f = this.fit();
    const s = f.scale * this.zoom || 1;
    const ru = (cx - f.rect.left - f.rect.width / 2 - this.panX) / s;
    const rv = (cy - f.rect.top - f.rect.height / 2 - this.panY) / s;
    const a = -this.rotation * Math.PI / 180;
    const u = ru * Math.cos(a) - rv * Math.sin(a);
    const v = ru * Math.sin(a) + rv * Math.cos(a);
    return { x: u * (this.flipH ? -1 : 1) + columns / 2, y: v * (this.flipV ? -1 : 1) + rows / 2 };
  }

  /* ---- cine ---- */

  playing() { return this.timer !== null; }
  togglePlay() { if (this.playing()) { this.pause(); } else { this.play(); } }

  play() {
    if (this.images.length < 2 || this.timer) { return; }
    this.playBtn.textContent = t("js.viewer.pause");
    this.playBtn.setAttribute("aria-pressed", "true");
    this.el.setAttribute("data-playing", "true");
    const interval = 1000 / (this.fps || 15);
    // Frames are due on a grid of the run's frame rate. A frame that is not there yet is
    // waited for (never a blank) and shown the moment it arrives; the grid then restarts
    // from it. So a late frame costs its lateness, not a whole tick, as a fixed interval
    // timer would make it (a frame 5 ms late cost 67 ms at 15 fps).
    let due = performance.now() + interval;
    const tick = () => {
      const timer = this.timer;
      const next = (this.index + 1) % this.images.length;
      for (let k = 1; k <= PREFETCH; k++) { this.fetchImage((this.index + k) % this.images.length); }
      const img = this.fetchImage(next);
      const show = () => {
        if (this.timer !== timer) { return; }          // paused (or played anew) meanwhile
        this.go(next, true);
        const now = performance.now();
        // A timer's few ms of lateness stay on the grid; a frame that kept us waiting
        // restarts it, so the frames after it do not come in a burst to catch up.
        due = (now - due > Math.min(TIMER_SLACK_MS, interval / 4) ? now : due) + interval;
        this.timer = window.setTimeout(tick, Math.max(0, due - now));
      };
      // complete without a size is a frame that failed: shown as such, the cine goes on.
      if (img.complete) { show(); } else { img.addEventListener("load", show, { once: true });
                                           img.addEventListener("error", show, { once: true }); }
    };
    this.timer = window.setTimeout(tick, interval);
  }

  pause() {
    if (this.timer) { window.clearTimeout(this.timer); }
    this.timer = null;
    this.playBtn.textContent = t("js.viewer.play");
    this.playBtn.setAttribute("aria-pressed", "false");
    this.el.setAttribute("data-playing", "false");
  }
}
