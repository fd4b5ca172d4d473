/* Input on a viewport's stage.
 * - Mouse and pen: pointer events go to the active tool (vp.registerTool); the
 *   middle button or Shift pans. The wheel steps frames, Ctrl+wheel zooms.
 * - Touch (touch events, not the tools): pinch zooms around the fingers, two
 *   fingers pan, a one-finger horizontal swipe steps frames, a tap plays or
 *   pauses. A vertical swipe is left to the browser (touch-action: pan-y in the
 *   CSS) so the page scrolls. Only in window mode (a toolbar toggle, the
 *   "window-mode" class on the viewer) does one finger change the window. */

const TAP_MOVE = 10;        // px a finger may move and still be a tap
const TAP_MS = 350;
const SWIPE_STEP = 16;      // px of horizontal swipe per frame

export function bindInput(vp, host) {
  const stage = vp.stage;

  /* ---- mouse / pen ---- */
  let active = null;
  stage.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "touch" || !vp.images.length) { return; }
    const name = e.button === 1 || e.shiftKey ? "pan" : vp.tool;
    const tool = vp.tools[name];
    if (!tool) { return; }
    active = tool;
    stage.setPointerCapture(e.pointerId);
    e.preventDefault();
    if (tool.down) { tool.down(vp.clientToImage(e.clientX, e.clientY), e); }
  });
  stage.addEventListener("pointermove", (e) => {
    if (!active || e.pointerType === "touch") { return; }
    if (active.move) { active.move(vp.clientToImage(e.clientX, e.clientY), e); }
  });
  stage.addEventListener("pointerup", (e) => {
    if (!active || e.pointerType === "touch") { return; }
    const tool = active; active = null;
    if (tool.up) { tool.up(vp.clientToImage(e.clientX, e.clientY), e); }
  });
  stage.addEventListener("pointercancel", () => {
    if (active && active.cancel) { active.cancel(); }
    active = null;
  });

  stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) { vp.zoomAt(vp.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1), e.clientX, e.clientY); return; }
    vp.step(e.deltaY > 0 ? 1 : -1);
  }, { passive: false });

  /* ---- touch ---- */
  let g = null;             // the gesture under way
  const mid = (a, b) => ({ x: (a.clientX + b.clientX) / 2, y: (a.clientY + b.clientY) / 2 });
  const dist = (a, b) => Math.hypot(a.clientX - b.clientX, a.clientY - b.clientY) || 1;

  stage.addEventListener("touchstart", (e) => {
    if (!vp.images.length) { return; }
    const ts = e.touches;
    if (ts.length === 1) {
      g = { kind: "one", x: ts[0].clientX, y: ts[0].clientY, t: Date.now(), axis: null, moved: false,
            index: vp.index, window: vp.shownWindow && { ...vp.shownWindow } };
    } else if (ts.length === 2) {
      const m = mid(ts[0], ts[1]);
      g = { kind: "two", d: dist(ts[0], ts[1]), zoom: vp.zoom, m: m, pt: vp.clientToImage(m.x, m.y), moved: true };
      e.preventDefault();
    }
  }, { passive: false });

  stage.addEventListener("touchmove", (e) => {
    if (!g) { return; }
    const ts = e.touches;
    if (g.kind === "two" && ts.length >= 2) {
      e.preventDefault();
      const m = mid(ts[0], ts[1]);
      // Zoom by the change of finger distance, keeping the image point that was
      // under the fingers' midpoint under the new midpoint (pans as well).
      vp.zoom = Math.min(Math.max(g.zoom * dist(ts[0], ts[1]) / g.d, 0.2), 16);
      vp.transform(true);
      const now = vp.imageToClient(g.pt.x, g.pt.y);
      vp.setPan(vp.panX + m.x - now.x, vp.panY + m.y - now.y);
      return;
    }
    if (g.kind !== "one" || ts.length !== 1) { return; }
    const dx = ts[0].clientX - g.x, dy = ts[0].clientY - g.y;
    if (!g.moved && Math.hypot(dx, dy) > TAP_MOVE) {
      g.moved = true;
      g.axis = host.windowMode ? "window" : (Math.abs(dx) > Math.abs(dy) ? "x" : "y");
    }
    if (g.axis === "window") {
      e.preventDefault();
      if (g.window) { vp.dragWindow(g.window, dx, dy); }
    } else if (g.axis === "x") {
      if (e.cancelable) { e.preventDefault(); }
      const target = g.index + Math.trunc(dx / SWIPE_STEP);
      if (target !== vp.index) { vp.go(target, true); }
    }
    // axis "y": nothing, and no preventDefault: the browser scrolls the page.
  }, { passive: false });

  const end = (e) => {
    if (!g) { return; }
    if (g.kind === "one" && !g.moved && e.type === "touchend" && Date.now() - g.t < TAP_MS) {
      if (e.cancelable) { e.preventDefault(); }   // no synthetic mouse click after a tap
      host.activate(vp);
      vp.togglePlay();
    }
    if (e.touches.length === 0) { g = null; }
  };
  stage.addEventListener("touchend", end, { passive: false });
  stage.addEventListener("touchcancel", end);
}
