/* DSM PACS viewer boot: creates a Viewport per <section data-viewport>, builds
 * the series lists, links scrolling in compare mode, and runs the one keyboard
 * dispatcher, which acts on the active viewport. Feature modules (measure, dsa,
 * quality, overlay) get attach(viewport) for every viewport. */
import { Viewport } from "./viewport.js";
import { bindInput } from "./input.js";
import { base, enc, getJSON, root, t } from "./util.js";
import * as overlay from "./overlay.js";
import * as measure from "./measure.js";
import * as dsa from "./dsa.js";
import * as quality from "./quality.js";

const features = [overlay, measure, dsa, quality];

if (root) {
  const wantedSeries = root.getAttribute("data-series") || "";
  const linkBox = root.querySelector("[data-link]");
  const viewports = [];
  const host = {
    viewports: viewports,
    active: null,
    windowMode: false,
    moved(from, i) {
      if (linkBox && linkBox.checked) { viewports.forEach((v) => { if (v !== from) { v.go(i, false); } }); }
    },
    activate(vp) {
      host.active = vp;
      viewports.forEach((v) => v.el.classList.toggle("active", v === vp));
    },
  };

  function buildSeriesList(vp, data) {
    const list = vp.q("[data-series-list]");
    data.series.forEach((s) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("data-series", s.uid);
      const thumb = document.createElement("img");
      thumb.src = s.thumbnail; thumb.alt = ""; thumb.loading = "lazy"; thumb.width = 56; thumb.height = 56;
      const label = document.createElement("span");
      label.textContent = [s.number === null ? "" : "#" + s.number, s.modality, s.description].join(" ").trim();
      const count = document.createElement("small");
      count.textContent = t("js.viewer.frames", { n: s.frames });
      button.append(thumb, label, count);
      button.addEventListener("click", () => vp.selectSeries(s));
      li.appendChild(button);
      list.appendChild(li);
    });
    vp.el.addEventListener("vp:series", () => {
      list.querySelectorAll("button").forEach((b) => {
        b.setAttribute("aria-current", b.getAttribute("data-series") === vp.series.uid ? "true" : "false");
      });
    });
  }

  root.querySelectorAll("[data-viewport]").forEach((section) => {
    const vp = new Viewport(section, host);
    viewports.push(vp);
    bindInput(vp, host);
    section.addEventListener("pointerdown", () => host.activate(vp));
    features.forEach((m) => m.attach(vp));
    getJSON(base + "/viewer/studies/" + enc(vp.study) + ".json")
      .then((data) => { buildSeriesList(vp, data); return vp.load(data, wantedSeries); })
      .catch(() => vp.say(t("js.viewer.load_failed")));
  });
  host.activate(viewports[0]);

  document.addEventListener("keydown", (e) => {
    const v = host.active;
    if (!v || /^(INPUT|SELECT|TEXTAREA)$/.test((e.target && e.target.tagName) || "")) { return; }
    if (e.key === "ArrowRight" || e.key === "ArrowDown") { v.step(1); e.preventDefault(); }
    if (e.key === "ArrowLeft" || e.key === "ArrowUp") { v.step(-1); e.preventDefault(); }
    if (e.key === " ") { v.togglePlay(); e.preventDefault(); }
  });
  window.DSMViewer = { viewports: viewports, host: host };
}
