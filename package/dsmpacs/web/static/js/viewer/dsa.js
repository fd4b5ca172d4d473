/* dsa.js: digital subtraction angiography controls of a viewport.
 * - One window for a subtracted run: the server's default window with a mask is
 *   the run's ("run_window", computed once per run), and the viewport asks for
 *   and labels that one window when subtraction is switched on, so a subtracted
 *   cine keeps its contrast.
 * - Pixel shift of the mask (patient motion): x/y inputs in 0.1 px steps and
 *   Alt+arrow keys (0.1 px; Alt+Shift+arrow: 1 px), sent as shift=dx,dy.
 * - Road map: the minimum over all frames of the run ("peak opacification"),
 *   subtracted when subtraction is on, sent as roadmap=min.
 * - In compare mode, "Sync subtraction and window" copies subtraction, mask,
 *   shift, road map and an explicit window to the other viewports.
 * Only the reader's own changes are copied, never windows arriving from the server.
 * State is mirrored in data-shift / data-roadmap on the viewport for tests. */
import { root, t } from "./util.js";

const MAX_SHIFT = 32;                  // pixels, as the server allows
const viewports = [];
let syncBox = null;

const round1 = (v) => Math.round(v * 10) / 10;

const ARROWS = { ArrowLeft: [-0.1, 0], ArrowRight: [0.1, 0], ArrowUp: [0, -0.1], ArrowDown: [0, 0.1] };

/* Alt+arrows move the mask: left/right along x, up/down along y (image pixels),
 * 0.1 px a press, 1 px with Shift. One entry for the help dialog; main.js leaves
 * Alt combinations alone, so onKey below dispatches them. */
export const keys = [
  { key: "Alt+← → ↑ ↓", label: "js.viewer.key_shift", run: (vp, e) => {
    const [dx, dy] = ARROWS[e.key];
    const k = e.shiftKey ? 10 : 1;
    setShift(vp, vp.dsaShift.x + dx * k, vp.dsaShift.y + dy * k);
  } },
];

function subtracting(vp) {
  return !!(vp.series && vp.series.subtraction && vp.subtractBox.checked);
}

export function setShift(vp, x, y) {
  const clamp = (v) => round1(Math.min(Math.max(Number(v) || 0, -MAX_SHIFT), MAX_SHIFT));
  x = clamp(x); y = clamp(y);
  if (x === vp.dsaShift.x && y === vp.dsaShift.y) { return; }
  vp.dsaShift = { x: x, y: y };
  showState(vp);
  if (subtracting(vp)) { vp.refresh(); }
  sync(vp);
}

export function setRoadmap(vp, mode) {
  vp.dsaRoadmap = mode || null;
  showState(vp);
  vp.refresh();
  sync(vp);
}

function showState(vp) {
  const c = vp.dsaControls;
  if (c) {
    if (document.activeElement !== c.x) { c.x.value = String(vp.dsaShift.x); }
    if (document.activeElement !== c.y) { c.y.value = String(vp.dsaShift.y); }
    c.roadmap.setAttribute("aria-pressed", vp.dsaRoadmap ? "true" : "false");
  }
  vp.el.setAttribute("data-shift", vp.dsaShift.x + "," + vp.dsaShift.y);
  vp.el.setAttribute("data-roadmap", vp.dsaRoadmap || "");
}

function numberInput(label, onChange) {
  const wrap = document.createElement("label");
  wrap.textContent = label + " ";
  const input = document.createElement("input");
  input.type = "number"; input.step = "0.1"; input.min = String(-MAX_SHIFT); input.max = String(MAX_SHIFT);
  input.value = "0"; input.className = "shift";
  input.addEventListener("change", onChange);
  wrap.appendChild(input);
  return { wrap: wrap, input: input };
}

function buildControls(vp) {
  if (!vp.dsa) { return; }
  const x = numberInput(t("js.viewer.shift_x"), () => setShift(vp, x.input.value, vp.dsaShift.y));
  const y = numberInput(t("js.viewer.shift_y"), () => setShift(vp, vp.dsaShift.x, y.input.value));
  x.input.setAttribute("data-shift-x", ""); y.input.setAttribute("data-shift-y", "");
  x.wrap.title = y.wrap.title = t("js.viewer.shift_hint");
  const roadmap = document.createElement("button");
  roadmap.type = "button";
  roadmap.setAttribute("data-action", "roadmap");
  roadmap.setAttribute("aria-pressed", "false");
  roadmap.textContent = t("js.viewer.roadmap");
  roadmap.title = t("js.viewer.roadmap_hint");
  roadmap.addEventListener("click", () => setRoadmap(vp, vp.dsaRoadmap ? null : "min"));
  vp.dsa.append(x.wrap, y.wrap, roadmap);
  vp.dsaControls = { x: x.input, y: y.input, roadmap: roadmap };
}

