"""Sites file parsing and the `atlas` command line, end to end."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from atlas import __version__
from atlas.cli.app import app
from atlas.config import load_sites, parse_sites
from atlas.errors import ConfigError

runner = CliRunner()

GOOD = """
[[site]]
name = "amsterdam"
country = "NL"
store = "s3://atlas-nl/data"
endpoint = "http://127.0.0.1:9"
key_env = "NL_KEY"
secret_env = "NL_SECRET"

[[site]]
name = "local-lab"
country = "DE"
store = "./lab-data"
"""


def test_parse_sites() -> None:
    sites = parse_sites(GOOD)
    assert [s.name for s in sites] == ["amsterdam", "local-lab"]
    nl = sites[0].location
    assert (nl.bucket, nl.prefix, nl.endpoint, nl.key_env, nl.site) == (
        "atlas-nl", "data", "http://127.0.0.1:9", "NL_KEY", "amsterdam"
    )  # fmt: skip
    assert sites[1].location.scheme == "file"


@pytest.mark.parametrize(
    "text, match",
    [
        ("[[site]]\nname='a'\nstore='s3://b'\nsecret='x'\n", r"unknown key\(s\) \['secret'\]"),
        ("[[site]]\nname='a'\n", "'store' is required"),
        ("[[site]]\nname='A B'\nstore='./x'\n", "must be lower-case"),
        ("[[site]]\nname='a'\nstore='./x'\ncountry='Netherlands'\n", "ISO 3166"),
        ("[[site]]\nname='a'\nstore='./x'\n[[site]]\nname='a'\nstore='./y'\n", "duplicate"),
        ("[[site]\n", "not valid TOML"),
        ("[[site]]\nname='a'\nstore='gs://x'\n", "unsupported store URL scheme"),
        ("[[site]]\nname='a'\nstore='./x'\nconnect_timeout='soon'\n", "positive number"),
        ("[[site]]\nname='a'\nstore='./x'\nread_timeout=-1\n", "positive number"),
        ("[[site]]\nname='a'\nstore='s3://b'\nanonymous='false'\n", "TOML boolean"),
    ],
)
def test_bad_sites_files(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_sites(text)


def test_sites_file_from_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(GOOD)
    monkeypatch.setenv("ATLAS_SITES", str(path))
    assert len(load_sites()) == 2
    monkeypatch.setenv("ATLAS_SITES", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_sites()


def test_version_and_help() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    for command in ("demo", "doctor", "sites", "bench", "info"):
        assert command in result.output


def test_doctor_reports_backends_and_native_kernels() -> None:
    result = runner.invoke(app, ["doctor"], env={"ATLAS_SITES": ""})
    assert result.exit_code == 0, result.output
    for name in ("zarr", "tensorstore", "s3fs", "dask"):
        assert name in result.output
    assert "compiled" in result.output and "not compiled" not in result.output


def _dead_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.s3
def test_sites_list_and_check_against_real_servers(seaweed_sites, tmp_path, monkeypatch) -> None:
    lines = []
    env = {}
    for server in seaweed_sites:
        var = server.name.upper().replace("-", "_")
        env[f"{var}_KEY"], env[f"{var}_SECRET"] = server.admin.access_key, server.admin.secret_key
        lines.append(
            f'[[site]]\nname = "{server.name}"\ncountry = "NL"\nstore = "s3://atlas/cli"\n'
            f'endpoint = "{server.endpoint_url}"\n'
            f'key_env = "{var}_KEY"\nsecret_env = "{var}_SECRET"\n'
        )
    sites = tmp_path / "sites.toml"
    sites.write_text("\n".join(lines))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = runner.invoke(app, ["sites", "list", "--sites", str(sites)])
    assert result.exit_code == 0
    assert all(s.name in result.output for s in seaweed_sites)
    assert seaweed_sites[0].admin.secret_key not in result.output
    result = runner.invoke(app, ["sites", "check", "--sites", str(sites)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") >= 3 and "write" in result.output

    # a dead site and a site with a wrong key are reported, and the exit code says so
    env_bad = {"BAD_KEY": "nobody", "BAD_SECRET": "nothing"}
    for k, v in env_bad.items():
        monkeypatch.setenv(k, v)
    sites.write_text(
        sites.read_text() + f'\n[[site]]\nname = "offline"\nstore = "s3://atlas/x"\n'
        f'endpoint = "http://127.0.0.1:{_dead_port()}"\nconnect_timeout = 1\n'
        + f'\n[[site]]\nname = "wrong-key"\nstore = "s3://atlas/x"\n'
        f'endpoint = "{seaweed_sites[0].endpoint_url}"\n'
        'key_env = "BAD_KEY"\nsecret_env = "BAD_SECRET"\n'
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "offline-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "offline-secret")
    result = runner.invoke(app, ["sites", "check", "--sites", str(sites)])
    assert result.exit_code == 1
    assert "StoreUnavailable" in result.output and "Forbidden" in result.output
    assert "nothing" not in result.output  # the wrong secret is never echoed
    # doctor reports the same site health (without the write probe)
    result = runner.invoke(app, ["doctor", "--sites", str(sites)])
    assert result.exit_code == 1
    assert "compiled" in result.output and "offline" in result.output
    assert result.output.count("FAILED") == 2


def test_demo_info_and_png(tmp_path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(app, ["demo", "--data-dir", str(data), "--shape", "24,96,96"])
    assert result.exit_code == 0, result.output
    assert "round_trip_exact" in result.output and "True" in result.output
    png = data / "demo" / "slice.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["info", str(data), "demo/phantom-ct.ome.zarr"])
    assert result.exit_code == 0
    assert "24x96x96" in result.output and "soft tissue" in result.output


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "atlas.cli.app", "info", str(tmp_path), "none.ome.zarr"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "NotFound" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_error_keeps_brackets(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("[[site]]\nname='a'\nstore='./x'\nsecret='oops'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "atlas.cli.app", "sites", "list", "--sites", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "[[site]] #1" in proc.stderr and "unknown key(s) ['secret']" in proc.stderr
    assert "oops" not in proc.stderr


def test_bench_write_smoke(tmp_path) -> None:
    result = runner.invoke(app, ["bench", "write", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "write.json").read_text())
    backends = {r["backend"] for r in report["rows"]}
    assert backends == {"local", "seaweedfs-s3"}
    for row in report["rows"]:
        assert row["write MB/s"] > 0 and row["ratio"] > 1
    assert (tmp_path / "write.md").read_text().startswith("# Atlas storage")
    assert (tmp_path / "write.png").stat().st_size > 1000
