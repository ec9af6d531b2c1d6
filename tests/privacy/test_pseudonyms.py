"""Tests of :mod:`atlas.privacy.pseudonyms`: one keyed derivation, byte-identical to before.

Existing stores name their subjects, studies, series and instances with values the
de-identifier derived before the pseudonyms moved into :class:`SiteKey`; those values must
never change, or a store stops resolving (erasure by patient id, re-ingest into the same
image). The reference below is the de-identifier's derivation as it was, restated here, and a
few of its outputs are pinned as literals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle

import pytest

from atlas.errors import ConfigError, InvalidInput
from atlas.privacy import Deidentifier, Purpose, SiteKey, audit
from atlas.privacy.pseudonyms import legacy_audit_fingerprint
from atlas.storage import open_store

KEY = b"pinned-site-secret-0123456789"
IDS = ["P123", " P123 ", "\x00study\x001.2.3", "Émilie^Ç", "0", "x" * 300, "\x00name\x00a"]
UIDS = ["1.2.840.113619.2.55.3.1", "1.2.3.4\x00", " 1.2.3 ", "2.25.1", "1.2.3/subject/ab"]


def _old_digest(key: bytes, domain: bytes, value: str) -> bytes:
    """The de-identifier's ``_digest`` before decision 0031 (restated, not imported)."""
    return hmac.new(key, domain + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()


def _old_subject_id(key: bytes, patient_id: str) -> str:
    digest = _old_digest(key, b"atlas/subject", str(patient_id).strip())
    return base64.b32encode(digest).decode("ascii")[:20].lower()


def _old_uid(key: bytes, uid: str) -> str:
    digest = _old_digest(key, b"atlas/uid", str(uid).strip().rstrip("\x00"))
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _old_shift(key: bytes, patient_id: str) -> int:
    digest = _old_digest(key, b"atlas/date-shift", str(patient_id).strip())
    return -(365 + int.from_bytes(digest[:8], "big") % (3650 - 365 + 1))


@pytest.mark.parametrize("value", IDS)
def test_subject_ids_and_date_shifts_are_those_of_before(value: str) -> None:
    key = SiteKey(KEY)
    assert key.subject_id(value) == _old_subject_id(KEY, value)
    assert key.date_shift_days(value) == _old_shift(KEY, value)
    deid = Deidentifier(KEY)  # the de-identifier derives through the same key
    assert deid.subject_id(value) == key.subject_id(value)
    assert deid.date_shift_days(value) == key.date_shift_days(value)


@pytest.mark.parametrize("value", UIDS)
def test_uids_are_those_of_before(value: str) -> None:
    assert SiteKey(KEY).uid(value) == _old_uid(KEY, value) == Deidentifier(KEY).uid(value)


def test_pinned_values() -> None:
    """Literal outputs computed with the de-identifier before the move: they never change."""
    key = SiteKey(KEY)
    assert key.subject_id("P123") == key.subject_id(" P123 ") == "b5apfkuothcfxmzyl6l4"
    assert key.date_shift_days("P123") == -1916
    assert key.subject_id("\x00study\x001.2.3") == "l7qemg4xgylyv2phzif3"
    assert key.subject_id("Émilie^Ç") == "4ceorcnpakgowxtyy3cf"
    assert key.date_shift_days("Émilie^Ç") == -2652
    assert key.uid("1.2.840.113619.2.55.3.1") == "2.25.42106924876444281011069677224587801902"
    assert key.uid("1.2.3.4\x00") == "2.25.103966318126668481539140266246627621190"
    assert legacy_audit_fingerprint("file:///tmp/site-a", "abcdefghij0123456789") == (
        "77850618115179d9"
    )


def test_purposes_are_separated_and_keyed() -> None:
    key, other = SiteKey(KEY), SiteKey(b"another-site-secret-9876543210")
    digests = {key.digest(p, "P123") for p in Purpose}
    assert len(digests) == len(Purpose)  # one value, four unrelated digests
    assert key.subject_id("P123") != other.subject_id("P123")
    assert key.uid("1.2.3") != other.uid("1.2.3")
    assert all(-3650 <= key.date_shift_days(str(i)) <= -365 for i in range(500))


def test_audit_fingerprint_is_keyed(tmp_path) -> None:
    store = open_store(tmp_path / "site", site="a")
    key, other = SiteKey(KEY), SiteKey(b"another-site-secret-9876543210")
    fp = audit.fingerprint(key, store, "subject-1")
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == key.audit_fingerprint(store.url, "subject-1")
    assert fp != audit.fingerprint(other, store, "subject-1")  # needs the secret
    assert fp != legacy_audit_fingerprint(store.url, "subject-1")  # no longer a plain hash
    assert fp not in {hashlib.sha256(f"{store.url}|subject-1".encode()).hexdigest()[:16]}
    assert audit.fingerprints(key, store, "subject-1") == (
        fp,
        legacy_audit_fingerprint(store.url, "subject-1"),
    )


def test_the_secret_is_checked_and_never_shown(monkeypatch) -> None:
    with pytest.raises(InvalidInput):
        SiteKey(b"short")
    with pytest.raises(InvalidInput):
        SiteKey("a text secret is refused" * 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ATLAS_X_SECRET is not set"):
        SiteKey.from_env("ATLAS_X_SECRET", environ={})
    with pytest.raises(ConfigError, match="too short") as info:
        SiteKey.from_env("ATLAS_X_SECRET", environ={"ATLAS_X_SECRET": "tiny"})
    assert "tiny" not in str(info.value)
    key = SiteKey.from_env("V", environ={"V": KEY.decode()})
    assert key.subject_id("P123") == SiteKey(KEY).subject_id("P123")
    assert KEY.decode() not in repr(key) and "hidden" in repr(key)
    again = pickle.loads(pickle.dumps(key))  # worker processes get the same key
    assert again.subject_id("P123") == key.subject_id("P123")
