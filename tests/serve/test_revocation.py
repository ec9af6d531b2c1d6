"""The revocation list: re-read when it changes, at most every poll, across processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from atlas.errors import ConfigError, InvalidInput, Unauthorized
from atlas.serve.grants import Grant
from atlas.serve.revocation import Revocations


class Mono:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_missing_file_revokes_nothing_and_comments_are_ignored(tmp_path) -> None:
    path = tmp_path / "revoked.txt"
    revocations = Revocations(path, 0.05)
    assert not revocations.is_revoked("t1")
    path.write_text("# revoked after the incident\n\n  t1  \nt2\n")
    time.sleep(0.06)
    assert revocations.revoked() == frozenset({"t1", "t2"})
    grant = Grant("alice", "t3", "research")
    assert revocations.check(grant) is grant
    with pytest.raises(Unauthorized, match="token 't1' has been revoked"):
        revocations.check(Grant("alice", "t1", "research"))


def test_default_poll_bound_with_a_fake_clock(tmp_path) -> None:
    """At the default 5 s: not looked at before 5 s have passed, seen as soon as they have."""
    path = tmp_path / "revoked.txt"
    clock = Mono()
    server = Revocations(path, clock=clock)  # revocation_poll_s default: 5 s
    assert server.poll_s == 5.0
    assert not server.is_revoked("t1")
    assert server.reloads == 0  # no file yet: nothing to read
    Revocations(path).revoke("t1")  # as `atlas token revoke` does, from elsewhere
    clock.now += 4.9
    assert not server.is_revoked("t1")  # not looked at again yet
    assert server.reloads == 0
    clock.now += 0.1
    assert server.is_revoked("t1")  # 5 s after the last look: within the 10 s promised
    assert server.reloads == 1
    clock.now += 5
    assert server.is_revoked("t1")
    assert server.reloads == 1  # looked at, unchanged: not read again


def test_a_revocation_from_another_process_takes_effect_within_the_poll(tmp_path) -> None:
    path = tmp_path / "revoked.txt"
    server = Revocations(path, 0.2)
    assert not server.is_revoked("t-live")
    code = (
        "import sys; from atlas.serve.revocation import Revocations; "
        "print(Revocations(sys.argv[1]).revoke('t-live'))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == "True"
    start = time.monotonic()
    while not server.is_revoked("t-live"):
        assert time.monotonic() - start < 10, "revocation not seen within 10 s"
        time.sleep(0.02)
    assert time.monotonic() - start < 0.2 + 0.5  # the poll, plus scheduling slack


def test_revoke_appends_once_and_refuses_tokens(tmp_path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("t0")  # no final newline: the next id goes on its own line
    revocations = Revocations(path)
    assert revocations.revoke("t1")
    assert not revocations.revoke("t1")
    assert path.read_text() == "t0\nt1\n"
    assert revocations.is_revoked("t1")  # its own revocation is seen at once
    with pytest.raises(InvalidInput, match="whole token, not a token id"):
        revocations.revoke("eyJhbGciOiJIUzI1NiJ9." + "x" * 60 + ".sig0123456789")
    for bad in ("", "a b", "x" * 200, "a\nb"):
        with pytest.raises(InvalidInput, match="token id"):
            revocations.revoke(bad)
    assert path.read_text() == "t0\nt1\n"
    with pytest.raises(ConfigError, match="folder"):
        Revocations(tmp_path / "nope" / "revoked.txt").revoke("t2")
    with pytest.raises(ConfigError, match="positive"):
        Revocations(path, 0)
