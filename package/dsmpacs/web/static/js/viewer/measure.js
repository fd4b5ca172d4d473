/* Measurements and annotations: length, angle, stenosis (two diameters), ellipse
 * ROI (mean and SD computed on the server from modality values), arrow, text and
 * a catheter calibration. Drawn as SVG in vp.layer from image-pixel geometry, so
 * they follow zoom, pan, rotation and flips; kept per user on the server
 * (/viewer/annotations/...), and saved into the study as a GSPS (and key images
 * as a KOS) on request. The calibration source is always shown with a length.
 * Arithmetic lives in measure-geometry.js. Text goes in with textContent only. */
import { base, enc, getJSON, t } from "./util.js";
import {
  calibrationOf, describe, FRENCH_MM, FRENCH_SIZES, userCalibration, valueOf,
} from "./measure-geometry.js";

const SVG = "http://www.w3.org/2000/svg";
// Points each tool collects, and in how many drags (angle and stenosis: two).
const TOOLS = { length: 2, angle: 3, stenosis: 4, ellipse: 2, arrow: 2, text: 1, calibrate: 2 };
const STAGES = { angle: [2, 3], stenosis: [2, 4] };

export const keys = [
  { key: "d", label: "js.viewer.key_length", run: (vp) => vp.setTool("length") },
  { key: "a", label: "js.viewer.key_angle", run: (vp) => vp.setTool("angle") },
  { key: "p", label: "js.viewer.key_stenosis", run: (vp) => vp.setTool("stenosis") },
  { key: "e", label: "js.viewer.key_ellipse", run: (vp) => vp.setTool("ellipse") },
  { key: "w", label: "js.viewer.key_arrow", run: (vp) => vp.setTool("arrow") },
  { key: "t", label: "js.viewer.key_text", run: (vp) => vp.setTool("text") },
  { key: "c", label: "js.viewer.key_calibrate", run: (vp) => vp.setTool("calibrate") },
  { key: "x", label: "js.viewer.key_undo_mark", run: (vp) => vp.measure && vp.measure.removeLast() },
  { key: "k", label: "js.viewer.key_key_image", run: (vp) => vp.measure && vp.measure.keyImage() },
];

function svg(name, attrs) {
  const el = document.createElementNS(SVG, name);
  Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, String(v)));
  return el;
}

function send(method, url, body) {
  return window.DSM.fetch(url, {
    method: method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }).then((r) => r.json().catch(() => ({})).then((json) => {
    if (!r.ok) { throw new Error(json.detail || String(r.status)); }
    return json;
  }));
}

class Measure {
  constructor(vp) {
    this.vp = vp;
    this.marks = new Map();     // "sop|frame" -> [mark], the user's own
    this.shared = new Map();    // "sop|frame" -> [mark], from presentation states in the study
    this.loadedStudy = null;
    this.pending = null;        // the mark being drawn
    this.svg = svg("svg", { class: "measure-svg", "data-measure-svg": "" });
    vp.layer.appendChild(this.svg);
    this.status = vp.q("[data-measure-status]");
    this.form = this.buildForm();
    ["vp:frame", "vp:transform", "vp:series", "vp:info"].forEach((ev) => vp.el.addEventListener(ev, () => this.draw()));
    vp.el.addEventListener("vp:series", () => this.load());
    Object.keys(TOOLS).forEach((name) => vp.registerTool(name, this.tool(name)));
    const action = (name, fn) => { const b = vp.q("[data-action=" + name + "]"); if (b) { b.addEventListener("click", fn); } };
    action("measure-clear", () => this.clearFrame());
    action("key-image", () => this.keyImage());
    action("save-study", () => this.saveToStudy());
  }

  key(sop, frame) { return sop + "|" + frame; }
  here() { const c = this.vp.current(); return c ? this.key(c.sop, c.frame) : ""; }

  /* ---- server ---- */

  load() {
    const study = this.vp.study;
    if (this.loadedStudy === study) { this.draw(); return Promise.resolve(); }
    this.loadedStudy = study;
    return getJSON(base + "/viewer/annotations/" + enc(study) + ".json").then((data) => {
      this.marks.clear(); this.shared.clear();
      const add = (map, m) => { const k = this.key(m.sop, m.frame); if (!map.has(k)) { map.set(k, []); } map.get(k).push(m); };
      (data.annotations || []).forEach((m) => add(this.marks, m));
      (data.presentation_states || []).forEach((m) => add(this.shared, m));
      this.vp.el.setAttribute("data-annotations", String((data.annotations || []).length));
      this.draw();
    }).catch(() => { this.loadedStudy = null; });
  }

