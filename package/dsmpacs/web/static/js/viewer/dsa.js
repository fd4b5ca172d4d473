/* dsa.js: feature module (stub; its owner fills it in). main.js calls attach(vp)
 * once per Viewport. `keys` lists keyboard shortcuts the module adds:
 * [{key: "x", label: "js.viewer.key_...", run(vp, event)}]; main.js shows them in
 * the help dialog and calls run() on the active viewport. */

export const keys = [];

export function attach(viewport) {}  // eslint-disable-line no-unused-vars
