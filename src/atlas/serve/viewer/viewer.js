// The Atlas web viewer: token, catalog search, and three linked plane views of one series.
// Plain ES modules, no build step; every request carries the token as a bearer header.

import { ApiError, getJSON, getToken, setToken } from "./api.js";
import { PLANES, PlaneView, crossFractions, tileCache } from "./mpr.js";

const PRESETS = ["ct-soft-tissue", "lung", "bone", "brain", "auto"];
const PRESET_NAMES = {
  "ct-soft-tissue": "CT soft tissue (W400 C40)",
  lung: "Lung (W1500 C-600)",
  bone: "Bone (W1800 C400)",
  brain: "Brain (W80 C40)",
  auto: "Auto (from statistics)",
  custom: "Explicit W/C",
};
const PRESET_WC = {
  "ct-soft-tissue": [400, 40],
  lung: [1500, -600],
  bone: [1800, 400],
  brain: [80, 40],
};

const $ = (sel) => document.querySelector(sel);

const state = {
  series: null,
  point: { z: 0, y: 0, x: 0 },
  window: "ct-soft-tissue",
  labels: true,
  opacity: 0.5,
  active: "axial",
  next: null,
  query: "",
  searches: 0,
  opens: 0,
};
const views = {};

// -- errors -------------------------------------------------------------------------------
/**
 * Show ``err`` in the page; ``source`` (catalog, series, tiles, input) says what may clear it;
 * ``retryS``: the request is tried again in that many seconds.
 */
function showError(err, source = "other", retryS = null) {
  const box = $("#error");
  box.dataset.source = source;
  const api = err instanceof ApiError;
  const text = api
    ? retryS !== null
      ? err.explainRetry(retryS)
      : err.explain()
    : `Error: ${err && err.message ? err.message : err}`;
  box.textContent = text;
  box.dataset.status = err instanceof ApiError ? String(err.status) : "";
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) $("#token").focus();
}

/** Hide the error shown, if ``source`` raised it (any error when ``source`` is omitted). */
function clearError(source) {
  const box = $("#error");
  if (source && box.dataset.source !== source) return;
  box.hidden = true;
  box.textContent = "";
  box.dataset.status = "";
}

// -- token --------------------------------------------------------------------------------
function showTokenState() {
  const token = getToken();
  $("#token-state").textContent = token ? `token …${token.slice(-6)}` : "no token";
}

async function useToken(token) {
  setToken(token.trim());
  $("#token").value = "";
  tileCache.clear();
  showTokenState();
  clearError();
  await loadCatalog();
}

// -- catalog ------------------------------------------------------------------------------
async function loadCatalog() {
  if (!getToken()) {
    showError(new ApiError(401, "unauthorized", "no token given"), "catalog");
    return;
  }
  try {
    const body = await getJSON("api/collections");
    const list = $("#collections");
    list.replaceChildren(
      ...body.collections.map((c) => {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = c.collection;
        const sub = document.createElement("span");
        sub.className = "sub";
        sub.textContent = `${c.series} series · ${c.subjects} subjects · ${c.sites.join(", ")}`;
        b.append(sub);
        b.addEventListener("click", () => {
          $("#q").value = `collection == ${JSON.stringify(c.collection)}`;
          search();
        });
        li.append(b);
        return li;
      }),
    );
    clearError("catalog");
    await search();
  } catch (err) {
    showError(err, "catalog");
  }
}

async function search(more = false) {
  const q = more ? state.query : $("#q").value.trim();
  const seq = ++state.searches; // a later search wins, whichever answer comes last
  try {
    const body = await getJSON("api/series", { q, limit: 50, cursor: more ? state.next : null });
    if (seq !== state.searches) return;
    state.query = q;
    state.next = body.next;
    const items = body.items.map((s) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "series";
      b.dataset.series = s.series_id;
      b.dataset.volume = String(s.volume ?? 0);
      b.textContent = `${s.subject_id} · ${s.modality || "?"} ${s.body_part || ""}`.trim();
      const sub = document.createElement("span");
      sub.className = "sub";
      sub.textContent = `${s.series_id} · ${s.size.join("×")} · ${s.site}/${s.collection}`;
      b.append(sub);
      b.addEventListener("click", () => openSeries(s.series_id, s.volume ?? 0));
      li.append(b);
      return li;
    });
    if (more) $("#results").append(...items);
    else $("#results").replaceChildren(...items);
    $("#more").hidden = !body.next;
    if (!items.length && !more) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "no series match";
      $("#results").append(li);
    }
    clearError("catalog");
  } catch (err) {
    if (seq === state.searches) showError(err, "catalog");
  }
}

