// One plane view of the multiplanar viewer: tiles of the server's PlaneGeometry levels,
// fetched as blobs (so the bearer header goes), shown as <img> elements at level-0 plane
// coordinates under one CSS transform (pan and zoom), and a crosshair canvas on top.

import { getBlob } from "./api.js";

export const PLANES = ["axial", "coronal", "sagittal"];
const TILE = 256;
const MIN_ZOOM = 0.5;
const MAX_ZOOM = 32;
const WHEEL_STEP = 60;

/** Tile blobs by URL, least recently used dropped first (bounded count). */
class BlobCache {
  constructor(limit) {
    this.limit = limit;
    this.map = new Map();
  }

  get(url, load) {
    let hit = this.map.get(url);
    if (hit) {
      this.map.delete(url);
    } else {
      hit = load().catch((err) => {
        this.map.delete(url);
        throw err;
      });
    }
    this.map.set(url, hit);
    while (this.map.size > this.limit) this.map.delete(this.map.keys().next().value);
    return hit;
  }

  clear() {
    this.map.clear();
  }
}

export const tileCache = new BlobCache(600);

/** A PlaneGeometry level of the series document ({level, width, height, tile, tiles_x, ...}). */
export function normaliseLevel(g, i) {
  const tile = g.tile ?? TILE;
  return {
    level: g.level ?? i,
    width: g.width,
    height: g.height,
    tile,
    rows: g.tiles_y ?? Math.ceil(g.height / tile),
    cols: g.tiles_x ?? Math.ceil(g.width / tile),
    mmPerPx: g.mm_per_px ?? null,
  };
}

function loadImage(blob) {
  const img = new Image();
  const url = URL.createObjectURL(blob);
  img.src = url;
  img.decoding = "async";
  img.draggable = false;
  img.alt = "";
  return img.decode().then(
    () => {
      URL.revokeObjectURL(url);
      return img;
    },
    (err) => {
      URL.revokeObjectURL(url);
      throw err;
    },
  );
}

export class PlaneView {
  /**
   * @param {HTMLElement} section the view's element (data-plane = axial|coronal|sagittal)
   * @param {object} hooks onSlice(plane, index), onPoint(plane, point), onActivate(plane),
   *   onError(err), onBusy(err, waitS) (a 503, tried again), onTiles() (tiles shown),
 *   tileParams() -> {window, labels, opacity}
   */
  constructor(section, hooks) {
    this.el = section;
    this.plane = section.dataset.plane;
    this.hooks = hooks;
    this.viewport = section.querySelector(".viewport");
    this.layer = section.querySelector(".tiles");
    this.cross = section.querySelector(".cross");
    this.slider = section.querySelector(".slider");
    this.sliceLabel = section.querySelector(".slice");
    this.levelLabel = section.querySelector(".level");
    this.series = null;
    this.levels = [];
    this.slices = 0;
    this.index = 0;
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.crossAt = null; // [col, row] fractions of the plane image
    this.busy = false;
    this.pending = false;
    this.wheelAcc = 0;
    this.shownLevel = null;
    this.bind();
  }

  // -- setup ------------------------------------------------------------------------
  bind() {
    this.slider.addEventListener("input", () => this.hooks.onSlice(this.plane, Number(this.slider.value)));
    this.viewport.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    this.viewport.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.viewport.addEventListener("pointerenter", () => this.hooks.onActivate(this.plane));
    this.viewport.addEventListener("focus", () => this.hooks.onActivate(this.plane));
    new ResizeObserver(() => this.layout()).observe(this.viewport);
  }

  /** Show ``series`` (the /api/series/{id} document); slices start at ``index``. */
  open(series, index) {
    const plane = series.planes[this.plane];
    this.series = series;
    this.slices = plane.slices;
    this.levels = plane.levels.map(normaliseLevel).sort((a, b) => b.width - a.width);
    this.index = index;
    this.slider.max = String(this.slices - 1);
    this.layer.replaceChildren();
    this.shownLevel = null;
    this.reset(false);
  }

  get base() {
    return this.levels[0];
  }

  /** CSS px per level-0 plane px at zoom 1 (the whole plane fits the viewport). */
  fitScale() {
    const b = this.base;
    const w = this.viewport.clientWidth || 1;
    const h = this.viewport.clientHeight || 1;
    return Math.min(w / b.width, h / b.height);
  }

  scale() {
    return this.fitScale() * this.zoom;
  }

  reset(render = true) {
    if (!this.series) return;
    this.zoom = 1;
    this.centre();
    if (render) this.update();
  }

