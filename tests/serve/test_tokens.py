"""The server's own tokens: the key file, create and verify, every way a token is refused."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat

import jwt
import pytest

from atlas.errors import ConfigError, InvalidInput, Unauthorized
from atlas.serve.grants import Grant
from atlas.serve.tokens import KEY_BYTES, TokenIssuer, derive_key, load_server_key


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key(tmp_path) -> bytes:
    return load_server_key(tmp_path / "serve.key")


def test_key_file_is_created_once_with_mode_0600(tmp_path) -> None:
    path = tmp_path / "serve.key"
    key = load_server_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_server_key(path) == key  # read back, not replaced
    assert [p.name for p in tmp_path.iterdir()] == ["serve.key"]  # no temporary file left


def test_key_file_refusals(tmp_path) -> None:
    path = tmp_path / "serve.key"
    with pytest.raises(ConfigError, match=r"serve.key does not exist"):
        load_server_key(path, create=False)
    assert not path.exists()
    load_server_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable or writable by other users.*0644.*chmod 600"):
        load_server_key(path)
    path.chmod(0o602)
    with pytest.raises(ConfigError, match="other users"):
        load_server_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="holds 5 bytes; at least 32"):
        load_server_key(path)
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_server_key(tmp_path / "dir.key")
    with pytest.raises(ConfigError, match="folder"):
        load_server_key(tmp_path / "missing" / "serve.key")


def _load(path: str, queue) -> None:
    queue.put(load_server_key(path).hex())


def test_processes_creating_the_key_at_once_share_one(tmp_path) -> None:
    path = str(tmp_path / "serve.key")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load, args=(path, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    keys = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(timeout=30)
    assert len(keys) == 1
    assert bytes.fromhex(keys.pop()) == load_server_key(path)


def test_create_and_verify_round_trip(key) -> None:
    clock = Clock()
    issuer = TokenIssuer(key, clock=clock)
    token = issuer.create(
        "alice@example.org", purpose="research", sites=["b", "a"], collections=["liver-ct"],
        ttl_s=600, token_id="t-1",
    )  # fmt: skip
    grant = issuer.verify(token)
    assert grant == Grant(
        subject="alice@example.org",
        token_id="t-1",
        purpose="research",
        sites=frozenset({"a", "b"}),
        collections=frozenset({"liver-ct"}),
        expires=clock.now + 600,
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "sub", "jti", "iat", "exp", "purpose", "sites", "collections"}
    assert claims["iss"] == "atlas" and claims["sites"] == ["a", "b"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    # no scope given: every site and collection
    everything = issuer.verify(issuer.create("svc", purpose="ai-training"))
    assert everything.sites is None and everything.collections is None
    assert len(everything.token_id) == 32  # a random id per token
    assert issuer.verify(issuer.create("svc", purpose="ai-training")).token_id != (
        everything.token_id
    )


def test_expiry_uses_the_clock(key) -> None:
    clock = Clock()
    issuer = TokenIssuer(key, clock=clock)
    token = issuer.create("alice", purpose="research", ttl_s=60)
    clock.now += 59
    assert issuer.verify(token).subject == "alice"
    clock.now += 1
    with pytest.raises(Unauthorized, match=r"^token expired$"):
        issuer.verify(token)
    # a token issued in the future (clock skew beyond the leeway) is refused
    future = TokenIssuer(key, clock=Clock(clock.now + 3600)).create("a", purpose="research")
    with pytest.raises(Unauthorized, match="not valid yet"):
        issuer.verify(future)


def _forge(claims: dict, key: bytes, alg: str = "HS256") -> str:
    return jwt.encode(claims, derive_key(key, "token"), algorithm=alg)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_refusals_name_the_reason_and_never_the_token(key, tmp_path) -> None:
    clock = Clock()
    issuer = TokenIssuer(key, clock=clock)
    good = issuer.create("alice", purpose="research")
    other = TokenIssuer(load_server_key(tmp_path / "other.key"), clock=clock)
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sites"] = ["b"]
    widened = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = jwt.encode(claims, None, algorithm="none")
    base = {"iss": "atlas", "sub": "x", "jti": "j", "iat": int(clock.now),
            "exp": int(clock.now) + 60, "purpose": "research"}  # fmt: skip
    cases = {
        other.create("alice", purpose="research"): "signature does not verify",
        f"{head}.{widened}.{sig}": "signature does not verify",
        unsigned: "algorithm that is not accepted",
        "not-a-token": "malformed",
        "a.b.c": "malformed",
        "": "malformed",
        "x" * 9000: "too long",
        _forge({**base, "iss": "evil"}, key): "wrong issuer",
        _forge({k: v for k, v in base.items() if k != "jti"}, key): "'jti' is missing",
        _forge({**base, "purpose": "marketing"}, key): "purpose is not a consent scope",
        _forge({**base, "sites": "a"}, key): "'sites' must be a list",
        _forge({**base, "sites": ["../b"]}, key): "malformed",
        _forge({**base, "exp": "tomorrow"}, key): "'exp' must be a number",
        _forge({**base, "sub": 7}, key): "'sub' must be a string",
        _forge({**base, "jti": 7}, key): "'jti' must be a string",
        _forge(base, key, "HS384"): "algorithm that is not accepted",
    }
    for token, reason in cases.items():
        with pytest.raises(Unauthorized, match=reason) as info:
            issuer.verify(token)
        if len(token) > 6:
            assert token not in str(info.value)
            assert all(part not in str(info.value) for part in token.split(".") if len(part) > 6)


def test_create_refuses_bad_input(key) -> None:
    issuer = TokenIssuer(key)
    with pytest.raises(InvalidInput, match="unknown purpose 'marketing'"):
        issuer.create("alice", purpose="marketing")
    with pytest.raises(InvalidInput, match="site names"):
        issuer.create("alice", purpose="research", sites=["a b"])
    with pytest.raises(InvalidInput, match="subject"):
        issuer.create("", purpose="research")
    with pytest.raises(InvalidInput, match="subject"):
        issuer.create("a\nb", purpose="research")
    for ttl in (0, -5, float("inf"), float("nan"), 31 * 86400, True):
        with pytest.raises(InvalidInput, match="lifetime"):
            issuer.create("alice", purpose="research", ttl_s=ttl)
    with pytest.raises(InvalidInput, match="token id"):
        issuer.create("alice", purpose="research", token_id="a/b")
    with pytest.raises(ConfigError, match="32 bytes"):
        TokenIssuer(b"short")


def test_from_key_file_and_key_separation(tmp_path) -> None:
    path = tmp_path / "serve.key"
    issuer = TokenIssuer.from_key_file(path)
    assert os.path.exists(path)
    token = issuer.create("alice", purpose="research")
    assert TokenIssuer.from_key_file(path, create=False).verify(token).subject == "alice"
    raw = load_server_key(path)
    # the token is not signed with the raw server key, nor with another use's key
    for wrong in (raw, derive_key(raw, "signed-url"), derive_key(raw, "audit")):
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, wrong, algorithms=["HS256"])
    assert len({derive_key(raw, u) for u in ("token", "signed-url", "audit")}) == 3
