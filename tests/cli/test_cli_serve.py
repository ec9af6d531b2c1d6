"""`atlas serve` as a real process: it starts, answers /healthz, serves with a token, stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.stream.plan_catalog import build_catalog

from atlas.serve.tokens import TokenIssuer, load_server_key

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"atlas serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("atlas serve did not answer /healthz in time")


@pytest.mark.parametrize("workers", [1, 2])
def test_atlas_serve_runs_and_serves_with_a_token(tmp_path, workers) -> None:
    catalog = build_catalog(tmp_path / "data", {"a": 1})
    (tmp_path / "serve.toml").write_text(
        '[serve]\nkey_file = "keys/serve.key"\naudit_log = "audit.jsonl"\nqueue_depth = 8\n'
    )
    (tmp_path / "keys").mkdir()
    key = load_server_key(tmp_path / "keys" / "serve.key")
    token = TokenIssuer(key).create("alice", purpose="research", sites=["a"])
    port = _free_port()
    env = {"PYTHONPATH": SRC, "PATH": os.environ.get("PATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atlas.cli.app", "serve", "--store", str(tmp_path / "data" / "a"),
         "--site", "a", "--config", str(tmp_path / "serve.toml"), "--port", str(port),
         "--workers", str(workers), "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/api/series").status_code == 401
            viewer = client.get("/viewer/")
            assert viewer.status_code == 200 and "text/html" in viewer.headers["content-type"]
            items = client.get("/api/series", headers=auth).json()["items"]
            assert [i["site"] for i in items] == ["a"]
            sid = items[0]["series_id"]
            meta = client.get(f"/api/series/{sid}", headers=auth)
            assert meta.status_code == 200 and meta.json()["levels"][0]["shape"] == [16, 32, 32]
            tile = client.get(f"/api/series/{sid}/tiles/axial/0/8/0/0.png", headers=auth)
            assert tile.status_code == 200, tile.text
            assert tile.headers["content-type"] == "image/png" and tile.content[:4] == b"\x89PNG"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert f"http://127.0.0.1:{port}/viewer" in out
    assert token not in out + err
    records = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(records) >= 4 and token not in "".join(records)
    assert catalog.stores