// -- series -------------------------------------------------------------------------------
async function openSeries(seriesId, volume) {
  const seq = ++state.opens; // the series asked for last is the one shown
  let series;
  try {
    series = await getJSON(`api/series/${encodeURIComponent(seriesId)}`, { volume });
  } catch (err) {
    if (seq === state.opens) showError(err, "series");
    return;
  }
  if (seq !== state.opens) return;
  clearError("series");
  clearError("tiles");
  state.series = series;
  const [Z, Y, X] = series.size;
  state.point = { z: Math.floor(Z / 2), y: Math.floor(Y / 2), x: Math.floor(X / 2) };
  const windows = series.windows && series.windows.length ? series.windows : PRESETS;
  fillWindows(windows);
  setWindow(series.default_window || windows[0], false);
  for (const b of document.querySelectorAll("#results button.series")) {
    b.classList.toggle("active", b.dataset.series === seriesId);
  }
  $("#series-title").textContent = `${series.subject_id} · ${series.series_id}`;
  showLegend(series);
  showFacts(series);
  history.replaceState(null, "", `#series=${encodeURIComponent(seriesId)}&volume=${volume}`);
  for (const plane of PLANES) views[plane].open(series, indexOf(plane));
  linkViews();
  for (const plane of PLANES) views[plane].update();
}

function indexOf(plane) {
  const p = state.point;
  return plane === "axial" ? p.z : plane === "coronal" ? p.y : p.x;
}

function linkViews() {
  if (!state.series) return;
  const f = crossFractions(state.series.size, state.point);
  for (const plane of PLANES) {
    views[plane].setCross(f[plane]);
    views[plane].setIndex(indexOf(plane));
  }
}

function onSlice(plane, index) {
  if (!state.series) return;
  const [Z, Y, X] = state.series.size;
  const clamp = (v, n) => Math.max(0, Math.min(n - 1, Math.round(v)));
  if (plane === "axial") state.point.z = clamp(index, Z);
  else if (plane === "coronal") state.point.y = clamp(index, Y);
  else state.point.x = clamp(index, X);
  linkViews();
}

function onPoint(plane, point) {
  Object.assign(state.point, point);
  setActive(plane);
  linkViews();
}

function setActive(plane) {
  state.active = plane;
  for (const p of PLANES) views[p].el.classList.toggle("active", p === plane);
}

function showLegend(series) {
  const items = [];
  for (const label of series.labels || []) {
    const g = document.createElement("li");
    g.className = "group";
    g.textContent = label.name;
    items.push(g);
    for (const v of label.values || []) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = v.color;
      const name = document.createElement("span");
      name.textContent = `${v.value} ${v.name || ""}`.trim();
      li.append(sw, name);
      items.push(li);
    }
  }
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no labels";
    items.push(li);
  }
  $("#legend").replaceChildren(...items);
}

