/* Overlays over a viewport, from the "overlay" dict of the instance info
 * (package/dsmpacs/imaging/overlay.py): four-corner text (patient, study,
 * series, C-arm angles, frame and time, window and zoom), orientation letters
 * that follow flips and rotation, a scale bar when a spacing is known, and the
 * display shutters, masked in the browser over the image (they stay applied
 * when the text is toggled off with I). Text goes in with textContent only. */
import { t } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";
const CJK = /[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff]/;
const NICE_MM = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500];

/* A DICOM PN for reading (as the server's person_name filter does). */
export function personName(value) {
  return (value || "").split("=").map((group) => {
    const parts = group.split("^").map((p) => p.trim()).filter(Boolean);
    return parts.join(parts.length && parts.every((p) => CJK.test(p)) ? "" : " ");
  }).filter(Boolean).join(" = ");
}

/* PS3.3 C.8.7.5: primary angle positive = LAO (negative RAO); secondary
 * positive = CRAN (negative CAUD). */
export function angles(primary, secondary) {
  const out = [];
  if (typeof primary === "number") { out.push((primary < 0 ? "RAO " : "LAO ") + Math.round(Math.abs(primary)) + "°"); }
  if (typeof secondary === "number") { out.push((secondary < 0 ? "CAUD " : "CRAN ") + Math.round(Math.abs(secondary)) + "°"); }
  return out;
}

function dicomDate(d) { return d && /^\d{8}$/.test(d) ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6, 8) : d || ""; }
function dicomTime(tm) { return tm && /^\d{4}/.test(tm) ? tm.slice(0, 2) + ":" + tm.slice(2, 4) : ""; }

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) { e.className = cls; }
  if (parent) { parent.appendChild(e); }
  return e;
}

function lines(box, texts) {
  box.textContent = "";
  texts.filter((s) => s).forEach((s) => { el("div", "", box).textContent = s; });
}

