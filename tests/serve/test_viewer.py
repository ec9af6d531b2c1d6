"""The web viewer in Debian's headless chromium (Playwright), against a real uvicorn server.

The server serves a real catalog (synthetic CT subjects with labels, ingested and indexed);
the browser enters a token, searches, opens a series and drives the three linked views. Every
check reads decoded tile pixels back from the page, so a viewer that shows nothing, the wrong
slice or ignores the window or labels fails. Screenshots are kept under the test's tmp dir
and, when ``ATLAS_ARTIFACTS`` is set, copied there.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.stream.plan_catalog import build_catalog

from atlas.read import ReadRequest
from atlas.serve import Grant, ServeConfig, ServeContext
from atlas.serve.app import create_app
from atlas.serve.auth import Authenticator
from atlas.serve.render import render_tile
from atlas.serve.server import serve_in_thread
from atlas.serve.tokens import TokenIssuer
from atlas.serve.viewer import CSP

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SHAPE = (24, 64, 64)
BIG = (10, 300, 300)
PLANES = ("axial", "coronal", "sagittal")


def chromium_path() -> str:
    """Debian's chromium (or ``ATLAS_CHROMIUM``); a failure naming the installer if absent."""
    path = os.environ.get("ATLAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            f"chromium not found at {path}: run scripts/ensure-chromium (installs Debian's "
            "chromium) or set ATLAS_CHROMIUM; the viewer tests need a real browser"
        )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("viewer")
    catalog = build_catalog(tmp / "small", {"a": 1, "b": 1}, shape=SHAPE)
    # site c: one series wider than a tile, with a second pyramid level
    big = build_catalog(tmp / "big", {"c": 1}, shape=BIG, seed=7)
    stores = {**catalog.stores, **big.stores}
    cfg = ServeConfig(
        stores=stores, key_file=tmp / "serve.key", audit_log=tmp / "audit.jsonl",
        revocations=tmp / "revoked.txt", queue_wait_s=30.0,  # a shared, slow CI machine
    )  # fmt: skip
    issuer = TokenIssuer(Authenticator(cfg).key)
    tokens = {
        "all": issuer.create("viewer-test", purpose="research", token_id="t-viewer"),
        "site-a": issuer.create("viewer-a", purpose="research", sites=["a"], token_id="t-a"),
    }
    ctx = ServeContext(cfg)
    app = create_app(ctx)
    try:
        with serve_in_thread(app) as url:
            yield {"url": url, "ctx": ctx, "catalog": catalog, "tokens": tokens, "cfg": cfg}
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def browser(served) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Console errors, page errors, failed and non-2xx requests of one page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        add = self.problems.append
        page.on("console", lambda m: m.type == "error" and add(f"console: {m.text}"))
        page.on("pageerror", lambda e: add(f"page error: {e}"))
        page.on("requestfailed", lambda r: add(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and add(f"{r.status}: {r.url}"))


def keep(page: Any, tmp_path: Path, name: str) -> None:
    """A screenshot under the test's tmp dir and, with ATLAS_ARTIFACTS set, there too."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    folder = os.environ.get("ATLAS_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


PIXELS_JS = """
(plane) => {
  const imgs = [...document.querySelectorAll(`.view[data-plane=${plane}] .tiles img`)];
  let w = 0, h = 0;
  const at = imgs.map((img) => {
    const [ty, tx] = img.dataset.tile.split(",").map(Number);
    w = Math.max(w, tx * 256 + img.naturalWidth);
    h = Math.max(h, ty * 256 + img.naturalHeight);
    return [img, tx * 256, ty * 256];
  });
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const g = c.getContext("2d");
  for (const [img, x, y] of at) g.drawImage(img, x, y);
  return {w, h, natural: imgs.map((i) => i.naturalWidth),
          data: w && h ? Array.from(g.getImageData(0, 0, w, h).data) : []};
}
"""


def pixels(page: Any, plane: str) -> np.ndarray:
    """The decoded tiles of a view as one RGBA array (rows, columns, 4)."""
    got = page.evaluate(PIXELS_JS, plane)
    assert got["natural"] and all(n > 0 for n in got["natural"]), f"{plane}: no decoded tile"
    return np.asarray(got["data"], dtype=np.uint8).reshape(got["h"], got["w"], 4)


def server_tile(served: dict[str, Any], series_id: str, page: Any, plane: str) -> np.ndarray:
    """Tile (0, 0) of the slice and level a view shows, as the server renders it (RGB)."""
    from PIL import Image

    view = f".view[data-plane={plane}]"
    index, level = page.get_attribute(view, "data-index"), page.get_attribute(view, "data-level")
    key = page.get_attribute(f"{view} .tiles", "data-key")
    query = key.split("|", 2)[2]
    url = f"{served['url']}/api/series/{series_id}/tiles/{plane}/{level}/{index}/0/0.png?{query}"
    r = httpx.get(url, headers={"Authorization": f"Bearer {served['tokens']['all']}"})
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def wait_ready(page: Any, plane: str, index: int | None = None) -> None:
    sel = f".view[data-plane={plane}][data-state=ready]"
    if index is not None:
        sel += f'[data-index="{index}"]'
    page.wait_for_selector(sel, timeout=15000)


def wait_key(page: Any, part: str) -> None:
    """Wait until the axial view shows tiles whose parameters contain ``part``."""
    js = "(p) => document.querySelector('.view[data-plane=axial] .tiles').dataset.key.includes(p)"
    page.wait_for_function(js, arg=part)


def open_viewer(page: Any, served: dict[str, Any]) -> None:
    page.goto(f"{served['url']}/viewer")
    page.fill("#token", served["tokens"]["all"])
    page.click("#token-use")
    page.wait_for_selector("#collections li button")


def test_viewer_loads_scrolls_windows_and_toggles_labels(served, browser, tmp_path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    open_viewer(page, served)
    assert page.evaluate("sessionStorage.length") == 1  # the token, kept for the tab only
    assert "3 series" in page.inner_text("#collections")
    # search: the filter box narrows the list to one site's series
    rows = served["ctx"].atlas("research").series.to_arrow().value.to_pylist()
    row = next(r for r in rows if r["site"] == "a")
    page.fill("#q", 'site == "a"')
    page.press("#q", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#results button.series').length == 1")
    assert row["series_id"] in page.inner_text("#results")
    page.click("#results button.series")
    for plane in PLANES:
        wait_ready(page, plane)
    z = int(page.get_attribute(".view[data-plane=axial]", "data-index"))
    assert z == SHAPE[0] // 2
    assert page.inner_text("#slice-axial") == f"{z + 1} / {SHAPE[0]}"
    shapes = {p: pixels(page, p).shape for p in PLANES}
    assert shapes["axial"][:2] == SHAPE[1:]  # rows y, columns x (isotropic in-plane)
    assert shapes["coronal"][1] == SHAPE[2] and shapes["sagittal"][1] == SHAPE[1]
    keep(page, tmp_path, "viewer-open")
    # each view shows exactly the server's tile of its slice (fetched here with the token)
    for plane in PLANES:
        shown = pixels(page, plane)
        assert (
            server_tile(served, row["series_id"], page, plane).tolist() == shown[..., :3].tolist()
        )

    # scrolling: the wheel over the axial view moves one slice; pixels and the number change
    before = pixels(page, "axial")
    box = page.locator(".view[data-plane=axial] .viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 100)
    wait_ready(page, "axial", z + 1)
    assert page.inner_text("#slice-axial") == f"{z + 2} / {SHAPE[0]}"
    assert not np.array_equal(before, pixels(page, "axial"))
    page.keyboard.press("ArrowDown")
    wait_ready(page, "axial", z)
    assert np.array_equal(before, pixels(page, "axial"))  # back to the same slice, same tiles

    # crosshair: a click in the axial view sets the coronal and sagittal slices
    page.mouse.click(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2)
    sag = int(page.get_attribute(".view[data-plane=sagittal]", "data-index") or -1)
    mid = SHAPE[2] // 2
    page.wait_for_function(
        f"() => document.querySelector('#slice-sagittal').dataset.index != {mid}"
    )
    wait_ready(page, "sagittal")
    assert int(page.get_attribute("#slice-sagittal", "data-index")) > sag

    # windowing: the lung preset (key 2) changes the pixels, CT soft tissue (1) restores them
    soft = pixels(page, "axial")
    page.keyboard.press("2")
    page.wait_for_function("() => document.querySelector('#window').value == 'lung'")
    wait_ready(page, "axial", z)
    wait_key(page, "lung")
    assert not np.array_equal(soft, pixels(page, "axial"))
    keep(page, tmp_path, "viewer-lung")
    page.keyboard.press("1")
    wait_key(page, "soft")
    assert np.array_equal(soft, pixels(page, "axial"))

    # labels: go to a slice with a label, toggle them off (key l): only labelled pixels change
    entry = served["ctx"].series(Grant("t", "t", "research"), row["series_id"])
    name = served["ctx"].reader.node(entry.ref()).metadata.labels[0]
    label = served["ctx"].reader.read(ReadRequest(entry.ref(name))).data
    zl = int(np.argmax((label > 0).sum(axis=(1, 2))))
    page.click(".view[data-plane=axial] .viewport", position={"x": 5, "y": 5})
    page.keyboard.press("Home")
    for _ in range(zl):
        page.keyboard.press("ArrowUp")
    wait_ready(page, "axial", zl)
    with_labels = pixels(page, "axial")
    legend = page.inner_text("#legend")
    assert name in legend
    page.keyboard.press("l")
    wait_key(page, "none")
    without = pixels(page, "axial")
    changed = np.any(with_labels[..., :3] != without[..., :3], axis=2)
    where = label[zl] > 0
    assert changed.any() and where.any()
    assert (changed & where).sum() >= 0.9 * where.sum()  # labelled pixels changed...
    assert not (changed & ~where).any()  # ...and nothing else
    keep(page, tmp_path, "viewer-labels-off")
    page.keyboard.press("l")

    # explicit W/C
    page.fill("#ww", "100")
    page.fill("#wc", "0")
    page.click("#wc-apply")
    wait_key(page, "100%2C0")
    assert not np.array_equal(with_labels, pixels(page, "axial"))

    # zoom: '+' zooms the active view in; 'r' resets
    page.click(".view[data-plane=axial] .viewport", position={"x": 5, "y": 5})
    for _ in range(3):
        page.keyboard.press("+")
    wait_ready(page, "axial")
    page.keyboard.press("r")
    wait_ready(page, "axial", SHAPE[0] // 2)

    # help overlay
    page.keyboard.press("?")
    assert page.is_visible("#help") and "labels on / off" in page.inner_text("#help")
    keep(page, tmp_path, "viewer-help")
    page.keyboard.press("Escape")
    assert watch.problems == []
    page.close()


def test_viewer_says_what_went_wrong(served, browser) -> None:
    page = browser.new_page()
    page.goto(f"{served['url']}/viewer/")
    page.fill("#token", "not-a-valid-token")
    page.click("#token-use")
    page.wait_for_selector("#error[data-status='401']")
    assert page.inner_text("#error").startswith("Not signed in (401): ")
    assert page.evaluate("() => document.activeElement.id") == "token"
    page.fill("#token", served["tokens"]["all"])
    page.click("#token-use")
    page.wait_for_selector("#collections li button")
    assert page.is_hidden("#error")
    page.goto(f"{served['url']}/viewer/#series=no-such-series&volume=0")
    page.wait_for_selector("#error[data-status='404']")
    assert page.inner_text("#error") == (
        "Not found (404): series 'no-such-series' (volume 0) not found."
    )
    # a token for site a only: a site-b series is refused (403), and says so
    rows = served["ctx"].atlas("research").series.to_arrow().value.to_pylist()
    b_series = next(r["series_id"] for r in rows if r["site"] == "b")
    page.fill("#token", served["tokens"]["site-a"])
    page.click("#token-use")
    page.wait_for_function(
        "() => document.querySelector('#collections').innerText.includes('1 series')"
    )
    assert "a" in page.inner_text("#collections").split("·")[-1]
    page.goto(f"{served['url']}/viewer/#series={b_series}&volume=0")
    page.wait_for_selector("#error[data-status='403']")
    assert page.inner_text("#error") == (
        "Your token does not cover this (403): token 't-a' does not cover this series "
        "(site 'b', collection 'liver-ct')."
    )
    assert page.get_attribute(".view[data-plane=axial]", "data-state") is None  # no tile asked
    page.close()


def test_viewer_files_media_types_and_csp(served) -> None:
    url = served["url"]
    with httpx.Client(base_url=url) as http:
        root = http.get("/viewer")
        assert root.status_code == 307 and root.headers["location"] == "/viewer/"
        kinds = {
            "/viewer/": "text/html", "/viewer/viewer.js": "text/javascript",
            "/viewer/mpr.js": "text/javascript", "/viewer/api.js": "text/javascript",
            "/viewer/viewer.css": "text/css", "/viewer/favicon.svg": "image/svg+xml",
        }  # fmt: skip
        for path, kind in kinds.items():
            r = http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
            assert r.headers["content-security-policy"] == CSP
            assert r.headers["x-content-type-options"] == "nosniff"
            again = http.get(path, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        html = http.get("/viewer/").text
        assert "<script>" not in html and " style=" not in html and "onclick" not in html
        r = http.get("/viewer/nope.js")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert "nope.js" in r.json()["detail"]
        for bad in (
            "/viewer/..%2Fviewer.py",
            "/viewer/%2e%2e%2fcontext.py",
            "/viewer/.%2e/viewer.py",
        ):
            r = http.get(bad)
            assert r.status_code == 404 and "import" not in r.text, bad  # only the listed files
        assert http.head("/viewer/viewer.js").status_code == 200
        assert http.get("/api/collections").status_code == 401  # the data still needs a token


def test_zoom_picks_the_pyramid_level_and_drag_pans(served, browser, tmp_path) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 600})
    watch = Watch(page)
    open_viewer(page, served)
    page.fill("#q", 'site == "c"')
    page.press("#q", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#results button.series').length == 1")
    page.click("#results button.series")
    wait_ready(page, "axial")
    # level 0 at fit: 300 px wide, 2 x 2 tiles of 256 px (the last row and column cut)
    assert page.get_attribute(".view[data-plane=axial]", "data-level") == "0"
    sizes = page.eval_on_selector_all(
        ".view[data-plane=axial] .tiles img", "(imgs) => imgs.map((i) => i.naturalWidth)"
    )
    assert sorted(sizes) == [44, 44, 256, 256]
    assert pixels(page, "axial").shape[:2] == BIG[1:]
    # zoomed out to half size, the coarser level (150 px) is enough and is fetched instead
    page.click(".view[data-plane=axial] .viewport", position={"x": 5, "y": 5})
    for _ in range(4):
        page.keyboard.press("-")
    page.wait_for_selector(".view[data-plane=axial][data-state=ready][data-level='1']")
    assert pixels(page, "axial").shape[:2] == (150, 150)
    assert page.inner_text("#level-axial") == "level 1"
    keep(page, tmp_path, "viewer-zoomed-out")
    # ctrl + wheel zooms in again: back to level 0
    box = page.locator(".view[data-plane=axial] .viewport").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -800)
    page.keyboard.up("Control")
    page.wait_for_selector(".view[data-plane=axial][data-state=ready][data-level='0']")
    # a drag pans by what the pointer moved, and does not move the crosshair
    layer = ".view[data-plane=axial] .tiles"
    moved = page.eval_on_selector(layer, "(e) => e.style.transform")
    sag = page.get_attribute("#slice-sagittal", "data-index")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 30, cy + 20, steps=5)
    page.mouse.up()
    after = page.eval_on_selector(layer, "(e) => e.style.transform")
    x0, y0 = (float(v) for v in moved.split("(")[1].split(")")[0].replace("px", "").split(","))
    x1, y1 = (float(v) for v in after.split("(")[1].split(")")[0].replace("px", "").split(","))
    assert (round(x1 - x0), round(y1 - y0)) == (30, 20)
    assert page.get_attribute("#slice-sagittal", "data-index") == sag
    assert watch.problems == []
    page.close()


class SlowRenderer:
    """The production renderer, each tile taking at least ``delay_s`` (one slot often busy)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def __call__(self, reader: Any, entry: Any, spec: Any) -> Any:
        time.sleep(self.delay_s)
        return render_tile(reader, entry, spec)


def test_a_busy_server_is_waited_for(served, browser) -> None:
    """One render slot and no queue: tiles get 503 + Retry-After; the viewer says so, waits
    and tries again until every view shows its tiles."""
    cfg = replace(served["cfg"], render_concurrency=1, queue_depth=0, queue_wait_s=1.0)
    ctx = ServeContext(cfg)
    try:
        app = create_app(ctx, renderer=SlowRenderer(0.4))
        with serve_in_thread(app) as url:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            statuses: list[int] = []
            page.on("response", lambda r: "/tiles/" in r.url and statuses.append(r.status))
            open_viewer(page, {**served, "url": url})
            page.fill("#q", 'site == "a"')
            page.press("#q", "Enter")
            page.wait_for_function(
                "() => document.querySelectorAll('#results button.series').length == 1"
            )
            page.click("#results button.series")
            page.wait_for_selector("#error[data-status='503']")
            text = page.inner_text("#error")
            assert text.startswith("The server is busy (503): server busy: "), text
            assert text.endswith("; retry after 1 s. Retrying in 1 s."), text
            for plane in PLANES:
                wait_ready(page, plane)
                assert pixels(page, plane).size
            assert 503 in statuses and statuses.count(200) >= 3
            page.wait_for_selector("#error", state="hidden")
            page.close()
    finally:
        ctx.close()


def test_a_missing_chromium_fails_naming_the_installer(monkeypatch) -> None:
    monkeypatch.setenv("ATLAS_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception, match="scripts/ensure-chromium"):
        chromium_path()


def test_every_viewer_file_is_served_and_packaged() -> None:
    import fnmatch
    import tomllib
    from importlib import resources

    from atlas.serve.viewer import VIEWER_FILES

    folder = resources.files("atlas.serve") / "viewer"
    on_disk = {f.name for f in folder.iterdir() if f.is_file()}
    assert on_disk == set(VIEWER_FILES)
    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["atlas.serve"]
    for name in VIEWER_FILES:
        assert any(fnmatch.fnmatch(f"viewer/{name}", p) for p in patterns), name
    html = (folder / "index.html").read_text()
    for ref in ("viewer.js", "viewer.css", "favicon.svg"):
        assert f'"{ref}"' in html