function showFacts(series) {
  const facts = [
    ["modality", series.modality],
    ["body part", series.body_part],
    ["size", series.size && series.size.join(" × ")],
    ["spacing mm", series.spacing && series.spacing.map((v) => Number(v).toFixed(2)).join(" × ")],
    ["levels", (series.levels && series.levels.length) || series.levels],
    ["regular", series.regularly_spaced === false ? "no (irregular slice spacing)" : "yes"],
    ["site", `${series.site} / ${series.collection}`],
  ];
  const out = [];
  for (const [k, v] of facts) {
    if (v === undefined || v === null || v === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    out.push(dt, dd);
  }
  $("#facts").replaceChildren(...out);
}

// -- window, labels, zoom -----------------------------------------------------------------
function fillWindows(windows) {
  const sel = $("#window");
  const opts = [...windows, "custom"].map((w) => {
    const o = document.createElement("option");
    o.value = w;
    o.textContent = PRESET_NAMES[w] || w;
    return o;
  });
  sel.replaceChildren(...opts);
}

function setWindow(value, render = true) {
  state.window = value;
  const preset = PRESET_WC[value];
  const isCustom = /^-?\d+(\.\d+)?,-?\d+(\.\d+)?$/.test(value);
  $("#window").value = isCustom ? "custom" : value;
  if (preset) {
    $("#ww").value = String(preset[0]);
    $("#wc").value = String(preset[1]);
  }
  if (render) renderAll();
}

function applyWC() {
  const w = Number($("#ww").value);
  const c = Number($("#wc").value);
  if (!Number.isFinite(w) || w <= 0 || !Number.isFinite(c) || $("#ww").value === "" || $("#wc").value === "") {
    showError(new Error("window width must be a number > 0 and centre a number"), "input");
    return;
  }
  clearError("input");
  setWindow(`${w},${c}`);
}

function setLabels(on) {
  state.labels = on;
  $("#labels").checked = on;
  renderAll();
}

function tileParams() {
  return {
    window: state.window,
    labels: state.labels ? "all" : "none",
    opacity: String(state.opacity),
  };
}

function renderAll() {
  for (const plane of PLANES) views[plane].update();
}

function resetAll() {
  if (!state.series) return;
  const [Z, Y, X] = state.series.size;
  state.point = { z: Math.floor(Z / 2), y: Math.floor(Y / 2), x: Math.floor(X / 2) };
  for (const plane of PLANES) views[plane].reset(false);
  linkViews();
  renderAll();
}

// -- keyboard -----------------------------------------------------------------------------
function onKey(e) {
  const help = $("#help");
  if (e.key === "Escape" && help.open) {
    help.close();
    return;
  }
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const view = views[state.active];
  const step = { ArrowUp: 1, ArrowDown: -1, PageUp: 10, PageDown: -10 }[e.key];
  let handled = true;
  if (e.key === "?" || e.key === "h") {
    if (help.open) help.close();
    else help.showModal();
  } else if (!state.series) {
    handled = false;
  } else if (step !== undefined) {
    onSlice(state.active, view.index + step);
  } else if (e.key === "Home") {
    onSlice(state.active, 0);
  } else if (e.key === "End") {
    onSlice(state.active, view.slices - 1);
  } else if (e.key >= "1" && e.key <= "5") {
    const w = PRESETS[Number(e.key) - 1];
    if ([...$("#window").options].some((o) => o.value === w)) setWindow(w);
  } else if (e.key === "l") {
    setLabels(!state.labels);
  } else if (e.key === "r") {
    resetAll();
  } else if (e.key === "+" || e.key === "=") {
    view.zoomBy(1.25);
  } else if (e.key === "-" || e.key === "_") {
    view.zoomBy(0.8);
  } else if (e.key === "a" || e.key === "c" || e.key === "s") {
    setActive({ a: "axial", c: "coronal", s: "sagittal" }[e.key]);
  } else {
    handled = false;
  }
  if (handled) e.preventDefault();
}

// -- start --------------------------------------------------------------------------------
function start() {
  for (const el of document.querySelectorAll(".view")) {
    views[el.dataset.plane] = new PlaneView(el, {
      onSlice,
      onPoint,
      onActivate: setActive,
      onError: (err) => showError(err, "tiles"),
      onTiles: () => clearError("tiles"),
      onBusy: (err, wait) => showError(err, "tiles", wait),
      tileParams,
    });
  }
  setActive("axial");
  fillWindows(PRESETS);
  setWindow(state.window, false);
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useToken($("#token").value);
  });
  $("#token-forget").addEventListener("click", () => {
    setToken("");
    tileCache.clear();
    showTokenState();
  });
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  $("#more").addEventListener("click", () => search(true));
  $("#window").addEventListener("change", () => {
    const v = $("#window").value;
    if (v === "custom") applyWC();
    else setWindow(v);
  });
  $("#wc-apply").addEventListener("click", applyWC);
  $("#labels").addEventListener("change", () => setLabels($("#labels").checked));
  $("#opacity").addEventListener("change", () => {
    state.opacity = Number($("#opacity").value);
    renderAll();
  });
  $("#zoom-in").addEventListener("click", () => views[state.active].zoomBy(1.25));
  $("#zoom-out").addEventListener("click", () => views[state.active].zoomBy(0.8));
  $("#reset").addEventListener("click", resetAll);
  $("#help-open").addEventListener("click", () => $("#help").showModal());
  $("#help-close").addEventListener("click", () => $("#help").close());
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", openFromHash);
  showTokenState();
  if (getToken()) loadCatalog().then(openFromHash);
}

/** Open the series the address names (``#series=ID&volume=N``), unless it is open already. */
function openFromHash() {
  const m = /series=([^&]+)&volume=(\d+)/.exec(location.hash);
  if (!m || !getToken()) return;
  const id = decodeURIComponent(m[1]);
  const volume = Number(m[2]);
  if (state.series && state.series.series_id === id && (state.series.volume ?? 0) === volume) return;
  openSeries(id, volume);
}

start();
