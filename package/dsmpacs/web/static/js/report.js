/* The report editor (web/reports/, templates/reports/_editor.html): on its own page
 * and in the viewer's side panel. It autosaves the draft (PUT, idempotent, debounced),
 * inserts the user's measurements and key images, signs with the TOTP code or the
 * password, amends with a reason, and lists the versions. Report text is data: it
 * reaches the page through textContent and form values only. */
(function () {
  "use strict";
  const t = (key, params) => window.DSM.t(key, params);
  const SAVE_DELAY_MS = 700;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = text; }
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }

  class Editor {
    constructor(root) {
      this.root = root;
      this.q = (sel) => root.querySelector(sel);
      this.url = root.getAttribute("data-url");
      this.base = root.getAttribute("data-base");
      this.data = null;
      this.measurements = [];
      this.keyImages = [];
      this.timer = null;
      this.saving = Promise.resolve();
      this.dirty = false;
      this.wire();
    }

    wire() {
      const changed = () => this.scheduleSave();
      this.q("[data-report-findings]").addEventListener("input", changed);
      this.q("[data-report-impression]").addEventListener("input", changed);
      this.q("[data-report-language]").addEventListener("change", () => { this.fillTemplates(); changed(); });
      this.q("[data-report-template]").addEventListener("change", changed);
      this.q("[data-action=apply-template]").addEventListener("click", () => this.applyTemplate());
      this.q("[data-action=key-current]").addEventListener("click", () => this.addCurrentImage());
      this.q("[data-report-sign]").addEventListener("submit", (e) => { e.preventDefault(); this.sign(false); });
      this.q("[data-action=sign-preliminary]").addEventListener("click", () => this.sign(true));
      this.q("[data-report-amend]").addEventListener("submit", (e) => { e.preventDefault(); this.amend(); });
      if (window.DSMViewer) { this.q("[data-action=key-current]").hidden = false; }
    }

    load() {
      return window.DSM.fetch(this.url).then((r) => r.json()).then((data) => {
        this.data = data;
        this.show(data, true);
      });
    }

    error(message) {
      const out = this.q("[data-report-error]");
      out.textContent = message || "";
      out.hidden = !message;
    }

    status(key) { this.q("[data-report-status]").textContent = key ? t(key) : ""; }

    language() { return this.q("[data-report-language]").value; }

    fillTemplates() {
      const select = this.q("[data-report-template]");
      const keep = select.value;
      [...select.querySelectorAll("option[value]:not([value=''])")].forEach((o) => o.remove());
      this.data.templates.forEach((tpl) => {
        select.appendChild(el("option", tpl.title[this.language()] || tpl.title.en, { value: tpl.id }));
      });
      select.value = keep;
    }

    /* The editor shows a report (or none yet): state, fields, choices, history. */
    show(data, fromServer) {
      if (data.templates) { this.data.templates = data.templates; }
      const report = data.report;
      const current = report ? report.current : null;
      // A preliminary stays editable: saving opens the next version, signing makes it final.
      const editable = data.can_write && (!current || current.state === "draft" || current.state === "preliminary");
      const wasFinal = !!report && report.history.some((v) => v.state === "final" || v.state === "amended");
      if (fromServer) {
        this.q("[data-report-language]").value = current ? current.language : (data.language || this.data.language);
        this.fillTemplates();
        this.q("[data-report-template]").value = current ? current.template : "";
        this.q("[data-report-findings]").value = current ? current.findings : "";
        this.q("[data-report-impression]").value = current ? current.impression : "";
        this.measurements = current ? current.measurements.slice() : [];
        this.keyImages = current ? current.key_images.slice() : [];
      }
      this.root.setAttribute("data-state", report ? report.state : "none");
      this.root.setAttribute("data-version", current ? String(current.version) : "0");
      this.root.setAttribute("data-editable", editable ? "true" : "false");
      this.q("[data-report-state]").textContent = report
        ? t("js.report.state_" + (current.state === "draft" && report.state === "preliminary" ? "final_draft"
          : current.state === "draft" && report.state !== "draft" ? "amending" : report.state),
          { version: current.version })
        : t("js.report.state_none");
      ["[data-report-findings]", "[data-report-impression]", "[data-report-template]",
        "[data-report-language]"].forEach((s) => { this.q(s).disabled = !editable; });
      this.q("[data-action=apply-template]").hidden = !editable;
      this.q("[data-report-sign]").hidden = !editable;
      // Issued once per version: after a preliminary, edit (a new draft) to issue another.
      this.q("[data-action=sign-preliminary]").hidden = !editable || wasFinal || (!!current && current.state !== "draft");
      this.q("[data-sign-code-label]").hidden = !data.needs_code;
      this.q("[data-sign-password-label]").hidden = !!data.needs_code;
      this.q("[data-report-amend]").hidden = !(data.can_write && current && wasFinal && current.state !== "draft");
      const amending = this.q("[data-report-amending]");
      amending.hidden = !(current && current.state === "draft" && current.amendment_reason);
      amending.textContent = current && current.amendment_reason
        ? t("js.report.amending", { version: current.version, reason: current.amendment_reason }) : "";
      this.showChoices(editable);
      this.showHistory(report, data.verified || []);
    }

    ref(item) { return item.series + "|" + item.sop + "|" + item.frame; }

    frameText(item) { return t("js.report.frame", { frame: item.frame + 1 }); }

    showChoices(editable) {
      const measureChoices = this.q("[data-report-measurement-choices]");
      const keyChoices = this.q("[data-report-key-choices]");
      measureChoices.replaceChildren();
      keyChoices.replaceChildren();
      const inserted = new Set(this.measurements.map((m) => m.id));
      const keys = new Set(this.keyImages.map((k) => this.ref(k)));
      if (editable) {
        (this.data.measurements || []).forEach((m) => {
          if (inserted.has(m.id)) { return; }
          const li = el("li");
          const button = el("button", t("js.report.insert"), { type: "button", "data-insert-measurement": String(m.id) });
          button.addEventListener("click", () => this.insertMeasurement(m));
          li.append(el("span", this.measureText(m)), button);
          measureChoices.appendChild(li);
        });
        const frames = new Map();
        (this.data.measurements || []).forEach((m) => { frames.set(this.ref(m), m); });
        frames.forEach((m, key) => {
          if (keys.has(key)) { return; }
          const li = el("li");
          const button = el("button", t("js.report.add"), { type: "button", "data-add-key-image": key });
          button.addEventListener("click", () => this.addKeyImage({ series: m.series, sop: m.sop, frame: m.frame }));
          li.append(el("span", this.frameText(m)), button);
          keyChoices.appendChild(li);
        });
      }
      const chosen = this.q("[data-report-measurements]");
      chosen.replaceChildren(...this.measurements.map((m) => el("li", m.label, { "data-measurement": String(m.id) })));
      const chosenKeys = this.q("[data-report-key-images]");
      chosenKeys.replaceChildren(...this.keyImages.map((k) => {
        const li = el("li", null, { "data-key-image": this.ref(k) });
        li.appendChild(el("span", this.frameText(k)));
        if (editable) {
          const remove = el("button", t("js.report.remove"), { type: "button" });
          remove.addEventListener("click", () => {
            this.keyImages = this.keyImages.filter((x) => this.ref(x) !== this.ref(k));
            this.showChoices(true);
            this.scheduleSave();
          });
          li.appendChild(remove);
        }
        return li;
      }));
    }

    /* A measurement as a line of the report, named in the report's language. */
    measureText(m) {
      const names = (this.data.kinds || {})[this.language()] || {};
      return (names[m.kind] || t("js.report.kind_" + m.kind)) + ": " + m.label;
    }

    insertMeasurement(m) {
      const area = this.q("[data-report-findings]");
      const line = this.measureText(m);
      area.value = area.value ? area.value.replace(/\s*$/, "") + "\n" + line : line;
      this.measurements.push({ id: m.id, kind: m.kind, label: this.measureText(m), series: m.series, sop: m.sop, frame: m.frame });
      this.showChoices(true);
      this.scheduleSave();
    }

    addKeyImage(ref) {
      if (this.keyImages.some((k) => this.ref(k) === this.ref(ref))) { return; }
      this.keyImages.push(ref);
      this.showChoices(true);
      this.scheduleSave();
    }

    addCurrentImage() {
      const viewer = window.DSMViewer;
      const vp = viewer && ((viewer.host && viewer.host.active) || viewer.viewports[0]);
      const image = vp && vp.current && vp.current();
      if (image && vp.series) { this.addKeyImage({ series: vp.series.uid, sop: image.sop, frame: image.frame }); }
    }

    applyTemplate() {
      const tpl = this.data.templates.find((x) => x.id === this.q("[data-report-template]").value);
      if (!tpl) { return; }
      const lang = this.language();
      const findings = this.q("[data-report-findings]");
      const impression = this.q("[data-report-impression]");
      if ((findings.value.trim() || impression.value.trim()) && !window.confirm(t("js.report.replace_text"))) { return; }
      findings.value = tpl.findings[lang] || tpl.findings.en;
      impression.value = tpl.impression[lang] || tpl.impression.en;
      this.scheduleSave();
    }

    content() {
      return {
        template: this.q("[data-report-template]").value, language: this.language(),
        findings: this.q("[data-report-findings]").value, impression: this.q("[data-report-impression]").value,
        measurements: this.measurements, key_images: this.keyImages,
      };
    }

    scheduleSave() {
      this.dirty = true;
      this.status("js.report.unsaved");
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.save(), SAVE_DELAY_MS);
    }

    /* Saves run one after another; the last one sends the newest text. */
    save() {
      clearTimeout(this.timer);
      if (!this.dirty) { return this.saving; }
      this.dirty = false;
      this.root.setAttribute("data-saving", "true");
      this.status("js.report.saving");
      this.saving = this.saving.then(() => window.DSM.fetch(this.base + "/draft", {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(this.content()),
      })).then((r) => r.json().then((body) => ({ ok: r.ok, body: body }))).then(({ ok, body }) => {
        if (!ok) { throw new Error(body.message || body.error || "save"); }
        this.data.report = body.report;
        this.show(Object.assign({}, this.data, body), false);
        this.error("");
        this.status(this.dirty ? "js.report.unsaved" : "js.report.saved");
      }).catch((e) => {
        this.error(t("js.report.save_failed", { reason: e.message }));
        this.status("");
      }).finally(() => {
        const saves = Number(this.root.getAttribute("data-saves")) + 1;
        this.root.setAttribute("data-saves", String(saves));
        this.root.setAttribute("data-saving", this.dirty ? "true" : "false");
        if (this.dirty) { this.timer = setTimeout(() => this.save(), SAVE_DELAY_MS); }
      });
      return this.saving;
    }

    post(path, body) {
      return window.DSM.fetch(this.base + path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      }).then((r) => r.json().then((data) => ({ status: r.status, ok: r.ok, data: data })));
    }

    sign(preliminary) {
      const code = this.q("[data-sign-code]");
      const password = this.q("[data-sign-password]");
      const button = this.q(preliminary ? "[data-action=sign-preliminary]" : "[data-action=sign]");
      button.disabled = true;
      this.status("js.report.signing");
      this.save().then(() => this.post("/sign", { code: code.value, password: password.value,
        preliminary: !!preliminary })).then((res) => {
        code.value = "";
        password.value = "";
        if (!res.ok) {
          this.status("");
          const why = res.data.error === "reauth" ? t("js.report.reauth_" + res.data.reason) : res.data.message;
          this.error(t("js.report.sign_failed", { reason: why }));
          return;
        }
        this.error("");
        this.data.report = res.data.report;
        this.show(Object.assign({}, this.data, res.data), true);
        this.status(preliminary ? "js.report.issued_preliminary" : "js.report.signed");
      }).finally(() => { button.disabled = false; });
    }

    amend() {
      const reason = this.q("[data-amend-reason]");
      this.post("/amend", { reason: reason.value }).then((res) => {
        if (!res.ok) { this.error(res.data.message || res.data.error); return; }
        reason.value = "";
        this.error("");
        this.data.report = res.data.report;
        this.show(Object.assign({}, this.data, res.data), true);
      });
    }

    showHistory(report, verified) {
      const list = this.q("[data-report-history]");
      list.replaceChildren();
      if (!report) { return; }
      report.history.slice().reverse().forEach((v) => {
        const li = el("li", null, { "data-history-version": String(v.version), "data-history-state": v.state });
        const head = el("p", null, { class: "report-version-head" });
        head.appendChild(el("strong", t("js.report.version", { version: v.version })));
        head.appendChild(el("span", " · " + t("js.report.state_" + v.state, { version: v.version })));
        if (v.signer) {
          head.appendChild(el("span", " · " + t(v.state === "preliminary" ? "js.report.issued_by" : "js.report.signed_by", { signer: v.signer, at: v.signed_at.replace("T", " ").replace("Z", " UTC") })));
        }
        li.appendChild(head);
        if (v.amendment_reason) {
          li.appendChild(el("p", t("js.report.reason", { reason: v.amendment_reason }), { "data-history-reason": "" }));
        }
        if (v.content_hash) {
          li.appendChild(el("p", "SHA-256 " + v.content_hash, { class: "report-hash", "data-history-hash": "" }));
        }
        if (v.pdf) {
          li.appendChild(el("a", t("js.report.pdf"), { href: this.base + "/v" + v.version + ".pdf",
            target: "_blank", rel: "noopener", "data-history-pdf": "" }));
        }
        const details = el("details");
        details.appendChild(el("summary", t("js.report.content")));
        details.appendChild(el("pre", v.findings, { "data-history-findings": "" }));
        details.appendChild(el("pre", v.impression, { "data-history-impression": "" }));
        li.appendChild(details);
        list.appendChild(li);
      });
      // verified: one flag per signed version, oldest first (the hash recomputed on the server).
      report.history.filter((v) => v.content_hash).forEach((v, i) => {
        const item = list.querySelector("[data-history-version='" + v.version + "']");
        if (item) { item.setAttribute("data-verified", verified[i] ? "true" : "false"); }
      });
    }
  }

  function mount(root) {
    if (!root || root.dsmEditor) { return root && root.dsmEditor; }
    root.dsmEditor = new Editor(root);
    root.dsmEditor.load();
    return root.dsmEditor;
  }

  /* In the viewer: the Report link opens the side panel on wide screens and the
   * report page on narrow ones (where a panel would leave no room for the image). */
  function wireViewer() {
    const link = document.querySelector("[data-action=report]");
    const panel = document.querySelector("[data-report-panel]");
    if (!link || !panel) { return; }
    link.addEventListener("click", (event) => {
      if (!window.matchMedia("(min-width: 1100px)").matches) { return; }
      event.preventDefault();
      panel.hidden = !panel.hidden;
      link.setAttribute("aria-pressed", panel.hidden ? "false" : "true");
      if (!panel.hidden) { mount(panel.querySelector("[data-report-editor]")); }
      window.dispatchEvent(new Event("resize"));       // the viewports take the new width
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.querySelector(".report-page [data-report-editor]");
    if (page) { mount(page); }
    wireViewer();
  });
  window.DSMReport = { mount: mount };
})();
