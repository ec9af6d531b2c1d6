"""The audit trail: the chain, each way of tampering with it, concurrent writers, privacy."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import stat
import threading

import pytest

from atlas.errors import ConfigError, CorruptData, InvalidInput
from atlas.serve.audit import GENESIS, AuditAction, AuditEvent, AuditOutcome, AuditTrail
from atlas.serve.tokens import load_server_key

E, A, OC = AuditEvent, AuditAction, AuditOutcome


@pytest.fixture
def key(tmp_path) -> bytes:
    return load_server_key(tmp_path / "serve.key")


def _append(trail: AuditTrail, i: int = 0, **extra) -> dict:
    fields = {
        "event": E.INSTANCES_ACCESSED,
        "action": A.READ,
        "outcome": OC.SUCCESS,
        "subject": "alice",
        "token_id": f"tok-{i % 3}",
        "client": "127.0.0.1",
        "purpose": "research",
        "route": f"/api/series/s{i}/tiles/axial/0/{i}/0/0.png",
        "object_id": f"pseudo-{i}",
        "site": "a",
        "tiles": 1,
        "nbytes": 1000 + i,
    }
    fields.update(extra)
    return trail.append(**fields)


def _lines(trail: AuditTrail) -> list[str]:
    return trail.path.read_text().splitlines(keepends=True)


def _write(trail: AuditTrail, lines: list[str]) -> None:
    trail.path.write_text("".join(lines))


@pytest.fixture
def trail(tmp_path, key) -> AuditTrail:
    t = AuditTrail(tmp_path / "audit.jsonl", key, clock=lambda: 1_800_000_000.5)
    for i in range(6):
        _append(t, i)
    return t


def test_records_chain_and_verify(trail, key) -> None:
    records = list(trail.records())
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    first = records[0]
    assert first["time"] == "2027-01-15T08:00:00.500000Z"
    assert (first["event"], first["action"], first["outcome"]) == ("instances-accessed", "R", 0)
    assert set(first) == {"seq", "time", "event", "action", "outcome", "subject", "token_id",
                          "client", "purpose", "route", "object_id", "site", "tiles", "nbytes",
                          "prev", "hash"}  # fmt: skip
    check = trail.verify()
    assert check.ok and check.count == 6 and check.first_bad is None
    assert check.head == records[-1]["hash"]
    assert stat.S_IMODE(trail.path.stat().st_mode) == 0o600
    assert [r["seq"] for r in trail.last(2)] == [5, 6]
    # the chain cannot be checked (or recomputed) without the server key
    other = AuditTrail(trail.path, bytes(32))
    assert other.verify().first_bad == 1
    assert AuditTrail(trail.path.with_name("none.jsonl"), key).verify().ok


def test_an_edited_record_is_named(trail) -> None:
    lines = _lines(trail)
    record = json.loads(lines[2])
    record["nbytes"] = 1
    lines[2] = json.dumps(record, separators=(",", ":")) + "\n"
    _write(trail, lines)
    check = trail.verify()
    assert (check.ok, check.first_bad, check.count) == (False, 3, 2)
    assert "record 3 was altered" in check.reason
    # renumbering or re-pointing a record is an edit too
    lines[2] = lines[2].replace('"seq":3', '"seq":4')
    _write(trail, lines)
    assert trail.verify().first_bad == 4


def test_a_removed_record_is_named(trail) -> None:
    lines = _lines(trail)
    del lines[3]
    _write(trail, lines)
    check = trail.verify()
    assert (check.ok, check.first_bad) == (False, 5)
    assert check.reason == "record 5 follows record 3: records removed or reordered"
    lines = _lines(trail)
    del lines[0]  # the first one
    _write(trail, lines)
    assert trail.verify().first_bad == 2


def test_reordered_records_are_named(trail) -> None:
    lines = _lines(trail)
    lines[1], lines[2] = lines[2], lines[1]
    _write(trail, lines)
    check = trail.verify()
    assert (check.ok, check.first_bad) == (False, 3)
    assert "follows record 1" in check.reason


def test_inserted_records_are_named(trail, key) -> None:
    lines = _lines(trail)
    # a forged record, chained to its predecessor but hashed without the key
    forged = json.loads(lines[1])
    forged.update(seq=3, prev=forged["hash"], subject="mallory", hash="0" * 64)
    _write(trail, [*lines[:2], json.dumps(forged) + "\n", *lines[2:]])
    check = trail.verify()
    assert (check.ok, check.first_bad) == (False, 3) and "altered or forged" in check.reason
    # a genuine record repeated (replayed) further on
    _write(trail, [*lines[:4], lines[1], *lines[4:]])
    check = trail.verify()
    assert (check.first_bad, check.reason) == (
        2, "record 2 follows record 4: records reordered or repeated"
    )  # fmt: skip
    # a record with a valid hash from another trail (same key), at the right seq
    twin = AuditTrail(trail.path.with_name("twin.jsonl"), key)
    for i in range(3):
        _append(twin, i, subject="twin")
    _write(trail, [*lines[:2], _lines(twin)[2], *lines[3:]])
    check = trail.verify()
    assert check.first_bad == 3 and "does not chain to record 2" in check.reason


def test_damaged_lines(trail, key) -> None:
    lines = _lines(trail)
    _write(trail, [*lines[:2], "not json\n", *lines[2:]])
    check = trail.verify()
    assert (check.first_bad, check.reason) == (3, "line 3 is not a complete audit record")
    with pytest.raises(CorruptData, match=r"line 3 of the audit log audit\.jsonl is not a record"):
        list(trail.records())
    # a damaged last record stops appends (they would chain to nothing)
    _write(trail, [*lines, '{"seq": 7}\n'])
    with pytest.raises(CorruptData, match=r"last record .* is damaged"):
        _append(trail)
    # a torn write (no final newline, as after a crash) is closed; the chain goes on
    _write(trail, [*lines, '{"seq":7,"ti'])
    record = _append(trail, 7)
    assert record["seq"] == 7 and record["prev"] == json.loads(lines[-1])["hash"]
    check = trail.verify()
    assert (check.first_bad, check.count) == (7, 6)  # the torn line stays visible


def _worker(path: str, key: bytes, n: int, worker: int, start) -> None:
    trail = AuditTrail(path, key)
    start.wait(timeout=60)  # every process appends at the same time

    def run(thread: int) -> None:
        for i in range(n):
            _append(trail, i, subject=f"w{worker}-t{thread}")

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_appends_from_processes_and_threads_keep_one_chain(tmp_path, key) -> None:
    path = str(tmp_path / "audit.jsonl")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_worker, args=(path, key, 40, w, start)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    trail = AuditTrail(path, key)
    check = trail.verify()
    assert check.ok, check
    assert check.count == 4 * 2 * 40
    records = list(trail.records())
    assert [r["seq"] for r in records] == list(range(1, 321))
    per_writer = {}
    for r in records:
        per_writer[r["subject"]] = per_writer.get(r["subject"], 0) + 1
    assert per_writer == {f"w{w}-t{t}": 40 for w in range(4) for t in range(2)}


def test_no_token_or_original_identifier_in_a_record(trail, key) -> None:
    from atlas.serve.signed import SignedUrls
    from atlas.serve.tokens import TokenIssuer

    bearer = TokenIssuer(key).create("alice", purpose="research")
    signed = SignedUrls(key).issue(
        __import__("atlas.serve.grants", fromlist=["Grant"]).Grant("alice", "t", "research"),
        "a", "liver-ct/p1/2.25.1.ome.zarr",
    )  # fmt: skip
    record = _append(
        trail,
        event=E.SECURITY_ALERT,
        outcome=OC.MINOR_FAILURE,
        route=f"{signed.url}0/zarr.json?patient=Doe^John&token={bearer}",
        subject=f"Bearer {bearer}",
        client="10.0.0.7\nforged line",
    )
    text = trail.path.read_text()
    assert bearer not in text and signed.token not in text
    assert "Doe" not in text and "patient=" not in text  # the query string is never kept
    image = "a/liver-ct/p1/2.25.1.ome.zarr"
    assert record["route"] == f"/signed/{signed.token[:6]}…/{image}/0/zarr.json"
    assert record["subject"] == f"Bearer {bearer[:6]}…"
    assert record["client"] == "10.0.0.7?forged line"  # no line break: one record a line
    assert len(text.splitlines()) == 7
    assert trail.verify().ok


def test_field_checks_and_vocabularies(tmp_path, key) -> None:
    trail = AuditTrail(tmp_path / "audit.jsonl", key)
    with pytest.raises(InvalidInput, match="tiles"):
        _append(trail, tiles=-1)
    with pytest.raises(InvalidInput, match="nbytes"):
        _append(trail, nbytes=1.5)
    with pytest.raises(InvalidInput, match="subject must be a string"):
        _append(trail, subject=7)
    with pytest.raises(InvalidInput, match=r"event must be one of \['query', "):
        _append(trail, event="login")
    with pytest.raises(InvalidInput, match="outcome must be one of"):
        _append(trail, outcome=3)
    assert not trail.path.exists()  # nothing half-written
    with pytest.raises(ConfigError, match="folder"):
        _append(AuditTrail(tmp_path / "nope" / "audit.jsonl", key))
    with pytest.raises(ConfigError, match="32 bytes"):
        AuditTrail(tmp_path / "a.jsonl", b"short")
    with pytest.raises(InvalidInput):
        trail.last(0)
    assert _append(trail, event="query", action="E", outcome=0)["event"] == "query"
    assert E.QUERY.code == ("110112", "Query")
    assert E.INSTANCES_ACCESSED.code == ("110103", "DICOM Instances Accessed")
    assert E.SECURITY_ALERT.code == ("110113", "Security Alert")
    assert E.APPLICATION_ACTIVITY.code == ("110100", "Application Activity")
    assert [a.value for a in A] == ["C", "R", "U", "D", "E"]
    assert [OC.from_status(s) for s in (200, 206, 304, 401, 404, 503)] == [
        OC.SUCCESS, OC.SUCCESS, OC.SUCCESS, OC.MINOR_FAILURE, OC.MINOR_FAILURE, OC.SERIOUS_FAILURE
    ]  # fmt: skip
