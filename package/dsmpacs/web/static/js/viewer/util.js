/* Small helpers shared by the viewer modules: translation, fetching JSON, the
 * application root (the app may be mounted under a prefix). */

export const root = document.querySelector("[data-viewer]");
export const base = root ? root.getAttribute("data-root") || "" : "";

export function t(key, params) { return window.DSM ? window.DSM.t(key, params) : key; }
export function enc(s) { return encodeURIComponent(s); }

export function getJSON(url) {
  return window.DSM.fetch(url).then((r) => {
    if (!r.ok) { throw new Error(r.status + " " + url); }
    return r.json();
  });
}

/* A CustomEvent on vp.el whose detail is the viewport (the contract other modules rely on). */
export function emit(vp, name) {
  vp.el.dispatchEvent(new CustomEvent(name, { detail: vp }));
}