export function attach(vp) {
  const box = vp.q("[data-overlay]");
  const shutterBox = vp.q("[data-shutter]");
  if (!box) { return; }
  const corners = {};
  ["tl", "tr", "bl", "br"].forEach((c) => { corners[c] = el("div", "vp-corner", box); corners[c].setAttribute("data-corner", c); });
  const sides = {};
  ["top", "right", "bottom", "left"].forEach((s) => { sides[s] = el("div", "vp-orient", box); sides[s].setAttribute("data-side", s); });
  const scale = el("div", "vp-scale", box);
  scale.setAttribute("data-scale-bar", "");
  const bar = el("div", "", scale);
  const scaleLabel = el("span", "", scale);

  const ov = () => { const info = vp.info(); return (info && info.overlay) || null; };

  function text() {
    const o = ov();
    const image = vp.current();
    if (!o || !image) { Object.values(corners).forEach((c) => { c.textContent = ""; }); return; }
    lines(corners.tl, [personName(o.patient_name), o.patient_id, [dicomDate(o.study_date), dicomTime(o.study_time)].join(" ").trim(), o.institution]);
    lines(corners.tr, [
      [o.series_number ? "S" + o.series_number : "", o.series_description].filter(Boolean).join(" · "),
      o.modality, angles(o.positioner_primary_angle, o.positioner_secondary_angle).join("  "),
    ]);
    const frameLines = [t("js.viewer.ov_frame", { n: vp.index + 1, total: vp.images.length })];
    if (o.frame_time_ms && image.frames > 1) {
      frameLines.push((image.frame * o.frame_time_ms / 1000).toFixed(2) + " s · " +
        t("js.viewer.ov_frame_time", { ms: Math.round(o.frame_time_ms * 10) / 10 }));
    }
    lines(corners.bl, frameLines);
    const w = vp.shownWindow;
    const f = vp.fit();
    lines(corners.br, [
      w ? "C " + Math.round(w.center) + " / W " + Math.round(w.width) : "",
      t("js.viewer.ov_zoom", { pct: Math.round(f.scale * vp.zoom * 100) }),
    ]);
  }

  function orientation() {
    const o = ov();
    const letters = o && o.orientation;
    if (!letters) { Object.values(sides).forEach((s) => { s.textContent = ""; }); return; }
    // Sides clockwise; flips swap opposite sides, each quarter turn moves them on one.
    const order = ["top", "right", "bottom", "left"];
    const shown = {};
    order.forEach((side) => {
      let s = side;
      if (vp.flipH && (s === "left" || s === "right")) { s = s === "left" ? "right" : "left"; }
      if (vp.flipV && (s === "top" || s === "bottom")) { s = s === "top" ? "bottom" : "top"; }
      s = order[(order.indexOf(s) + vp.rotation / 90) % 4];
      shown[s] = letters[side] || "";
    });
    order.forEach((side) => { sides[side].textContent = shown[side]; });
  }

  /* mm per image pixel along the screen's horizontal, and where it comes from. */
  function spacing() {
    const info = vp.info() || {};
    const cal = info.calibration;
    const quarter = vp.rotation % 180 !== 0;
    if (cal && cal.source && cal.row_mm && cal.column_mm) {
      // Imager Pixel Spacing without a magnification factor is the detector's scale.
      const detector = cal.source === "imager_pixel_spacing" && !cal.magnification;
      return { mm: quarter ? cal.row_mm : cal.column_mm, note: detector ? " " + t("js.viewer.ov_detector") : "" };
    }
    const o = ov();
    const ps = o && (o.pixel_spacing || o.imager_pixel_spacing);
    if (!ps) { return null; }
    return { mm: quarter ? ps[0] : ps[1], note: o.pixel_spacing ? "" : " " + t("js.viewer.ov_detector") };
  }

  function scaleBar() {
    const sp = spacing();
    const pxPerImagePx = vp.fit().scale * vp.zoom;
    if (!sp || !pxPerImagePx) { scale.hidden = true; return; }
    const mmPerPx = sp.mm / pxPerImagePx;
    let mm = NICE_MM[0];
    NICE_MM.forEach((n) => { if (n / mmPerPx <= 140) { mm = n; } });
    scale.hidden = false;
    bar.style.width = Math.round(mm / mmPerPx) + "px";
    scaleLabel.textContent = mm + " mm" + sp.note;
    scale.setAttribute("data-mm", String(mm));
  }

  function shutters() {
    shutterBox.textContent = "";
    const o = ov();
    const sh = o && o.shutters;
    const r = vp.stage.getBoundingClientRect();
    if (!sh || !r.width) { return; }
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + r.width + " " + r.height);
    const local = (x, y) => { const p = vp.imageToClient(x, y); return [p.x - r.left, p.y - r.top]; };
    const outside = "M-1 -1H" + (r.width + 1) + "V" + (r.height + 1) + "H-1Z";
    const poly = (pts) => "M" + pts.map((p) => local(p[0], p[1]).join(" ")).join("L") + "Z";
    const shapes = [];
    if (sh.rectangle) {
      const q = sh.rectangle;
      shapes.push(poly([[q.left, q.top], [q.right, q.top], [q.right, q.bottom], [q.left, q.bottom]]));
    }
    if (sh.circle) {
      const c = local(sh.circle.x, sh.circle.y);
      const rad = sh.circle.radius * vp.fit().scale * vp.zoom;
      shapes.push("M" + (c[0] - rad) + " " + c[1] + "a" + rad + " " + rad + " 0 1 0 " + 2 * rad + " 0a" + rad + " " + rad + " 0 1 0 " + -2 * rad + " 0Z");
    }
    if (sh.polygon && sh.polygon.length > 2) { shapes.push(poly(sh.polygon)); }
    // Each shape blacks out what lies outside it, so what shows is inside all of them.
    shapes.forEach((d) => {
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", outside + d);
      path.setAttribute("fill", "#000");
      path.setAttribute("fill-rule", "evenodd");
      svg.appendChild(path);
    });
    shutterBox.appendChild(svg);
  }

  function all() { text(); orientation(); scaleBar(); shutters(); }
  vp.el.addEventListener("vp:frame", text);
  vp.el.addEventListener("vp:window", text);
  vp.el.addEventListener("vp:info", all);
  vp.el.addEventListener("vp:series", all);
  vp.el.addEventListener("vp:transform", all);
}