  centre() {
    const s = this.scale();
    this.pan = {
      x: (this.viewport.clientWidth - this.base.width * s) / 2,
      y: (this.viewport.clientHeight - this.base.height * s) / 2,
    };
  }

  layout() {
    if (!this.series) return;
    if (this.zoom === 1) this.centre();
    this.update();
  }

  // -- state changes ----------------------------------------------------------------
  setIndex(index) {
    const i = Math.max(0, Math.min(this.slices - 1, Math.round(index)));
    if (i === this.index && this.el.dataset.index === String(i)) return;
    this.index = i;
    this.update();
  }

  setCross(fractions) {
    this.crossAt = fractions;
    this.drawCross();
  }

  zoomBy(factor, cx, cy) {
    if (!this.series) return;
    const x = cx ?? this.viewport.clientWidth / 2;
    const y = cy ?? this.viewport.clientHeight / 2;
    const zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.zoom * factor));
    const f = zoom / this.zoom;
    this.zoom = zoom;
    this.pan = { x: x - (x - this.pan.x) * f, y: y - (y - this.pan.y) * f };
    this.update();
  }

  /** Redraw: the transform and crosshair now, the tiles once they are loaded. */
  update() {
    if (!this.series) return;
    this.sliceLabel.textContent = `${this.index + 1} / ${this.slices}`;
    this.sliceLabel.dataset.index = String(this.index);
    this.slider.value = String(this.index);
    const s = this.scale();
    this.layer.style.transform = `translate(${this.pan.x}px, ${this.pan.y}px) scale(${s})`;
    this.drawCross();
    this.requestTiles();
  }

  // -- tiles ------------------------------------------------------------------------
  /** The coarsest level that still has at least one level px per screen device px. */
  chooseLevel() {
    const want = this.base.width * this.scale() * (window.devicePixelRatio || 1);
    let chosen = this.levels[0];
    for (const lv of this.levels) if (lv.width >= want) chosen = lv;
    return chosen;
  }

  visibleTiles(lv) {
    const s = this.scale();
    const kx = this.base.width / lv.width;
    const ky = this.base.height / lv.height;
    const x0 = -this.pan.x / s;
    const y0 = -this.pan.y / s;
    const x1 = x0 + this.viewport.clientWidth / s;
    const y1 = y0 + this.viewport.clientHeight / s;
    const c0 = Math.max(0, Math.floor(x0 / kx / lv.tile));
    const c1 = Math.min(lv.cols - 1, Math.floor(x1 / kx / lv.tile));
    const r0 = Math.max(0, Math.floor(y0 / ky / lv.tile));
    const r1 = Math.min(lv.rows - 1, Math.floor(y1 / ky / lv.tile));
    const out = [];
    for (let ty = r0; ty <= r1; ty++) for (let tx = c0; tx <= c1; tx++) out.push({ ty, tx, kx, ky });
    return out;
  }

  tileURL(lv, ty, tx) {
    const id = encodeURIComponent(this.series.series_id);
    return `api/series/${id}/tiles/${this.plane}/${lv.level}/${this.index}/${ty}/${tx}.png`;
  }

  requestTiles() {
    if (this.busy) {
      this.pending = true;
      return;
    }
    this.busy = true;
    this.pending = false;
    this.el.dataset.state = "loading";
    this.loadTiles()
      .then(() => this.el.dataset.state === "ready" && this.hooks.onTiles())
      .catch((err) => this.hooks.onError(err))
      .finally(() => {
        this.busy = false;
        if (this.pending) this.requestTiles();
        else if (this.el.dataset.state === "loading") this.el.dataset.state = "error";
      });
  }

  async loadTiles() {
    const lv = this.chooseLevel();
    const params = this.hooks.tileParams();
    const query = new URLSearchParams({ volume: String(this.series.volume ?? 0), ...params });
    const key = `${this.index}|${lv.level}|${query}`;
    const wanted = this.visibleTiles(lv);
    const have = this.layer.dataset.key === key ? new Set(this.layer.dataset.tiles.split(" ")) : null;
    if (have && wanted.every((t) => have.has(`${t.ty},${t.tx}`))) {
      this.el.dataset.state = "ready";
      return;
    }
    const images = await Promise.all(
      wanted.map(async (t) => {
        const path = this.tileURL(lv, t.ty, t.tx);
        const blob = await tileCache.get(`${path}?${query}`, () =>
          getBlob(path, Object.fromEntries(query), (err, wait) => this.hooks.onBusy(err, wait)),
        );
        const img = await loadImage(blob);
        img.style.left = `${t.tx * lv.tile * t.kx}px`;
        img.style.top = `${t.ty * lv.tile * t.ky}px`;
        img.style.width = `${img.naturalWidth * t.kx}px`;
        img.style.height = `${img.naturalHeight * t.ky}px`;
        img.dataset.tile = `${t.ty},${t.tx}`;
        return img;
      }),
    );
    if (this.pending) return; // a newer state is waiting: do not flash this one
    this.layer.replaceChildren(...images);
    this.layer.dataset.key = key;
    this.layer.dataset.tiles = wanted.map((t) => `${t.ty},${t.tx}`).join(" ");
    this.el.dataset.index = String(this.index);
    this.el.dataset.level = String(lv.level);
    this.el.dataset.state = "ready";
    this.levelLabel.textContent = `level ${lv.level}`;
  }

  // -- crosshair --------------------------------------------------------------------
  drawCross() {
    const c = this.cross;
    const dpr = window.devicePixelRatio || 1;
    const w = this.viewport.clientWidth;
    const h = this.viewport.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    if (!this.series || !this.crossAt) return;
    const s = this.scale();
    const px = this.pan.x + this.crossAt[0] * this.base.width * s;
    const py = this.pan.y + this.crossAt[1] * this.base.height * s;
    g.strokeStyle = "rgba(255, 209, 102, 0.8)";
    g.lineWidth = 1;
    g.setLineDash([4, 4]);
    g.beginPath();
    g.moveTo(Math.round(px) + 0.5, 0);
    g.lineTo(Math.round(px) + 0.5, h);
    g.moveTo(0, Math.round(py) + 0.5);
    g.lineTo(w, Math.round(py) + 0.5);
    g.stroke();
  }

  // -- input ------------------------------------------------------------------------
  onWheel(e) {
    if (!this.series) return;
    e.preventDefault();
    this.hooks.onActivate(this.plane);
    const delta = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaY;
    if (e.ctrlKey || e.metaKey) {
      const r = this.viewport.getBoundingClientRect();
      this.zoomBy(Math.exp(-delta / 500), e.clientX - r.left, e.clientY - r.top);
      return;
    }
    if (Math.abs(delta) >= WHEEL_STEP) {
      this.wheelAcc = 0;
      this.hooks.onSlice(this.plane, this.index + Math.sign(delta));
      return;
    }
    this.wheelAcc += delta;
    if (Math.abs(this.wheelAcc) >= WHEEL_STEP) {
      this.hooks.onSlice(this.plane, this.index + Math.sign(this.wheelAcc));
      this.wheelAcc = 0;
    }
  }

  onPointerDown(e) {
    if (!this.series || e.button !== 0) return;
    this.viewport.focus({ preventScroll: true });
    const start = { x: e.clientX, y: e.clientY, pan: { ...this.pan } };
    let dragged = false;
    const move = (ev) => {
      const dx = ev.clientX - start.x;
      const dy = ev.clientY - start.y;
      if (!dragged && Math.hypot(dx, dy) < 4) return;
      dragged = true;
      this.viewport.classList.add("dragging");
      this.pan = { x: start.pan.x + dx, y: start.pan.y + dy };
      this.update();
    };
    const up = (ev) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      this.viewport.classList.remove("dragging");
      if (!dragged) this.click(ev);
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  click(e) {
    const r = this.viewport.getBoundingClientRect();
    const s = this.scale();
    const fx = (e.clientX - r.left - this.pan.x) / s / this.base.width;
    const fy = (e.clientY - r.top - this.pan.y) / s / this.base.height;
    if (fx < 0 || fx >= 1 || fy < 0 || fy >= 1) return;
    const [Z, Y, X] = this.series.size;
    const point = {};
    if (this.plane === "axial") {
      point.x = Math.floor(fx * X);
      point.y = Math.floor(fy * Y);
    } else if (this.plane === "coronal") {
      point.x = Math.floor(fx * X);
      point.z = Z - 1 - Math.floor(fy * Z);
    } else {
      point.y = Math.floor(fx * Y);
      point.z = Z - 1 - Math.floor(fy * Z);
    }
    this.hooks.onPoint(this.plane, point);
  }
}

/** Where the point (z, y, x) lies in each plane's image, as fractions [column, row]. */
export function crossFractions(size, p) {
  const [Z, Y, X] = size;
  return {
    axial: [(p.x + 0.5) / X, (p.y + 0.5) / Y],
    coronal: [(p.x + 0.5) / X, (Z - 1 - p.z + 0.5) / Z],
    sagittal: [(p.y + 0.5) / Y, (Z - 1 - p.z + 0.5) / Z],
  };
}
