/* DSM PACS: behaviour shared by every page. Loaded from the server (no CDN),
 * never inline: the Content-Security-Policy allows script from 'self' only.
 * DICOM text is data: put it in the page with textContent, never innerHTML. */
(function () {
  "use strict";

  var strings = {};
  try {
    var block = document.getElementById("i18n-strings");
    if (block) { strings = JSON.parse(block.textContent || "{}"); }
  } catch (e) { strings = {}; }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  /* The CLDR plural category of a number in the page's language, as the server's
   * Babel picks it (Intl.PluralRules carries the same CLDR rules). */
  var plurals = null;
  function pluralCategory(count) {
    if (typeof count !== "number") { count = Number(count); }
    if (!isFinite(count)) { return "other"; }
    try {
      plurals = plurals || new Intl.PluralRules(document.documentElement.lang || "en");
      return plurals.select(count);
    } catch (e) { return "other"; }
  }

  /* Translate a js.* key; {name} placeholders are filled from params. A text with
   * plural forms ({"one": ..., "other": ...}) takes the form of params.count. */
  function t(key, params) {
    var text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (text && typeof text === "object") {
      var category = params ? pluralCategory(params.count) : "other";
      text = Object.prototype.hasOwnProperty.call(text, category) ? text[category] : text.other;
    }
    if (params) {
      text = text.replace(/\{(\w+)\}/g, function (m, name) {
        return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : m;
      });
    }
    return text;
  }

  /* fetch() with the session cookie and, for state-changing methods, the CSRF header. */
  function dsmFetch(url, options) {
    options = options || {};
    var method = (options.method || "GET").toUpperCase();
    var headers = new Headers(options.headers || {});
    if (["GET", "HEAD", "OPTIONS"].indexOf(method) < 0) { headers.set("X-CSRF-Token", csrfToken()); }
    if (!headers.has("Accept")) { headers.set("Accept", "application/json"); }
    options.headers = headers;
    options.credentials = "same-origin";
    return fetch(url, options);
  }

  /* Forms with data-confirm ask first (remove a peer, a user...). */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  }, true);

  /* <select data-autosubmit> submits its form when changed. */
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) { el.form.submit(); }
  });

  /* The menu button on narrow screens. */
  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.querySelector("[data-nav-toggle]");
    var nav = document.getElementById("nav");
    if (toggle && nav) {
      toggle.addEventListener("click", function () {
        var open = nav.classList.toggle("open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
  });

  window.DSM = { t: t, fetch: dsmFetch, csrfToken: csrfToken, pluralCategory: pluralCategory };
}());
