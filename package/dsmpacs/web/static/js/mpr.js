/* The 3D page (MPR/MIP): every plane is rendered on the server from a volume it
 * builds once per series (/viewer/mpr/STUDY/SERIES/volume.json describes it).
 * This script only keeps the state (crosshair point, slab, window, angles) and
 * asks for images:
 *   axial|coronal|sagittal.png?pos=&slab=&mode=&wc=&ww=&size=
 *   oblique.png?point=S,P,L&a=&b=&slab=&mode=&wc=&ww=&size=
 *   rotate/ANGLE.png?wc=&ww=   (rotating MIP cine, frames every rotate-step degrees)
 * Volume axes: 0 runs to the head (S), 1 to the back (P), 2 to the patient's left
 * (L). Axial images: columns along L, rows along P. Coronal: columns along L, the
 * head at the top. Sagittal: columns along P, the head at the top.
 * No inline script or style attribute (CSP): styles are set through element.style. */
(function () {
  "use strict";

  var root = document.querySelector("[data-mpr]");
  if (!root) { return; }
  var t = window.DSM ? window.DSM.t : function (k) { return k; };
  var base = root.getAttribute("data-base");
  var step = +root.getAttribute("data-rotate-step") || 10;
  var PLANES = ["axial", "coronal", "sagittal"];
  var AXIS = { axial: 0, coronal: 1, sagittal: 2 };
  var PRESETS = [   // common CT windows beside the file's own
    { key: "js.mpr.preset.soft", center: 40, width: 400 },
    { key: "js.mpr.preset.angio", center: 300, width: 600 },
    { key: "js.mpr.preset.bone", center: 500, width: 2000 },
    { key: "js.mpr.preset.lung", center: -600, width: 1500 },
    { key: "js.mpr.preset.brain", center: 40, width: 80 }
  ];

  var state = { volume: null, point: [0, 0, 0], slab: 0, mip: true, window: null, a: 0, b: 30,
                rotating: false, angle: 0, timer: null };
  var views = {};
  ["axial", "coronal", "sagittal", "oblique"].forEach(function (plane) {
    var el = root.querySelector('[data-plane="' + plane + '"]');
    views[plane] = { el: el, img: el.querySelector("[data-image]"), stage: el.querySelector("[data-stage]"),
                     slider: el.querySelector("[data-pos]"), label: el.querySelector("[data-pos-label]"),
                     crossV: el.querySelector("[data-cross-v]"), crossH: el.querySelector("[data-cross-h]") };
  });
  var message = root.querySelector("[data-message]");
  var prefetch = new Image();

  function show(text) { message.textContent = text; message.hidden = !text; }

  function query(params) {
    return Object.keys(params).filter(function (k) { return params[k] !== null && params[k] !== undefined; })
      .map(function (k) { return k + "=" + encodeURIComponent(params[k]); }).join("&");
  }

  function common() {
    return { slab: state.slab, mode: state.mip ? "mip" : "avg",
             wc: state.window.center, ww: state.window.width, size: imageSize() };
  }

  /* Ask for about as many pixels as the stage shows (sharp on phones, light on links). */
  function imageSize() {
    var stage = views.axial.stage.getBoundingClientRect();
    var px = Math.max(stage.width, stage.height) * (window.devicePixelRatio || 1);
    return Math.max(128, Math.min(1024, Math.round(px / 64) * 64));
  }

  function load(view, url) {
    if (view.img.getAttribute("data-src") === url) { return; }
    view.img.setAttribute("data-src", url);
    view.img.setAttribute("data-loaded", "false");
    view.img.src = url;
  }

  /* The image as large as its stage allows, in its own proportions (the server
   * made its pixels square), so the crosshair lines span exactly the image. */
  function fit(view) {
    var img = view.img, box = view.stage.getBoundingClientRect();
    if (!img.naturalWidth || !box.width || !box.height) { return; }
    var scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
    img.style.width = Math.floor(img.naturalWidth * scale) + "px";
    img.style.height = Math.floor(img.naturalHeight * scale) + "px";
  }

  function renderPlane(plane) {
    var v = views[plane], n = state.volume.shape[AXIS[plane]], pos = state.point[AXIS[plane]];
    var params = common();
    params.pos = pos;
    load(v, base + "/" + plane + ".png?" + query(params));
    v.slider.value = String(pos);
    v.label.textContent = (pos + 1) + " / " + n;
    v.el.setAttribute("data-pos-value", String(pos));
    crosshair(plane);
  }

  function renderThird() {
    var v = views.oblique;
    if (state.rotating) {
      var win = "?" + query({ wc: state.window.center, ww: state.window.width });
      load(v, base + "/rotate/" + state.angle + ".png" + win);
      v.el.setAttribute("data-angle", String(state.angle));
      // The next angle is computed on the server while this one is shown.
      prefetch.src = base + "/rotate/" + ((state.angle + step) % 360) + ".png" + win;
      return;
    }
    var params = common();
    params.point = state.point.join(",");
    params.a = state.a;
    params.b = state.b;
    load(v, base + "/oblique.png?" + query(params));
  }

  /* During a window drag: at most one new set of images every 120 ms. */
  var pending = null;
  function soon() {
    if (pending) { return; }
    pending = window.setTimeout(function () { pending = null; renderAll(); }, 120);
  }

  function renderAll() {
    PLANES.forEach(renderPlane);
    renderThird();
    var info = state.slab ? t("js.mpr.slab_value", { mm: state.slab }) : t("js.mpr.thin");
    root.querySelector("[data-slab-value]").textContent = info;
    root.querySelector("[data-window]").textContent = t("js.mpr.window", {
      wc: Math.round(state.window.center), ww: Math.round(state.window.width) });
  }

  /* Fractions (0..1) across and down a plane's image where the other planes cut it. */
  function crossAt(plane) {
    var s = state.volume.shape, p = state.point;
    if (plane === "axial") { return { x: (p[2] + 0.5) / s[2], y: (p[1] + 0.5) / s[1] }; }
    if (plane === "coronal") { return { x: (p[2] + 0.5) / s[2], y: 1 - (p[0] + 0.5) / s[0] }; }
    return { x: (p[1] + 0.5) / s[1], y: 1 - (p[0] + 0.5) / s[0] };
  }

  function crosshair(plane) {
    var v = views[plane], at = crossAt(plane);
    v.crossV.style.left = (at.x * 100).toFixed(3) + "%";
    v.crossH.style.top = (at.y * 100).toFixed(3) + "%";
  }

  function clamp(value, n) { return Math.max(0, Math.min(n - 1, Math.round(value))); }

  /* A click (or tap) on one plane moves the point the other two planes go through. */
  function pick(plane, fx, fy) {
    var s = state.volume.shape, p = state.point;
    if (plane === "axial") { p[2] = clamp(fx * s[2] - 0.5, s[2]); p[1] = clamp(fy * s[1] - 0.5, s[1]); }
    else if (plane === "coronal") { p[2] = clamp(fx * s[2] - 0.5, s[2]); p[0] = clamp((1 - fy) * s[0] - 0.5, s[0]); }
    else { p[1] = clamp(fx * s[1] - 0.5, s[1]); p[0] = clamp((1 - fy) * s[0] - 0.5, s[0]); }
    renderAll();
  }

  function scroll(plane, delta) {
    var axis = AXIS[plane], n = state.volume.shape[axis];
    var next = clamp(state.point[axis] + delta, n);
    if (next === state.point[axis]) { return; }
    state.point[axis] = next;
    renderAll();
  }

  function wire(plane) {
    var v = views[plane];
    v.slider.addEventListener("input", function () {
      state.point[AXIS[plane]] = +v.slider.value;
      renderAll();
    });
    v.stage.addEventListener("wheel", function (e) {
      e.preventDefault();
      scroll(plane, e.deltaY > 0 ? 1 : -1);
    }, { passive: false });
    // A tap or click picks the point. A mouse drag sets the window (right: wider,
    // down: higher centre), as in the viewer; a horizontal swipe steps through the
    // planes (a vertical one is left to the page, which scrolls: touch-action pan-y).
    var start = null;
    v.stage.addEventListener("pointerdown", function (e) {
      start = { x: e.clientX, y: e.clientY, last: e.clientX, moved: false, mouse: e.pointerType === "mouse",
                window: { center: state.window.center, width: state.window.width } };
      if (start.mouse && v.stage.setPointerCapture) { v.stage.setPointerCapture(e.pointerId); }
    });
    v.stage.addEventListener("pointermove", function (e) {
      if (!start) { return; }
      if (Math.abs(e.clientX - start.x) > 8 || Math.abs(e.clientY - start.y) > 8) { start.moved = true; }
      if (!start.moved) { return; }
      if (start.mouse) {
        if (!(e.buttons & 1)) { return; }
        var per = Math.max(1, start.window.width / 300);
        state.window = { center: Math.round(start.window.center + (e.clientY - start.y) * per),
                         width: Math.max(1, Math.round(start.window.width + (e.clientX - start.x) * per)) };
        soon();
        return;
      }
      var steps = Math.trunc((e.clientX - start.last) / 12);
      if (steps) { start.last += steps * 12; scroll(plane, steps); }
    });
    v.stage.addEventListener("pointercancel", function () { start = null; });
    v.stage.addEventListener("pointerup", function (e) {
      var was = start;
      start = null;
      if (was && was.moved && was.mouse) {
        window.clearTimeout(pending);
        pending = null;
        renderAll();            // the window where the drag ended
        return;
      }
      if (!was || was.moved) { return; }
      var box = v.img.getBoundingClientRect();
      if (!box.width || !box.height) { return; }
      var fx = (e.clientX - box.left) / box.width, fy = (e.clientY - box.top) / box.height;
      if (fx < 0 || fx > 1 || fy < 0 || fy > 1) { return; }
      pick(plane, fx, fy);
    });
  }

  function fillPresets(volume) {
    var select = root.querySelector("[data-presets]");
    var options = [{ label: t("js.mpr.preset_default"), center: volume.window.center, width: volume.window.width }];
    volume.presets.forEach(function (p) {
      options.push({ label: p.name || (p.center + " / " + p.width), center: p.center, width: p.width });
    });
    PRESETS.forEach(function (p) { options.push({ label: t(p.key), center: p.center, width: p.width }); });
    options.forEach(function (o, i) {
      var opt = document.createElement("option");
      opt.value = String(i);
      opt.textContent = o.label;
      select.appendChild(opt);
    });
    select.addEventListener("change", function () {
      var o = options[+select.value];
      state.window = { center: o.center, width: o.width };
      renderAll();
    });
  }

  /* Rotating MIP: the next angle is asked for once the current frame has arrived,
   * at most every 100 ms; frames are cached on the server and in the browser. */
  function tick() {
    if (!state.rotating) { return; }
    var img = views.oblique.img;
    if (img.complete && img.getAttribute("data-loaded") === "true") {
      state.angle = (state.angle + step) % 360;
      renderThird();
    }
    state.timer = window.setTimeout(tick, 100);
  }

  function setRotating(on) {
    state.rotating = on;
    var button = root.querySelector("[data-action=rotate]");
    button.setAttribute("aria-pressed", on ? "true" : "false");
    root.querySelector("[data-third-title]").textContent = on ? t("js.mpr.rotating") : t("js.mpr.oblique");
    window.clearTimeout(state.timer);
    renderThird();
    if (on) { state.timer = window.setTimeout(tick, 100); }
  }

  function start(volume) {
    state.volume = volume;
    state.point = volume.shape.map(function (n) { return Math.floor((n - 1) / 2); });
    state.window = { center: volume.window.center, width: volume.window.width };
    var sp = volume.spacing;
    root.querySelector("[data-info]").textContent = t("js.mpr.info", {
      s: volume.shape[0], p: volume.shape[1], l: volume.shape[2],
      ds: sp[0].toFixed(2), dp: sp[1].toFixed(2), dl: sp[2].toFixed(2) });
    root.querySelector("[data-assumed]").hidden = !volume.assumed;
    root.setAttribute("data-assumed-volume", volume.assumed ? "true" : "false");
    PLANES.forEach(function (plane) {
      views[plane].slider.max = String(volume.shape[AXIS[plane]] - 1);
      wire(plane);
    });
    Object.keys(views).forEach(function (plane) {
      var img = views[plane].img;
      img.addEventListener("load", function () {
        fit(views[plane]);
        img.setAttribute("data-loaded", "true");
      });
      img.addEventListener("error", function () {
        img.setAttribute("data-loaded", "error");
        show(t("js.mpr.render_failed"));
      });
    });
    window.addEventListener("resize", function () { Object.keys(views).forEach(function (p) { fit(views[p]); }); });
    fillPresets(volume);
    root.querySelector("[data-slab]").addEventListener("input", function (e) {
      state.slab = +e.target.value;
      renderAll();
    });
    root.querySelector("[data-mip]").addEventListener("change", function (e) {
      state.mip = e.target.checked;
      renderAll();
    });
    root.querySelector("[data-action=rotate]").addEventListener("click", function () {
      setRotating(!state.rotating);
    });
    [["[data-angle-a]", "a"], ["[data-angle-b]", "b"]].forEach(function (pair) {
      var input = root.querySelector(pair[0]);
      state[pair[1]] = +input.value;
      input.addEventListener("input", function () {
        state[pair[1]] = +input.value;
        if (state.rotating) { setRotating(false); } else { renderThird(); }
      });
    });
    root.setAttribute("data-ready", "true");
    renderAll();
  }

  show(t("js.mpr.loading"));
  fetch(base + "/volume.json", { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    })
    .then(function (answer) {
      if (!answer.ok) {
        show(answer.body.detail || t("js.mpr.failed"));
        root.setAttribute("data-ready", "error");
        return;
      }
      show("");
      start(answer.body);
    })
    .catch(function () {
      show(t("js.mpr.failed"));
      root.setAttribute("data-ready", "error");
    });
}());