  url(sop, frame) {
    const vp = this.vp;
    return base + "/viewer/annotations/" + enc(vp.study) + "/" + enc(vp.series.uid) + "/" + enc(sop) + "/" + frame + ".json";
  }

  persist(sop, frame) {
    const k = this.key(sop, frame);
    const list = this.marks.get(k) || [];
    const cal = this.calibration(sop);
    const body = { annotations: list.map((m) => ({
      id: m.id || null, kind: m.kind, points: m.points, extra: m.extra || {},
      label: m.kind === "text" ? m.label : describe(m, cal),
    })) };
    this.vp.el.setAttribute("data-saving", "true");
    return send("PUT", this.url(sop, frame), body).then((data) => {
      this.marks.set(k, data.annotations);
      this.vp.el.setAttribute("data-saving", "false");
      this.vp.el.setAttribute("data-saved-marks", String(data.annotations.length));
      this.draw();
    }).catch((e) => { this.vp.el.setAttribute("data-saving", "error"); this.say(t("js.measure.store_failed", { why: e.message })); });
  }

  /* ---- calibration ---- */

  calibration(sop) {
    // A catheter calibration holds for every frame of the instance; the newest wins.
    let user = null;
    this.marks.forEach((list, k) => {
      if (k.split("|")[0] !== sop) { return; }
      list.forEach((m) => { if (m.kind === "calibrate") { user = userCalibration(m) || user; } });
    });
    return calibrationOf(this.vp.info(sop), user);
  }

  /* ---- drawing ---- */

  draw() {
    const vp = this.vp;
    this.svg.textContent = "";
    const c = vp.current();
    if (!c) { return; }
    const box = vp.layer.getBoundingClientRect();
    const at = (p) => { const q = vp.imageToClient(p[0], p[1]); return [q.x - box.left, q.y - box.top]; };
    const cal = this.calibration(c.sop);
    const k = this.key(c.sop, c.frame);
    const own = this.marks.get(k) || [];
    // A presentation state the user saved repeats their own marks: show those once.
    const seen = new Set();
    own.forEach((m) => { seen.add(JSON.stringify(m.points)); seen.add(JSON.stringify([m.points[m.points.length - 1]])); });
    (this.shared.get(k) || []).forEach((m) => { if (!seen.has(JSON.stringify(m.points))) { this.drawMark(m, at, cal, "shared"); } });
    own.forEach((m) => this.drawMark(m, at, cal, "own"));
    if (this.pending && this.pending.key === k) { this.drawMark(this.pending.mark, at, cal, "pending"); }
    this.vp.el.setAttribute("data-calibration", cal.label);
  }

