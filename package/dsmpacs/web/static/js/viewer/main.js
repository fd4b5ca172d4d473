/* DSM PACS viewer boot: the viewports and their layout (1x1, 1x2, 2x2, full
 * screen), the series strip (click loads into the active viewport, or drag a
 * thumbnail onto a viewport), linked scrolling in compare mode, and the one
 * keyboard dispatcher. Keys are handled at the window in the capture phase so
 * that they work wherever focus is (after a toolbar click too); only text
 * fields keep their keys. They act on the active viewport (click selects).
 * Feature modules (overlay, measure, dsa, quality) get attach(viewport) for
 * every viewport and may list keys of their own. */
import { Viewport } from "./viewport.js";
import { bindInput } from "./input.js";
import { base, enc, getJSON, root, t } from "./util.js";
import * as overlay from "./overlay.js";
import * as measure from "./measure.js";
import * as dsa from "./dsa.js";
import * as quality from "./quality.js";

const features = [overlay, measure, dsa, quality];
const LAYOUTS = { "1x1": 1, "1x2": 2, "2x2": 4 };
const DRAG_TYPE = "application/x-dsm-series";

if (root) { boot(); }

function boot() {
  const wantedSeries = root.getAttribute("data-series") || "";
  const linkBox = root.querySelector("[data-link]");
  const grid = root.querySelector("[data-viewports]");
  const strip = root.querySelector("[data-series-strip]");
  const sections = Array.from(root.querySelectorAll("[data-viewport]"));
  const studyUids = sections.map((s) => s.getAttribute("data-study"));
  // A clean copy of a viewport's markup, cloned when a layout needs more cells.
  const pristine = sections[0].cloneNode(true);
  const studies = new Map();     // study UID -> promise of its JSON
  const viewports = [];
  const button = (sel) => root.querySelector(sel);

  const host = {
    viewports: viewports,
    active: null,
    windowMode: false,
    moved(from, i) {
      if (linkBox && linkBox.checked) { visible().forEach((v) => { if (v !== from) { v.go(i, false); } }); }
    },
    activate(vp) {
      if (host.active === vp) { return; }
      host.active = vp;
      viewports.forEach((v) => v.el.classList.toggle("active", v === vp));
      markStrip();
    },
  };

  function visible() { return viewports.filter((v) => !v.el.hidden); }

  function studyData(uid) {
    if (!studies.has(uid)) { studies.set(uid, getJSON(base + "/viewer/studies/" + enc(uid) + ".json")); }
    return studies.get(uid);
  }

  function showSeries(vp, study, series) {
    return studyData(study).then((data) => { vp.data = data; return vp.selectSeries(series, study); });
  }

  function makeViewport(section, cell) {
    const vp = new Viewport(section, host);
    viewports.push(vp);
    bindInput(vp, host);
    section.addEventListener("pointerdown", () => host.activate(vp), true);
    section.addEventListener("vp:series", () => { if (vp === host.active) { markStrip(); } });
    bindDrop(vp);
    features.forEach((m) => m.attach(vp));
    // Extra cells of one study show its next series (cell 2 the second, ...).
    const per = studyUids.length;
    studyData(vp.study).then((data) => {
      const withImages = data.series.filter((s) => s.frames > 0);
      const extra = Math.floor(cell / per);
      if (extra && withImages.length) {
        vp.data = data;
        return vp.selectSeries(withImages[extra % withImages.length]);
      }
      return vp.load(data, wantedSeries);
    }).catch(() => vp.say(t("js.viewer.load_failed")));
    return vp;
  }

  /* ---- layout ---- */
  function setLayout(name) {
    const n = LAYOUTS[name] || 1;
    while (viewports.length < n) {
      const cell = viewports.length;
      const section = pristine.cloneNode(true);
      section.setAttribute("data-study", studyUids[cell % studyUids.length]);
      grid.appendChild(section);
      makeViewport(section, cell);
    }
    viewports.forEach((v, i) => {
      v.el.hidden = i >= n;
      if (v.el.hidden) { v.pause(); }
    });
    root.setAttribute("data-layout", name);
    root.querySelectorAll("[data-layout-choice]").forEach((b) => {
      b.setAttribute("aria-pressed", b.getAttribute("data-layout-choice") === name ? "true" : "false");
    });
    if (!host.active || host.active.el.hidden) { host.activate(viewports[0]); }
  }

  function cycleLayout() {
    const names = Object.keys(LAYOUTS);
    setLayout(names[(names.indexOf(root.getAttribute("data-layout")) + 1) % names.length]);
  }

  /* ---- series strip ---- */
  function buildStrip(list) {
    list.forEach(({ uid, data }) => {
      if (list.length > 1) {
        const li = document.createElement("li");
        const h = document.createElement("h3");
        h.textContent = [data.date, data.description].filter(Boolean).join(" · ");
        li.appendChild(h);
        strip.appendChild(li);
      }
      data.series.filter((s) => s.image !== false).forEach((s) => {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.draggable = true;
        b.setAttribute("data-series", s.uid);
        b.setAttribute("data-study", uid);
        const thumb = document.createElement("img");
        thumb.src = s.thumbnail; thumb.alt = ""; thumb.loading = "lazy"; thumb.width = 56; thumb.height = 56;
        const label = document.createElement("span");
        label.textContent = [s.number === null ? "" : "#" + s.number, s.modality, s.description].join(" ").trim();
        b.title = label.textContent;
        const count = document.createElement("small");
        count.textContent = t("js.viewer.frames", { count: s.frames });
        b.append(thumb, label, count);
        b.addEventListener("click", () => { if (host.active) { showSeries(host.active, uid, s); } });
        b.addEventListener("dragstart", (e) => {
          e.dataTransfer.setData(DRAG_TYPE, uid + " " + s.uid);
          e.dataTransfer.setData("text/plain", s.uid);
          e.dataTransfer.effectAllowed = "copy";
        });
        li.appendChild(b);
        if (s.volume && s.mpr_url) {
          // A series that forms a volume opens in the 3D page (MPR, MIP), in this tab.
          const a = document.createElement("a");
          a.href = s.mpr_url;
          a.className = "strip-3d";
          a.setAttribute("data-action", "mpr");
          a.textContent = t("js.viewer.open_3d");
          li.appendChild(a);
        }
        strip.appendChild(li);
      });
    });
    markStrip();
  }

  function markStrip() {
    const vp = host.active;
    strip.querySelectorAll("button[data-series]").forEach((b) => {
      const shown = vp && vp.series && b.getAttribute("data-series") === vp.series.uid;
      b.setAttribute("aria-current", shown ? "true" : "false");
    });
  }

  function bindDrop(vp) {
    const accepts = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes(DRAG_TYPE);
    vp.el.addEventListener("dragover", (e) => {
      if (!accepts(e)) { return; }
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      vp.el.classList.add("drop-target");
    });
    vp.el.addEventListener("dragleave", () => vp.el.classList.remove("drop-target"));
    vp.el.addEventListener("drop", (e) => {
      vp.el.classList.remove("drop-target");
      if (!accepts(e)) { return; }
      e.preventDefault();
      const [study, seriesUid] = e.dataTransfer.getData(DRAG_TYPE).split(" ");
      host.activate(vp);
      studyData(study).then((data) => {
        const s = data.series.find((x) => x.uid === seriesUid);
        if (s) { showSeries(vp, study, s); }
      });
    });
  }

  /* ---- viewer-wide toggles ---- */
  function toggleOverlay() {
    const off = root.classList.toggle("overlays-off");
    button("[data-action=overlay]").setAttribute("aria-pressed", off ? "false" : "true");
  }

  function toggleWindowMode() {
    host.windowMode = !host.windowMode;
    root.classList.toggle("window-mode", host.windowMode);
    button("[data-action=window-mode]").setAttribute("aria-pressed", String(host.windowMode));
  }

  function toggleFullscreen() {
    if (document.fullscreenElement) { document.exitFullscreen(); return; }
    if (root.requestFullscreen) { root.requestFullscreen().catch(() => {}); }
  }
  document.addEventListener("fullscreenchange", () => {
    const on = document.fullscreenElement === root;
    root.classList.toggle("fullscreen", on);
    button("[data-action=fullscreen]").setAttribute("aria-pressed", String(on));
  });

  /* ---- keyboard ---- */
  const help = root.querySelector("[data-help]");
  const KEYS = [
    { keys: "1 … 9", label: "js.viewer.key_presets", match: (k) => /^[1-9]$/.test(k),
      run: (v, e) => { const info = v.info(); const i = parseInt(e.key, 10) - 1;
        if (info && info.presets && info.presets[i]) { v.applyPreset(String(i)); } } },
    { keys: "0 / Esc", label: "js.viewer.key_reset", match: (k) => k === "0" || k === "Escape", run: (v) => v.reset() },
    { keys: "Space", label: "js.viewer.key_play", match: (k) => k === " ", run: (v) => v.togglePlay() },
    { keys: "← → ↑ ↓", label: "js.viewer.key_step", match: (k) => /^Arrow(Left|Right|Up|Down)$/.test(k),
      run: (v, e) => v.step(e.key === "ArrowRight" || e.key === "ArrowDown" ? 1 : -1) },
    { keys: "I", label: "js.viewer.key_overlay", match: (k) => k === "i", run: () => toggleOverlay() },
    { keys: "N", label: "js.viewer.key_invert", match: (k) => k === "n", run: (v) => v.invert() },
    { keys: "H", label: "js.viewer.key_flip_h", match: (k) => k === "h", run: (v) => v.flip(true) },
    { keys: "V", label: "js.viewer.key_flip_v", match: (k) => k === "v", run: (v) => v.flip(false) },
    { keys: "R", label: "js.viewer.key_rotate", match: (k) => k === "r", run: (v) => v.rotate(90) },
    { keys: "S", label: "js.viewer.key_subtract", match: (k) => k === "s", run: (v) => v.setSubtraction(!v.subtractBox.checked) },
    { keys: "M", label: "js.viewer.key_mask", match: (k) => k === "m",
      run: (v) => { const c = v.current(); if (c) { v.setMask(c.frame + 1); } } },
    { keys: "F", label: "js.viewer.key_fullscreen", match: (k) => k === "f", run: () => toggleFullscreen() },
    { keys: "L", label: "js.viewer.key_layout", match: (k) => k === "l", run: () => cycleLayout() },
    { keys: "?", label: "js.viewer.key_help", match: (k) => k === "?", run: () => toggleHelp() },
  ];
  features.forEach((m) => (m.keys || []).forEach((k) => {
    KEYS.push({ keys: k.key.toUpperCase(), label: k.label, match: (key) => key === k.key.toLowerCase(), run: k.run });
  }));

  function toggleHelp() {
    if (help.open) { help.close(); return; }
    const body = help.querySelector("[data-help-keys]");
    if (!body.children.length) {
      KEYS.forEach((k) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        const kbd = document.createElement("kbd");
        kbd.textContent = k.keys;
        th.appendChild(kbd);
        const td = document.createElement("td");
        td.textContent = t(k.label);
        tr.append(th, td);
        body.appendChild(tr);
      });
    }
    help.showModal();
  }

  function typing(el) {
    if (!el) { return false; }
    if (el.isContentEditable || el.tagName === "TEXTAREA") { return true; }
    // A list inside a form (a measurement's details) keeps its arrows; the
    // toolbar's preset list does not, or the arrows would stop stepping frames.
    if (el.tagName === "SELECT") { return !!el.closest("form"); }
    return el.tagName === "INPUT" && !/^(range|checkbox|radio|button|submit|reset|image|color|file)$/i.test(el.type);
  }

  window.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) { return; }
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (help.open && key !== "?") { return; }       // the dialog keeps Esc and Tab
    const entry = KEYS.find((k) => k.match(key));
    const v = host.active;
    if (!entry || !v) { return; }
    // preventDefault also keeps Space from clicking a focused button or checkbox,
    // and the arrows from moving a focused slider or list on their own.
    e.preventDefault();
    entry.run(v, e);
  }, true);

  /* ---- wiring ---- */
  root.querySelectorAll("[data-layout-choice]").forEach((b) => {
    b.addEventListener("click", () => setLayout(b.getAttribute("data-layout-choice")));
  });
  button("[data-action=overlay]").addEventListener("click", toggleOverlay);
  button("[data-action=window-mode]").addEventListener("click", toggleWindowMode);
  button("[data-action=fullscreen]").addEventListener("click", toggleFullscreen);
  button("[data-action=help]").addEventListener("click", toggleHelp);

  sections.forEach((section, i) => makeViewport(section, i));
  host.activate(viewports[0]);
  setLayout(root.getAttribute("data-layout") || "1x1");
  Promise.all([...new Set(studyUids)].map((uid) => studyData(uid).then((data) => ({ uid, data }))))
    .then(buildStrip).catch(() => {});
  window.DSMViewer = { viewports: viewports, host: host, setLayout: setLayout };
}
