/* Measurement arithmetic and the calibration it rests on (no DOM): lengths,
 * angles, stenosis and the label that names the calibration source, which is
 * always shown with a length. Points are image pixels [x, y]. */
import { t } from "./util.js";

export const FRENCH_MM = 1 / 3;          // 1 Fr = 1/3 mm (catheter outer diameter)
export const FRENCH_SIZES = [4, 5, 6, 7, 8];

/* The calibration that applies to an instance: the user's catheter calibration
 * (newest) first, then the header's (info.calibration from the server), else
 * none. Returns {row, col} mm per pixel (null when uncalibrated) and a label. */
export function calibrationOf(info, userCal) {
  if (userCal) {
    const label = userCal.french ? t("js.measure.cal_catheter", { fr: userCal.french })
      : t("js.measure.cal_user", { mm: fmt(userCal.mm, 2) });
    return { row: userCal.mmPerPx, col: userCal.mmPerPx, label: label, source: "user" };
  }
  const c = info && info.calibration;
  if (c && c.source === "pixel_spacing") {
    return { row: c.row_mm, col: c.column_mm, label: t("js.measure.cal_pixel_spacing"), source: c.source };
  }
  if (c && c.source === "imager_pixel_spacing") {
    const label = c.magnification ? t("js.measure.cal_imager_ermf", { m: fmt(c.magnification, 3) })
      : t("js.measure.cal_imager");
    return { row: c.row_mm, col: c.column_mm, label: label, source: c.source };
  }
  return { row: null, col: null, label: t("js.measure.cal_none"), source: null };
}

/* A user calibration from a "calibrate" mark: the line's pixel length over the
 * known size in mm. Assumes square pixels, as a catheter calibration must. */
export function userCalibration(mark) {
  const px = pixelLength(mark.points[0], mark.points[1]);
  const mm = mark.extra && mark.extra.mm;
  if (!(px > 0) || !(mm > 0)) { return null; }
  return { mmPerPx: mm / px, mm: mm, french: mark.extra.french || null };
}

export function pixelLength(a, b) { return Math.hypot(b[0] - a[0], b[1] - a[1]); }

/* Length in mm when calibrated (per-axis spacing: columns along x, rows along y), else px. */
export function length(a, b, cal) {
  if (cal.row === null) { return { value: pixelLength(a, b), unit: "px" }; }
  return { value: Math.hypot((b[0] - a[0]) * cal.col, (b[1] - a[1]) * cal.row), unit: "mm" };
}

/* Angle at vertex b between b→a and b→c, in degrees, in physical space. */
export function angle(a, b, c, cal) {
  const sx = cal.col || 1, sy = cal.row || 1;
  const u = [(a[0] - b[0]) * sx, (a[1] - b[1]) * sy], v = [(c[0] - b[0]) * sx, (c[1] - b[1]) * sy];
  const cos = (u[0] * v[0] + u[1] * v[1]) / ((Math.hypot(u[0], u[1]) * Math.hypot(v[0], v[1])) || 1);
  return Math.acos(Math.min(1, Math.max(-1, cos))) * 180 / Math.PI;
}

/* Percent diameter stenosis from two diameters: (1 - d_min / d_ref) × 100, the
 * larger one taken as the reference. Calibration cancels out. */
export function stenosis(points, cal) {
  const d1 = length(points[0], points[1], cal), d2 = length(points[2], points[3], cal);
  const ref = Math.max(d1.value, d2.value), min = Math.min(d1.value, d2.value);
  return { percent: ref > 0 ? (1 - min / ref) * 100 : 0, ref: ref, min: min, unit: d1.unit };
}

export function fmt(x, digits) { return Number(x).toFixed(digits); }

/* The text shown beside a mark (and saved as its GSPS text). */
export function describe(mark, cal) {
  const p = mark.points;
  switch (mark.kind) {
    case "length": {
      const l = length(p[0], p[1], cal);
      return fmt(l.value, l.unit === "mm" ? 2 : 1) + " " + l.unit + " (" + cal.label + ")";
    }
    case "angle": return fmt(angle(p[0], p[1], p[2], cal), 1) + "°";
    case "stenosis": {
      if (p.length < 4) { return ""; }
      const s = stenosis(p, cal);
      return t("js.measure.stenosis_text", { pct: fmt(s.percent, 0), ref: fmt(s.ref, 2), min: fmt(s.min, 2), unit: s.unit })
        + " (" + cal.label + ")";
    }
    case "ellipse": {
      const e = mark.extra || {};
      if (typeof e.mean !== "number") { return ""; }
      const rx = Math.abs(p[1][0] - p[0][0]) / 2, ry = Math.abs(p[1][1] - p[0][1]) / 2;
      const area = cal.row === null ? fmt(Math.PI * rx * ry, 0) + " px²"
        : fmt(Math.PI * rx * cal.col * ry * cal.row, 1) + " mm²";
      return t("js.measure.roi_text", { mean: fmt(e.mean, 1), sd: fmt(e.sd, 1), area: area });
    }
    case "calibrate": {
      const e = mark.extra || {};
      return e.french ? t("js.measure.cal_catheter", { fr: e.french }) + " = " + fmt(e.mm, 2) + " mm"
        : t("js.measure.cal_user", { mm: fmt(e.mm || 0, 2) });
    }
    default: return mark.label || "";
  }
}

/* The number a test or a screen reader can read off a mark (mm, px, °, %, mean). */
export function valueOf(mark, cal) {
  const p = mark.points;
  if (mark.kind === "length") { return length(p[0], p[1], cal).value; }
  if (mark.kind === "angle") { return angle(p[0], p[1], p[2], cal); }
  if (mark.kind === "stenosis" && p.length === 4) { return stenosis(p, cal).percent; }
  if (mark.kind === "ellipse" && mark.extra) { return mark.extra.mean; }
  return null;
}