/* ---- synchronisation across the viewports of a comparison ---- */

function state(vp) {
  return {
    subtract: vp.subtractBox.checked, mask: vp.maskInput.value, shift: vp.dsaShift, roadmap: vp.dsaRoadmap,
    window: vp.window ? { center: vp.window.center, width: vp.window.width } : null,
  };
}

function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

/* Copy vp's DSA state and explicit window to the others. Idempotent (nothing happens
 * when a viewport already has the state), so the events it causes end the exchange. */
function sync(vp) {
  if (!syncBox || !syncBox.checked) { return; }
  const want = state(vp);
  viewports.forEach((other) => {
    if (other === vp || !other.series) { return; }
    const mine = { ...want, subtract: want.subtract && !!other.series.subtraction };
    const before = state(other);
    if (same(before, mine)) { return; }
    // Only the window differs: preview it at once there too, as in the dragged viewport.
    if (mine.window && other.shownWindow && same({ ...before, window: null }, { ...mine, window: null })) {
      other.windowPreview(other.shownWindow, mine.window);
    }
    other.dsaShift = { x: want.shift.x, y: want.shift.y };
    other.dsaRoadmap = want.roadmap;
    other.maskInput.value = want.mask;
    other.subtractBox.checked = mine.subtract;
    showState(other);
    other.windowChanged(want.window);
  });
}

function buildSync() {
  const toggle = root && root.querySelector(".link-toggle");
  if (!toggle || syncBox) { return; }
  const label = document.createElement("label");
  label.className = "link-toggle";
  syncBox = document.createElement("input");
  syncBox.type = "checkbox";
  syncBox.setAttribute("data-sync-dsa", "");
  label.append(syncBox, " " + t("js.viewer.sync_dsa"));
  toggle.after(label);
  syncBox.addEventListener("change", () => { if (syncBox.checked) { const a = viewports.find((v) => v.el.classList.contains("active")) || viewports[0]; sync(a); } });
}

/* Alt+arrows: handled here, in the capture phase, on the active viewport. */
function onKey(e) {
  if (!e.altKey || e.ctrlKey || e.metaKey || !ARROWS[e.key]) { return; }
  const host = window.DSMViewer && window.DSMViewer.host;
  const vp = (host && host.active) || viewports[0];
  const el = e.target;
  if (!vp || !subtracting(vp) || (el && (el.tagName === "TEXTAREA" || el.isContentEditable))) { return; }
  e.preventDefault();
  e.stopImmediatePropagation();
  keys[0].run(vp, e);
}

export function attach(vp) {
  vp.dsaShift = { x: 0, y: 0 };
  vp.dsaRoadmap = null;
  viewports.push(vp);
  buildControls(vp);
  buildSync();
  showState(vp);
  if (viewports.length === 1) { window.addEventListener("keydown", onKey, true); }
  vp.renderParams.push((v) => {
    const params = [];
    if (subtracting(v) && (v.dsaShift.x || v.dsaShift.y)) { params.push("shift=" + v.dsaShift.x + "," + v.dsaShift.y); }
    if (v.dsaRoadmap) { params.push("roadmap=" + v.dsaRoadmap); }
    return params;
  });
  // Only what the reader does is copied (not windows arriving from the server), so
  // a viewport showing a series without subtraction does not switch the others off.
  vp.subtractBox.addEventListener("change", () => sync(vp));
  vp.maskInput.addEventListener("change", () => sync(vp));
  vp.presets.addEventListener("change", () => sync(vp));
  const reset = vp.q("[data-action=reset]");
  if (reset) { reset.addEventListener("click", () => sync(vp)); }
  vp.el.addEventListener("vp:window", () => {
    const host = window.DSMViewer && window.DSMViewer.host;
    if (vp.window && (!host || host.active === vp)) { sync(vp); }
  });
  // Shift and road map belong to one run: kept per series, restored on coming back
  // (as the viewport keeps subtraction, mask and window).
  const kept = new Map();
  let shownSeries = null;
  vp.el.addEventListener("vp:series", () => {
    if (shownSeries) { kept.set(shownSeries, { shift: vp.dsaShift, roadmap: vp.dsaRoadmap }); }
    shownSeries = vp.series && vp.series.uid;
    const back = kept.get(shownSeries);
    vp.dsaShift = back ? back.shift : { x: 0, y: 0 };
    vp.dsaRoadmap = back ? back.roadmap : null;
    showState(vp);
  });
}