  drawMark(mark, at, cal, kind) {
    const g = svg("g", { class: "mark " + kind, "data-kind": mark.kind });
    const p = mark.points.map(at);
    const line = (a, b) => g.appendChild(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1] }));
    if (mark.kind === "length" || mark.kind === "calibrate") { line(p[0], p[1]); }
    if (mark.kind === "angle") { line(p[0], p[1]); if (p[2]) { line(p[1], p[2]); } }
    if (mark.kind === "stenosis") { line(p[0], p[1]); if (p[3]) { line(p[2], p[3]); } }
    if (mark.kind === "arrow") {
      line(p[0], p[1]);
      const dx = p[0][0] - p[1][0], dy = p[0][1] - p[1][1], d = Math.hypot(dx, dy) || 1, s = Math.min(14, d / 3);
      [0.45, -0.45].forEach((a) => {
        const ux = (dx * Math.cos(a) - dy * Math.sin(a)) / d, uy = (dx * Math.sin(a) + dy * Math.cos(a)) / d;
        line(p[1], [p[1][0] + ux * s, p[1][1] + uy * s]);
      });
    }
    if (mark.kind === "ellipse") {
      // Corners through imageToClient, so a rotated view keeps the ellipse on its pixels.
      const c0 = mark.points[0], c1 = mark.points[1];
      const cx = (c0[0] + c1[0]) / 2, cy = (c0[1] + c1[1]) / 2, rx = Math.abs(c1[0] - c0[0]) / 2, ry = Math.abs(c1[1] - c0[1]) / 2;
      const pts = [];
      for (let i = 0; i < 48; i++) { const a = i / 48 * 2 * Math.PI; pts.push(at([cx + rx * Math.cos(a), cy + ry * Math.sin(a)]).join(",")); }
      g.appendChild(svg("polygon", { points: pts.join(" ") }));
    }
    const text = kind === "shared" ? (mark.label || "") : (mark.kind === "text" ? mark.label : describe(mark, cal));
    if (text) {
      const end = p[p.length - 1];
      const label = svg("text", { x: end[0] + 6, y: end[1] - 6 });
      label.textContent = text;
      g.appendChild(label);
      g.setAttribute("data-label", text);
    }
    const value = valueOf(mark, cal);
    if (value !== null && value !== undefined) { g.setAttribute("data-value", String(value)); }
    g.setAttribute("data-source", cal.source || "");
    this.svg.appendChild(g);
  }

  /* ---- tools ---- */

  tool(name) {
    const stages = STAGES[name] || [TOOLS[name]];
    return {
      down: (pt) => {
        const c = this.vp.current();
        if (!c) { return; }
        const p = [pt.x, pt.y];
        const k = this.key(c.sop, c.frame);
        if (this.pending && this.pending.key === k && this.pending.mark.kind === name) {
          // the next drag of an angle (its second arm) or a stenosis (its second diameter)
          const m = this.pending.mark;
          if (name === "angle") { m.points.push(p); } else { m.points.push(p, p); }
        } else {
          this.pending = { key: k, sop: c.sop, frame: c.frame, mark: { kind: name, points: name === "text" ? [p] : [p, p], extra: {} } };
        }
        this.draw();
      },
      move: (pt) => {
        if (!this.pending || name === "text") { return; }
        const pts = this.pending.mark.points;
        pts[pts.length - 1] = [pt.x, pt.y];
        this.draw();
      },
      up: (pt) => {
        if (!this.pending) { return; }
        const m = this.pending.mark;
        if (name !== "text") { m.points[m.points.length - 1] = [pt.x, pt.y]; }
        if (m.points.length < stages[stages.length - 1]) { this.draw(); return; }   // another drag to come
        const done = this.pending;
        this.pending = null;
        if (name !== "text" && Math.hypot(m.points[1][0] - m.points[0][0], m.points[1][1] - m.points[0][1]) < 0.5) {
          this.draw(); return;    // a click, not a drag
        }
        this.finish(done);
      },
      cancel: () => { this.pending = null; this.draw(); },
    };
  }

  finish(done) {
    const m = done.mark;
    if (m.kind === "text") { this.ask("text", (value) => { m.label = value; this.add(done); }); return; }
    if (m.kind === "calibrate") {
      this.ask("calibrate", (mm, french) => { m.extra = { mm: mm, french: french }; this.add(done); });
      return;
    }
    if (m.kind === "ellipse") {
      const [a, b] = m.points;
      const q = "?cx=" + (a[0] + b[0]) / 2 + "&cy=" + (a[1] + b[1]) / 2 + "&rx=" + Math.abs(b[0] - a[0]) / 2 + "&ry=" + Math.abs(b[1] - a[1]) / 2;
      getJSON(base + "/viewer/roi/" + enc(this.vp.study) + "/" + enc(this.vp.series.uid) + "/" + enc(done.sop) + "/" + done.frame + ".json" + q)
        .then((s) => { m.extra = { mean: s.mean, sd: s.sd, pixels: s.pixels }; this.add(done); })
        .catch(() => { this.say(t("js.measure.roi_failed")); this.add(done); });
      return;
    }
    this.add(done);
  }

  add(done) {
    const k = this.key(done.sop, done.frame);
    if (!this.marks.has(k)) { this.marks.set(k, []); }
    this.marks.get(k).push(done.mark);
    this.draw();
    return this.persist(done.sop, done.frame);
  }

  removeLast() {
    const c = this.vp.current();
    const list = c && this.marks.get(this.here());
    if (!list || !list.length) { return; }
    list.pop();
    this.draw();
    this.persist(c.sop, c.frame);
  }

  clearFrame() {
    const c = this.vp.current();
    if (!c || !(this.marks.get(this.here()) || []).length) { return; }
    this.marks.set(this.here(), []);
    this.draw();
    this.persist(c.sop, c.frame);
  }

  /* ---- the small form under the toolbar: a text, or the catheter size ---- */

  buildForm() {
    const form = document.createElement("form");
    form.className = "measure-form";
    form.hidden = true;
    form.setAttribute("data-measure-form", "");
    const toolbar = this.vp.q(".toolbar");
    toolbar.parentNode.insertBefore(form, toolbar.nextSibling);
    return form;
  }

  ask(kind, done) {
    const form = this.form;
    form.textContent = "";
    form.setAttribute("data-kind", kind);
    const label = document.createElement("label");
    let read;
    if (kind === "text") {
      label.textContent = t("js.measure.text_prompt") + " ";
      const input = document.createElement("input");
      input.type = "text"; input.maxLength = 255; input.setAttribute("data-measure-text", "");
      label.appendChild(input);
      form.appendChild(label);
      read = () => (input.value.trim() ? [input.value.trim()] : null);
    } else {
      label.textContent = t("js.measure.catheter_prompt") + " ";
      const select = document.createElement("select");
      select.setAttribute("data-catheter", "");
      FRENCH_SIZES.forEach((fr) => {
        const o = document.createElement("option");
        o.value = String(fr);
        o.textContent = t("js.measure.french", { fr: fr, mm: (fr * FRENCH_MM).toFixed(2) });
        select.appendChild(o);
      });
      const other = document.createElement("option");
      other.value = ""; other.textContent = t("js.measure.other_mm");
      select.appendChild(other);
      select.value = "6";
      const mm = document.createElement("input");
      mm.type = "number"; mm.min = "0.1"; mm.max = "100"; mm.step = "0.01"; mm.hidden = true;
      mm.setAttribute("data-catheter-mm", ""); mm.setAttribute("aria-label", t("js.measure.other_mm"));
      select.addEventListener("change", () => { mm.hidden = select.value !== ""; });
      label.appendChild(select);
      form.append(label, mm);
      read = () => {
        if (select.value) { const fr = parseInt(select.value, 10); return [fr * FRENCH_MM, fr]; }
        const v = parseFloat(mm.value);
        return v > 0 ? [v, null] : null;
      };
    }
    const ok = document.createElement("button");
    ok.type = "submit"; ok.textContent = t("js.measure.ok"); ok.setAttribute("data-measure-ok", "");
    const cancel = document.createElement("button");
    cancel.type = "button"; cancel.textContent = t("js.measure.cancel");
    form.append(ok, cancel);
    const close = () => { form.hidden = true; form.onsubmit = null; this.draw(); };
    cancel.addEventListener("click", close);
    form.onsubmit = (e) => {
      e.preventDefault();
      const value = read();
      if (!value) { return; }
      close();
      done(...value);
    };
    form.hidden = false;
    const first = form.querySelector("input:not([hidden]), select");
    if (first) { first.focus(); }
  }

  say(text) { if (this.status) { this.status.textContent = text; } }

  /* ---- into the study ---- */

  saveToStudy() {
    const vp = this.vp;
    // The window goes in as the Softcopy VOI LUT, unless it is a subtraction window
    // (log units of a DSA image the presentation state cannot reproduce).
    const w = vp.subtractBox && vp.subtractBox.checked ? null : vp.shownWindow;
    this.say(t("js.measure.saving"));
    return send("POST", base + "/viewer/annotations/" + enc(vp.study) + "/save", { window: w })
      .then((r) => { this.say(t("js.measure.saved")); vp.el.setAttribute("data-saved-gsps", r.sop); })
      .catch((e) => this.say(t("js.measure.save_failed", { why: e.message })));
  }

  keyImage() {
    const vp = this.vp, c = vp.current();
    if (!c) { return Promise.resolve(); }
    return send("POST", base + "/viewer/keyimages/" + enc(vp.study),
      { images: [{ series: vp.series.uid, sop: c.sop, frame: c.frame }] })
      .then((r) => { this.say(t("js.measure.key_saved")); vp.el.setAttribute("data-saved-kos", r.sop); })
      .catch((e) => this.say(t("js.measure.save_failed", { why: e.message })));
  }
}

export function attach(vp) {
  if (!vp.layer) { return; }
  vp.measure = new Measure(vp);
}
