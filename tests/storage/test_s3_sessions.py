"""S3 sessions are closed: by ``Store.close()`` and at exit, also in worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.errors import Forbidden
from atlas.storage import open_store

pytestmark = pytest.mark.s3


def _store(seaweed, prefix: str = "sessions"):  # type: ignore[no-untyped-def]
    os.environ["ATLAS_SESSIONS_KEY"] = seaweed.admin.access_key
    os.environ["ATLAS_SESSIONS_SECRET"] = seaweed.admin.secret_key
    return open_store(
        f"s3://atlas/{prefix}",
        endpoint=seaweed.endpoint_url,
        key_env="ATLAS_SESSIONS_KEY",
        secret_env="ATLAS_SESSIONS_SECRET",
        site="sessions",
    )


def test_close_closes_the_session_and_the_handle_reopens(seaweed) -> None:
    store = _store(seaweed)
    store.write_bytes("k", b"v")
    assert store.fs.cat_file(store.fs_path("k")) == b"v"
    clients = [store.backend.async_fs()._s3, store.fs._s3]  # type: ignore[attr-defined]
    sessions = [c._endpoint.http_session._sessions for c in clients]
    assert all(s and not any(x.closed for x in s.values()) for s in sessions)
    store.close()
    assert all(not s or all(x.closed for x in s.values()) for s in sessions)
    assert store.read_bytes("k") == b"v"  # reconnects on use
    store.delete("k")
    store.close()


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atlas.cli.app", *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=cwd,
    )  # fmt: skip


def test_cli_on_s3_leaves_no_unclosed_session(seaweed, tmp_path) -> None:
    from atlas.testing.synthetic import make_study

    study = make_study(
        tmp_path / "study", shape=(4, 32, 32), seed=5, with_nifti=False, with_rtstruct=False
    )
    sites = tmp_path / "sites.toml"
    sites.write_text(
        f'[[site]]\nname = "weed"\nstore = "s3://atlas/sessions-cli"\n'
        f'endpoint = "{seaweed.endpoint_url}"\nkey_env = "WEED_KEY"\nsecret_env = "WEED_SECRET"\n'
    )
    env = {
        **os.environ,
        "WEED_KEY": seaweed.admin.access_key,
        "WEED_SECRET": seaweed.admin.secret_key,
        "ATLAS_SITE_SECRET": "sessions-test-site-key-" + "x" * 32,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    commands = [
        # one worker process: sessions opened there are closed when it ends
        ["ingest", str(study.ct_files[0].parent), "--site", "weed", "--collection", "c",
         "--sites", str(sites), "--workers", "1", "--report", str(tmp_path / "r.json")],
        ["sites", "check", "--sites", str(sites)],
    ]  # fmt: skip
    for args in commands:
        proc = _run(args, env, tmp_path)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        for noise in ("Unclosed", "Traceback", "never awaited", "Task was destroyed"):
            assert noise not in proc.stderr, (args[0], proc.stderr)


_CHILD = """
import multiprocessing as mp
import multiprocessing.util
import sys

from atlas.errors import Forbidden
from atlas.storage import open_store


def work(endpoint):
    store = open_store("s3://atlas/sessions-child", endpoint=endpoint, key_env="ATLAS_SESSIONS_KEY",
                       secret_env="ATLAS_SESSIONS_SECRET")
    store.write_bytes("k", b"v")
    fs = store.backend.async_fs()
    sessions = fs._s3._endpoint.http_session._sessions

    def report():  # runs after Atlas's exit hook (lower priority), as the worker ends
        closed = fs._s3 is None and all(s.closed for s in sessions.values())
        print("closed" if closed else "OPEN", flush=True)

    multiprocessing.util.Finalize(None, report, exitpriority=1)


if __name__ == "__main__":
    ctx = mp.get_context("spawn")  # like dask's worker processes: they end without atexit
    p = ctx.Process(target=work, args=(sys.argv[1],))
    p.start()
    p.join(120)
    sys.exit(p.exitcode)
"""


def test_worker_processes_close_their_sessions_when_they_end(seaweed, tmp_path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {
        **os.environ,
        "ATLAS_SESSIONS_KEY": seaweed.admin.access_key,
        "ATLAS_SESSIONS_SECRET": seaweed.admin.secret_key,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    proc = subprocess.run(
        [sys.executable, str(script), seaweed.endpoint_url],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["closed"], (proc.stdout, proc.stderr)
    assert "Unclosed" not in proc.stderr and "Traceback" not in proc.stderr


def test_filesystems_share_service_models_but_not_sessions(seaweed) -> None:
    """Each S3 filesystem has its own session (its own keys); the parsed models are shared."""
    good = _store(seaweed, "shared-models")
    good.write_bytes("k", b"v")
    os.environ["ATLAS_SESSIONS_BAD_KEY"] = "not-a-key"
    os.environ["ATLAS_SESSIONS_BAD_SECRET"] = "not-a-secret"
    bad = open_store(
        "s3://atlas/shared-models",
        endpoint=seaweed.endpoint_url,
        key_env="ATLAS_SESSIONS_BAD_KEY",
        secret_env="ATLAS_SESSIONS_BAD_SECRET",
        site="sessions-bad",
    )
    with pytest.raises(Forbidden):
        bad.read_bytes("k")  # the other store's keys are not used
    assert good.read_bytes("k") == b"v"
    fs_good, fs_bad = good.backend.async_fs(), bad.backend.async_fs()  # type: ignore[attr-defined]
    assert fs_good.session is not fs_bad.session
    loaders = {id(fs.session.get_component("data_loader")) for fs in (fs_good, fs_bad)}
    assert len(loaders) == 1
    good.delete("k")
    good.close()
    bad.close()
