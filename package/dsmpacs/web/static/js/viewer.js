/* DSM PACS viewer: frames are rendered on the server; this script only asks for
 * them (window, mask, frame), shows them and moves them around.
 * One Viewport per <section data-viewport>; two of them in compare mode, whose
 * frame scrolling can be linked. DICOM text goes in with textContent only. */
(function () {
  "use strict";

  var PREFETCH = 12;           // frames requested ahead while cine plays
  var CACHE_LIMIT = 160;       // Image objects kept per viewport
  var root = document.querySelector("[data-viewer]");
  if (!root) { return; }
  var base = root.getAttribute("data-root") || "";
  var wantedSeries = root.getAttribute("data-series") || "";
  var linkBox = root.querySelector("[data-link]");
  var viewports = [];

  function t(key, params) { return window.DSM ? window.DSM.t(key, params) : key; }
  function enc(s) { return encodeURIComponent(s); }
  function getJSON(url) {
    return window.DSM.fetch(url).then(function (r) {
      if (!r.ok) { throw new Error(r.status + " " + url); }
      return r.json();
    });
  }

  function Viewport(section) {
    var self = this;
    this.el = section;
    this.study = section.getAttribute("data-study");
    this.q = function (sel) { return section.querySelector(sel); };
    this.img = this.q("[data-image]");
    this.stage = this.q("[data-stage]");
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
    this.images = [];          // [{sop, frame, frames}] of the current series
    this.index = 0;
    this.info = {};            // per SOP Instance UID: presets, frame rate, default window
    this.window = null;        // explicit {center, width}; null = the server's default
    this.shownWindow = null;   // the window of the frame on screen (for dragging)
    this.zoom = 1; this.panX = 0; this.panY = 0;
    this.tool = "window";
    this.timer = null;
    this.cache = new Map();
    this.loading = null; this.dirty = false;

    this.slider.addEventListener("input", function () { self.go(parseInt(self.slider.value, 10), true); });
    this.playBtn.addEventListener("click", function () { self.playing() ? self.pause() : self.play(); });
    this.presets.addEventListener("change", function () { self.applyPreset(self.presets.value); });
    this.subtractBox.addEventListener("change", function () { self.windowChanged(null); });
    this.maskInput.addEventListener("change", function () { if (self.subtractBox.checked) { self.windowChanged(null); } });
    section.querySelectorAll("[data-tool]").forEach(function (b) {
      b.addEventListener("click", function () { self.setTool(b.getAttribute("data-tool")); });
    });
    this.q("[data-action=zoom-in]").addEventListener("click", function () { self.setZoom(self.zoom * 1.25); });
    this.q("[data-action=zoom-out]").addEventListener("click", function () { self.setZoom(self.zoom / 1.25); });
    this.q("[data-action=reset]").addEventListener("click", function () {
      self.zoom = 1; self.panX = 0; self.panY = 0; self.transform(); self.windowChanged(null);
    });
    this.stage.addEventListener("wheel", function (e) {
      e.preventDefault();
      if (e.ctrlKey) { self.setZoom(self.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)); return; }
      self.go(self.index + (e.deltaY > 0 ? 1 : -1), true);
    }, { passive: false });
    this.bindDrag();
  }

  Viewport.prototype.load = function () {
    var self = this;
    return getJSON(base + "/viewer/studies/" + enc(this.study) + ".json").then(function (data) {
      self.data = data;
      var list = self.q("[data-series-list]");
      data.series.forEach(function (s) {
        var li = document.createElement("li");
        var button = document.createElement("button");
        button.type = "button";
        button.setAttribute("data-series", s.uid);
        var thumb = document.createElement("img");
        thumb.src = s.thumbnail; thumb.alt = ""; thumb.loading = "lazy"; thumb.width = 56; thumb.height = 56;
        var label = document.createElement("span");
        label.textContent = [s.number === null ? "" : "#" + s.number, s.modality, s.description].join(" ").trim();
        var count = document.createElement("small");
        count.textContent = t("js.viewer.frames", { count: s.frames });
        button.appendChild(thumb); button.appendChild(label); button.appendChild(count);
        button.addEventListener("click", function () { self.selectSeries(s); });
        li.appendChild(button);
        list.appendChild(li);
      });
      var first = data.series.filter(function (s) { return s.uid === wantedSeries; })[0] ||
        data.series.filter(function (s) { return s.frames > 0; })[0];
      if (first) { return self.selectSeries(first); }
      self.say(t("js.viewer.no_images"));
    }).catch(function () { self.say(t("js.viewer.load_failed")); });
  };

  Viewport.prototype.say = function (text) {
    this.message.textContent = text || "";
    this.message.hidden = !text;
  };

  Viewport.prototype.selectSeries = function (series) {
    var self = this;
    this.pause();
    this.series = series;
    this.el.querySelectorAll("[data-series-list] button").forEach(function (b) {
      b.setAttribute("aria-current", b.getAttribute("data-series") === series.uid ? "true" : "false");
    });
    this.images = [];
    series.instances.forEach(function (inst) {
      for (var f = 0; f < inst.frames; f++) { self.images.push({ sop: inst.uid, frame: f, frames: inst.frames }); }
    });
    this.cache.clear();
    this.window = null;
    this.subtractBox.checked = false;
    this.dsa.hidden = !series.subtraction;
    this.slider.max = String(Math.max(0, this.images.length - 1));
    if (!this.images.length) { this.say(t("js.viewer.no_images")); return Promise.resolve(); }
    this.say("");
    var start = this.images.length > 1 && series.instances.length === 1 ? 0 : Math.floor(this.images.length / 2);
    this.index = start;
    return this.instanceInfo(this.images[start].sop).then(function () { self.go(start, false); });
  };

  Viewport.prototype.instanceInfo = function (sop, frame, mask) {
    var self = this;
    var key = sop + "|" + (mask === undefined ? "" : frame + "|" + mask);
    if (this.info[key]) { return Promise.resolve(this.info[key]); }
    var url = base + "/viewer/info/" + enc(this.study) + "/" + enc(this.series.uid) + "/" + enc(sop) + ".json";
    if (mask !== undefined) { url += "?frame=" + frame + "&mask=" + mask; }
    return getJSON(url).then(function (info) {
      self.info[key] = info;
      if (mask === undefined) { self.showInfo(info); }
      return info;
    });
  };

  Viewport.prototype.showInfo = function (info) {
    var self = this;
    this.fps = info.frame_rate || 15;
    this.fpsOut.textContent = info.frames > 1 ? t("js.viewer.fps", { fps: Math.round(this.fps * 10) / 10 }) : "";
    this.presets.textContent = "";
    var def = document.createElement("option");
    def.value = ""; def.textContent = t("js.viewer.preset_default");
    this.presets.appendChild(def);
    (info.presets || []).forEach(function (p, i) {
      var o = document.createElement("option");
      o.value = String(i);
      o.textContent = (p.name ? p.name + " " : "") + "C " + p.center + " / W " + p.width;
      self.presets.appendChild(o);
    });
    this.presets.hidden = !info.grey;
    this.maskInput.max = String(info.frames || 1);
    if (info.window) { this.setShownWindow(info.window); }
  };

  Viewport.prototype.applyPreset = function (value) {
    var info = this.info[this.current().sop + "|"];
    var preset = info && info.presets && info.presets[parseInt(value, 10)];
    this.windowChanged(preset ? { center: preset.center, width: preset.width } : null);
  };

  Viewport.prototype.current = function () { return this.images[this.index]; };

  Viewport.prototype.maskFrame = function (image) {
    if (!this.subtractBox.checked || !this.series || !this.series.subtraction) { return null; }
    var m = parseInt(this.maskInput.value, 10);
    if (isNaN(m)) { m = 1; }
    return Math.min(Math.max(m, 1), image.frames) - 1;
  };

  Viewport.prototype.url = function (i) {
    var image = this.images[i];
    var params = [];
    if (this.window) { params.push("wc=" + this.window.center, "ww=" + this.window.width); }
    var mask = this.maskFrame(image);
    if (mask !== null) { params.push("mask=" + mask); }
    return base + "/render/" + enc(this.study) + "/" + enc(this.series.uid) + "/" + enc(image.sop) + "/" +
      image.frame + ".png" + (params.length ? "?" + params.join("&") : "");
  };

  Viewport.prototype.fetchImage = function (i) {
    var url = this.url(i);
    var img = this.cache.get(url);
    if (!img) {
      img = new Image();
      img.decoding = "async";
      img.src = url;
      this.cache.set(url, img);
      if (this.cache.size > CACHE_LIMIT) { this.cache.delete(this.cache.keys().next().value); }
    }
    return img;
  };

  /* Show image i; ``user`` is true when the user moved (then linked viewports follow). */
  Viewport.prototype.go = function (i, user) {
    if (!this.images.length) { return; }
    i = Math.min(Math.max(i, 0), this.images.length - 1);
    var previous = this.current();
    this.index = i;
    this.slider.value = String(i);
    this.indexOut.textContent = (i + 1) + " / " + this.images.length;
    this.el.setAttribute("data-index", String(i));
    if (previous && previous.sop !== this.images[i].sop) { this.instanceInfo(this.images[i].sop); }
    this.draw();
    if (user && linkBox && linkBox.checked) {
      var me = this;
      viewports.forEach(function (v) { if (v !== me) { v.go(i, false); } });
    }
  };

  Viewport.prototype.draw = function () {
    var self = this;
    if (this.loading) { this.dirty = true; return; }
    var url = this.url(this.index);
    var img = this.fetchImage(this.index);
    var finish = function (ok) {
      self.loading = null;
      if (ok) {
        self.img.src = url;
        self.img.setAttribute("data-src", url);
        self.say("");
      } else {
        self.cache.delete(url);
        self.say(t("js.viewer.render_failed"));
      }
      if (self.dirty) { self.dirty = false; self.draw(); }
    };
    if (img.complete && img.naturalWidth) { finish(true); return; }
    this.loading = url;
    img.addEventListener("load", function () { finish(true); }, { once: true });
    img.addEventListener("error", function () { finish(false); }, { once: true });
  };

  Viewport.prototype.setShownWindow = function (w) {
    this.shownWindow = { center: w.center, width: w.width };
    this.windowOut.textContent = "C " + Math.round(w.center) + " / W " + Math.round(w.width);
  };

  Viewport.prototype.windowChanged = function (w) {
    var self = this;
    this.window = w;
    this.cache.clear();
    if (w) { this.setShownWindow(w); this.draw(); return; }
    var image = this.current();
    if (!image) { return; }
    var mask = this.maskFrame(image);
    this.instanceInfo(image.sop, image.frame, mask === null ? undefined : mask).then(function (info) {
      if (info.window) { self.setShownWindow(info.window); }
    });
    this.draw();
  };

  Viewport.prototype.setTool = function (tool) {
    this.tool = tool;
    this.el.querySelectorAll("[data-tool]").forEach(function (b) {
      b.setAttribute("aria-pressed", b.getAttribute("data-tool") === tool ? "true" : "false");
    });
  };

  Viewport.prototype.setZoom = function (z) {
    this.zoom = Math.min(Math.max(z, 0.2), 16);
    this.transform();
  };

  Viewport.prototype.transform = function () {
    // CSSOM, not a style attribute: allowed under the page's Content-Security-Policy.
    this.img.style.transform = "translate(" + this.panX + "px," + this.panY + "px) scale(" + this.zoom + ")";
    this.el.setAttribute("data-zoom", String(Math.round(this.zoom * 100) / 100));
  };

  Viewport.prototype.bindDrag = function () {
    var self = this;
    var drag = null;
    this.stage.addEventListener("pointerdown", function (e) {
      if (!self.images.length) { return; }
      drag = { x: e.clientX, y: e.clientY, panX: self.panX, panY: self.panY,
               window: self.shownWindow ? { center: self.shownWindow.center, width: self.shownWindow.width } : null,
               tool: e.button === 1 || e.shiftKey ? "pan" : self.tool };
      self.stage.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    this.stage.addEventListener("pointermove", function (e) {
      if (!drag) { return; }
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.tool === "pan") {
        self.panX = drag.panX + dx; self.panY = drag.panY + dy; self.transform();
      } else if (drag.window) {
        // Right: wider (less contrast); down: higher centre (darker). Scaled to the window.
        var step = Math.max(drag.window.width / 256, 0.05);
        var width = Math.max(1, drag.window.width + dx * step * 2);
        var center = drag.window.center + dy * step;
        self.windowChanged({ center: Math.round(center * 100) / 100, width: Math.round(width * 100) / 100 });
      }
    });
    var end = function () { drag = null; };
    this.stage.addEventListener("pointerup", end);
    this.stage.addEventListener("pointercancel", end);
  };

  Viewport.prototype.playing = function () { return this.timer !== null; };

  Viewport.prototype.play = function () {
    var self = this;
    if (this.images.length < 2 || this.timer) { return; }
    this.playBtn.textContent = t("js.viewer.pause");
    this.playBtn.setAttribute("aria-pressed", "true");
    this.el.setAttribute("data-playing", "true");
    var interval = 1000 / (this.fps || 15);
    this.timer = window.setInterval(function () {
      var next = (self.index + 1) % self.images.length;
      for (var k = 1; k <= PREFETCH; k++) { self.fetchImage((self.index + k) % self.images.length); }
      var img = self.fetchImage(next);
      // Wait for a frame that is not there yet instead of showing a blank.
      if (img.complete && img.naturalWidth) { self.go(next, true); }
    }, interval);
  };

  Viewport.prototype.pause = function () {
    if (this.timer) { window.clearInterval(this.timer); }
    this.timer = null;
    this.playBtn.textContent = t("js.viewer.play");
    this.playBtn.setAttribute("aria-pressed", "false");
    this.el.setAttribute("data-playing", "false");
  };

  document.addEventListener("keydown", function (e) {
    var v = viewports[0];
    if (!v || /^(INPUT|SELECT|TEXTAREA)$/.test((e.target && e.target.tagName) || "")) { return; }
    if (e.key === "ArrowRight" || e.key === "ArrowDown") { v.go(v.index + 1, true); e.preventDefault(); }
    if (e.key === "ArrowLeft" || e.key === "ArrowUp") { v.go(v.index - 1, true); e.preventDefault(); }
    if (e.key === " ") { if (v.playing()) { v.pause(); } else { v.play(); } e.preventDefault(); }
  });

  root.querySelectorAll("[data-viewport]").forEach(function (section) {
    var v = new Viewport(section);
    viewports.push(v);
    v.load();
  });
  window.DSMViewer = { viewports: viewports };
}());
