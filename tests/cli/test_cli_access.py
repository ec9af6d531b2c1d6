"""`atlas token` and `atlas audit`: the main flows as a subprocess of the real command, the
error cases through the same entry point in-process (``atlas_cli``; each subprocess costs
seconds of imports)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.errors import Unauthorized
from atlas.serve.audit import AuditAction, AuditEvent, AuditOutcome, AuditTrail
from atlas.serve.config import ServeConfig
from atlas.serve.tokens import load_server_key

SRC = str(Path(__file__).resolve().parents[2] / "src")


def atlas(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``atlas ARGS`` in ``cwd`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "atlas.cli.app", *args],
        cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": SRC, "PATH": os.environ.get("PATH", ""), "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "conf" / "serve.toml"
    path.parent.mkdir()
    path.write_text(
        '[serve]\nkey_file = "keys/serve.key"\nrevocations = "revoked.txt"\n'
        'audit_log = "audit.jsonl"\nrevocation_poll_s = 2\n'
    )
    (path.parent / "keys").mkdir()
    return path


def test_create_show_revoke(tmp_path, config) -> None:
    made = atlas(tmp_path, "token", "create", "--subject", "alice@example.org", "--sites", "a,b",
                 "--collections", "liver-ct", "--purpose", "research", "--ttl", "2h",
                 "--config", str(config))  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert len(made.stdout.splitlines()) == 1  # only the token on stdout: TOKEN=$(atlas ...)
    key_file = config.parent / "keys" / "serve.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "purpose research, sites a,b, collections liver-ct, expires" in made.stderr

    shown = atlas(tmp_path, "token", "show", token, "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    claims = json.loads(shown.stdout)
    assert claims["sub"] == "alice@example.org" and claims["sites"] == ["a", "b"]
    assert claims["collections"] == ["liver-ct"] and claims["purpose"] == "research"
    assert claims["exp"] - claims["iat"] in (7200, 7201)
    assert "valid: signature verified, not revoked" in shown.stderr

    revoked = atlas(tmp_path, "token", "revoke", claims["jti"], "--config", str(config))
    assert revoked.returncode == 0
    assert revoked.stdout == f"revoked {claims['jti']}; servers refuse it within 2 s\n"
    assert (config.parent / "revoked.txt").read_text() == claims["jti"] + "\n"
    refused = atlas(tmp_path, "token", "show", token, "--config", str(config))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: Unauthorized: token '{claims['jti']}' has been revoked"
    )
    # the server reading the same config accepts tokens of the command, refuses revoked ones
    from atlas.serve.auth import Authenticator
    from atlas.serve.config import load_serve_config
    from atlas.storage import open_store

    served = load_serve_config(config, {"a": open_store(str(tmp_path / "a"), site="a")})
    assert isinstance(served, ServeConfig)
    auth = Authenticator(served)
    with pytest.raises(Unauthorized, match="has been revoked"):
        auth.authenticate(f"Bearer {token}")


def test_token_stdin_revoke_twice_and_the_server_default(tmp_path, config, atlas_cli,
                                                         monkeypatch) -> None:  # fmt: skip
    conf = ("--config", str(config))
    code, out, err = atlas_cli("token", "create", "--subject", "bob", "--purpose", "ai-training",
                               *conf)  # fmt: skip
    assert code == 0 and "sites all, collections all" in err
    token = out.strip()
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    code, out, _ = atlas_cli("token", "show", "-", *conf)
    claims = json.loads(out)
    assert code == 0 and claims["sites"] is None and claims["sub"] == "bob"
    assert atlas_cli("token", "revoke", claims["jti"], *conf)[:2] == (
        0, f"revoked {claims['jti']}; servers refuse it within 2 s\n"
    )  # fmt: skip
    assert atlas_cli("token", "revoke", claims["jti"], *conf)[:2] == (
        0, f"{claims['jti']} was already revoked\n"
    )  # fmt: skip
    # without --config: the default files of the current folder, as `atlas serve` uses them
    monkeypatch.chdir(tmp_path)
    code, out, _ = atlas_cli("token", "create", "--subject", "c", "--purpose", "research")
    assert code == 0 and (tmp_path / "serve.key").exists()
    assert atlas_cli("token", "show", out.strip())[0] == 0


def test_token_errors_are_one_line(tmp_path, config, atlas_cli, monkeypatch) -> None:
    def error(*args: str) -> str:
        code, out, err = atlas_cli(*args)
        assert code == 2 and out == "", (code, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    base = ("token", "create", "--subject", "alice", "--config", str(config))
    assert "unknown purpose 'marketing'" in error(*base, "--purpose", "marketing")
    assert "'5y' is not a lifetime" in error(*base, "--purpose", "research", "--ttl", "5y")
    assert "at most 2592000 s" in error(*base, "--purpose", "research", "--ttl", "31d")
    assert "site names" in error(*base, "--purpose", "research", "--sites", "a/b")
    assert "at least one name" in error(*base, "--purpose", "research", "--sites", ",")
    assert "subject" in error("token", "create", "--subject", "", "--purpose", "research")
    token = atlas_cli(*base, "--purpose", "research")[1].strip()
    assert "whole token, not a token id" in error("token", "revoke", token, "--config",
                                                  str(config))  # fmt: skip
    line = error("token", "show", token[:-4] + "AAAA", "--config", str(config))
    assert line == "error: Unauthorized: token signature does not verify"
    assert "malformed" in error("token", "show", "nope", "--config", str(config))
    # without --config: the default files here; no key there yet, and show does not make one
    monkeypatch.chdir(tmp_path)
    assert "serve.key does not exist" in error("token", "show", token)
    assert not (tmp_path / "serve.key").exists()
    assert "serve config" in error("token", "show", token, "--config", str(tmp_path / "x.toml"))
    (config.parent / "keys" / "serve.key").chmod(0o644)
    assert "readable or writable by other users" in error(*base, "--purpose", "research")


def _fill(config: Path, n: int) -> AuditTrail:
    key = load_server_key(config.parent / "keys" / "serve.key")
    trail = AuditTrail(config.parent / "audit.jsonl", key)
    for i in range(n):
        trail.append(event=AuditEvent.INSTANCES_ACCESSED, action=AuditAction.READ,
                     outcome=AuditOutcome.SUCCESS, subject="alice", token_id="t1",
                     client="127.0.0.1", purpose="research",
                     route=f"/api/series/s1/tiles/axial/0/{i}/0/0.png", object_id="pseudo1",
                     site="a", tiles=1, nbytes=100 + i)  # fmt: skip
    return trail


def test_audit_show_and_verify(tmp_path, config, atlas_cli) -> None:
    conf = ("--config", str(config))
    assert "key" in atlas_cli("audit", "verify", *conf)[2]  # no server key yet: refused
    assert atlas_cli("token", "create", "--subject", "a", "--purpose", "research", *conf)[0] == 0
    assert atlas_cli("audit", "verify", *conf)[:2] == (
        0, f"audit trail intact: 0 records, head {'0' * 16}\n"
    )  # fmt: skip
    trail = _fill(config, 5)
    ok = atlas(tmp_path, "audit", "verify", *conf)
    head = list(trail.records())[-1]["hash"]
    assert (ok.returncode, ok.stdout) == (0, f"audit trail intact: 5 records, head {head[:16]}\n")

    code, out, _ = atlas_cli("audit", "show", "--last", "2", "--format", "json", *conf)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seq"] for r in records] == [4, 5] and records[1]["nbytes"] == 104
    code, out, _ = atlas_cli("audit", "show", *conf)
    assert code == 0 and "audit trail (last 5)" in out and "instances-accessed" in out
    assert "pseudo1" in out
    code, _, err = atlas_cli("audit", "show", "--format", "xml", *conf)
    assert code == 2 and "--format must be table or json" in err
    assert atlas_cli("audit", "show", "--last", "0", *conf)[0] == 2

    lines = trail.path.read_text().splitlines(keepends=True)
    trail.path.write_text("".join(lines[:2] + lines[3:]))  # remove record 3
    broken = atlas(tmp_path, "audit", "verify", *conf)
    assert broken.returncode == 1
    assert broken.stdout == (
        "audit trail broken at seq 4: record 4 follows record 2: records removed or reordered "
        "(2 records before it hold)\n"
    )
