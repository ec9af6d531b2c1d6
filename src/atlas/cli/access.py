"""`atlas token create|revoke|show` and `atlas audit show|verify`: access to `atlas serve`.

The commands read the same ``serve.toml`` as ``atlas serve`` (``--config``; without it the
default files in the current folder: ``serve.key``, ``revoked.txt``, ``audit.jsonl``), so a
token created here is one the server accepts and a revocation written here is one it reads.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas.errors import InvalidInput

token_app = typer.Typer(help="Bearer tokens of `atlas serve`: create, revoke, show.")
audit_app = typer.Typer(help="The audit trail of `atlas serve`: show and verify the chain.")

ConfigOption = typer.Option(
    None, "--config", help="serve.toml (default: serve.key, revoked.txt, audit.jsonl here)."
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def duration(value: str) -> str:
    """A lifetime such as ``90s``, ``15m``, ``1h`` or ``7d`` (a plain number: seconds)."""
    if not _DURATION.match(value or "") or _seconds(value) <= 0:
        raise typer.BadParameter(f"{value!r} is not a lifetime; use e.g. 90s, 15m, 1h or 7d")
    return value


def _seconds(value: str) -> float:
    match = _DURATION.match(value)
    assert match is not None
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InvalidInput("give at least one name (comma-separated), or leave the option out")
    return names


def _settings(config: Path | None) -> dict[str, Any]:
    from atlas.serve.config import serve_settings

    return serve_settings(config)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _all(names: list[str] | None) -> str:
    return "all" if names is None else ",".join(names)


@token_app.command("create")
def token_create(
    subject: str = typer.Option(..., "--subject", help="Who the token is for (user/service)."),
    purpose: str = typer.Option(
        ..., "--purpose", help="Consent purpose: research, ai-training, commercial, ..."
    ),
    sites: str | None = typer.Option(None, "--sites", help="Sites it covers, a,b (default all)."),
    collections: str | None = typer.Option(
        None, "--collections", help="Collections it covers, c,d (default all)."
    ),
    ttl: str = typer.Option(
        "1h", "--ttl", help="Lifetime: 90s, 15m, 1h, 7d (at most 30d).", callback=duration
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Create a token signed by the server key and print it (its id and expiry on stderr)."""
    from atlas.serve.tokens import TokenIssuer

    settings = _settings(config)
    issuer = TokenIssuer.from_key_file(settings["key_file"], create=True)
    token = issuer.create(
        subject,
        purpose=purpose,
        sites=_names(sites),
        collections=_names(collections),
        ttl_s=_seconds(ttl),
    )
    claims = issuer.claims(token)
    typer.echo(token)
    Console(stderr=True, soft_wrap=True).print(
        f"token {claims['jti']} for {escape(subject)}: purpose {claims['purpose']}, sites "
        f"{escape(_all(claims['sites']))}, collections {escape(_all(claims['collections']))}, "
        f"expires {_when(claims['exp'])}"
    )


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., metavar="JTI", help="The token's id (`token show`)."),
    config: Path | None = ConfigOption,
) -> None:
    """Revoke a token by its id: every server refuses it within revocation_poll_s."""
    from atlas.serve.revocation import Revocations

    settings = _settings(config)
    poll = settings.get("revocation_poll_s", 5.0)
    revocations = Revocations(settings["revocations"], poll)
    if revocations.revoke(token_id):
        typer.echo(f"revoked {token_id}; servers refuse it within {poll:g} s")
    else:
        typer.echo(f"{token_id} was already revoked")


def _verify(token: str, settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The verified claims of a token of the server or of its OIDC issuer, and its id."""
    import jwt

    from atlas.errors import Unauthorized
    from atlas.serve.oidc import ACCEPTED_ALGORITHMS, OidcVerifier
    from atlas.serve.tokens import TokenIssuer

    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise Unauthorized("token is malformed (not a signed JWT)") from None
    if alg in ACCEPTED_ALGORITHMS and settings.get("oidc") is not None:
        verifier = OidcVerifier(settings["oidc"])
        return verifier.claims(token), verifier.verify(token).token_id
    issuer = TokenIssuer.from_key_file(settings["key_file"], create=False)
    return issuer.claims(token), issuer.verify(token).token_id


@token_app.command("show")
def token_show(
    token: str = typer.Argument(..., help="The token, or - to read it from stdin."),
    config: Path | None = ConfigOption,
) -> None:
    """Verify a token as the server would and print its claims (JSON)."""
    from atlas.errors import Unauthorized
    from atlas.serve.revocation import Revocations

    if token == "-":
        token = sys.stdin.read().strip()
    settings = _settings(config)
    claims, token_id = _verify(token, settings)
    if Revocations(settings["revocations"]).is_revoked(token_id):
        raise Unauthorized(f"token {token_id!r} has been revoked")
    typer.echo(json.dumps(claims, indent=2, sort_keys=True))
    Console(stderr=True, soft_wrap=True).print(
        f"valid: signature verified, not revoked, expires {_when(float(claims['exp']))}"
    )


def _trail(config: Path | None) -> Any:
    from atlas.serve.audit import AuditTrail
    from atlas.serve.tokens import load_server_key

    settings = _settings(config)
    return AuditTrail(settings["audit_log"], load_server_key(settings["key_file"], create=False))


#: (header, record field) of the table
_COLUMNS = (("seq", "seq"), ("time (UTC)", "time"), ("event", "event"), ("act", "action"),
            ("out", "outcome"), ("subject", "subject"), ("token", "token_id"),
            ("client", "client"), ("purpose", "purpose"), ("route", "route"),
            ("object", "object_id"), ("site", "site"), ("tiles", "tiles"),
            ("bytes", "nbytes"))  # fmt: skip


def _cell(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if value is None:
        return ""
    if field == "time":
        return str(value)[:19].replace("T", " ")
    return str(value)


@audit_app.command("show")
def audit_show(
    last: int = typer.Option(20, "--last", help="How many of the latest records.", min=1),
    fmt: str = typer.Option("table", "--format", help="table or json (one record a line)."),
    config: Path | None = ConfigOption,
) -> None:
    """Print the latest audit records."""
    if fmt not in ("table", "json"):
        raise InvalidInput("--format must be table or json")
    records = _trail(config).last(last)
    if fmt == "json":
        for record in records:
            typer.echo(json.dumps(record, ensure_ascii=False))
        return
    table = Table(title=f"audit trail (last {len(records)})")
    for header, field in _COLUMNS:
        table.add_column(header, overflow="fold", no_wrap=field != "route")
    for record in records:
        table.add_row(*(escape(_cell(record, field)) for _, field in _COLUMNS))
    Console(width=max(Console().width, 180)).print(table)


@audit_app.command("verify")
def audit_verify(config: Path | None = ConfigOption) -> None:
    """Check the hash chain: exit 0 when intact, 1 naming the first bad record's seq."""
    check = _trail(config).verify()
    if check.ok:
        typer.echo(f"audit trail intact: {check.count} records, head {check.head[:16]}")
        return
    held = (
        "1 record before it holds" if check.count == 1 else f"{check.count} records before it hold"
    )
    typer.echo(f"audit trail broken at seq {check.first_bad}: {check.reason} ({held})")
    raise typer.Exit(1)
