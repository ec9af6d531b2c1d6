// The server's HTTP API as the viewer uses it: the token (sessionStorage), fetch with the
// bearer header, one-line error messages for 401/403/404/503, and tiles as blobs.

const TOKEN_KEY = "atlas.viewer.token";

/** The API root, relative to the page (the viewer lives at <root>/viewer/). */
export const apiBase = new URL("../", document.baseURI);

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An HTTP error of the API, with the server's one-line detail. */
export class ApiError extends Error {
  constructor(status, kind, detail, retryAfter) {
    super(detail || kind || `HTTP ${status}`);
    this.status = status;
    this.kind = kind || "";
    this.detail = detail || "";
    this.retryAfter = retryAfter;
  }

  /** What the page says while a refused (503) request waits ``waitS`` to be tried again. */
  explainRetry(waitS) {
    const d = this.detail ? `: ${this.detail}` : "";
    return `The server is busy (${this.status})${d}. Retrying in ${waitS} s.`;
  }

  /** What the page says about this error. */
  explain() {
    const d = this.detail ? `: ${this.detail}` : "";
    switch (this.status) {
      case 401:
        return `Not signed in (401)${d}. Paste a valid, unexpired token above.`;
      case 403:
        return `Your token does not cover this (403)${d}.`;
      case 404:
        return `Not found (404)${d}.`;
      case 503: {
        const wait = this.retryAfter ? ` Try again in ${this.retryAfter} s.` : " Try again shortly.";
        return `The server is busy or a store is unavailable (503)${d}.${wait}`;
      }
      case 0:
        return `The server cannot be reached${d}.`;
      default:
        return `Request failed (${this.status})${d}.`;
    }
  }
}

function headers() {
  const h = new Headers();
  const token = getToken();
  if (token) h.set("Authorization", `Bearer ${token}`);
  return h;
}

async function request(path, params) {
  const url = new URL(path, apiBase);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  let response;
  try {
    response = await fetch(url, { headers: headers(), credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, "network", String(err && err.message ? err.message : err));
  }
  if (!response.ok) {
    let kind = "";
    let detail = "";
    try {
      const body = await response.json();
      kind = body.error || "";
      detail = body.detail || "";
    } catch {
      detail = response.statusText;
    }
    throw new ApiError(response.status, kind, detail, response.headers.get("Retry-After"));
  }
  return response;
}

/** GET a JSON document of the API. */
export async function getJSON(path, params) {
  const response = await request(path, params);
  return response.json();
}

/** Tries of a tile the server refuses with 503 (busy), each after its Retry-After. */
export const BUSY_TRIES = 4;
const MAX_WAIT_S = 10;

const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));

/**
 * GET a tile as a Blob (the caller turns it into an object URL). A 503 is tried again after
 * the server's Retry-After (at most BUSY_TRIES times in all); ``onBusy(err, waitS)`` hears of
 * each wait.
 */
export async function getBlob(path, params, onBusy) {
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await request(path, params);
      return await response.blob();
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 503 || attempt >= BUSY_TRIES) throw err;
      const wait = Math.min(MAX_WAIT_S, Math.max(0.2, Number(err.retryAfter) || 1));
      if (onBusy) onBusy(err, wait);
      await sleep(wait);
    }
  }
}
