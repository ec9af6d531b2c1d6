"""Keyed pseudonyms: one keyed derivation for every value that stands in for an original.

Every pseudonymous value Atlas writes derives from **HMAC-SHA256 with the site secret**,
domain-separated by its purpose (:class:`Purpose`): the message is the purpose's prefix, one NUL
byte, then the UTF-8 original. A value derived for one purpose therefore never equals or
predicts the value of another purpose, and nobody without the secret can compute any of them
from an original (or test a guess).

- **subject id** (:meth:`SiteKey.subject_id`): the first 20 characters of the lower-case base32
  digest (100 bits) of the subject key (the Patient ID, surrounding spaces removed, or another
  subject key, see :mod:`atlas.ingest.subjects`);
- **UID** (:meth:`SiteKey.uid`): ``2.25.`` + the first 128 bits of the digest as a decimal
  integer (at most 44 characters), of the UID without surrounding spaces or trailing NULs;
- **date shift** (:meth:`SiteKey.date_shift_days`): ``-(365 + n mod 3286)`` days, ``n`` the
  first 64 bits of the digest of the patient id: every date of a subject moves back by the
  same whole number of days in [-3650, -365] (never forward, never zero);
- **audit fingerprint** (:meth:`SiteKey.audit_fingerprint`): the first 16 hex digits of the
  digest of ``"<store URL>|<subject id>"``: how the audit log names a subject without its
  pseudonym, so that someone holding a pseudonym (from a released data set) cannot look it up
  in the log.

The subject, UID and date-shift derivations are those the de-identifier always used, byte for
byte (pinned by ``tests/privacy/test_pseudonyms.py``), so existing stores keep resolving. The
audit fingerprint was a plain SHA-256 before decision 0031; :func:`legacy_audit_fingerprint`
computes that form only so that events written before can still be matched.

The secret is kept in memory only and never logged, printed or put in an error: ``repr``
hides it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from enum import StrEnum

from atlas.errors import ConfigError, InvalidInput

__all__ = [
    "DEFAULT_SECRET_ENV",
    "MIN_KEY_BYTES",
    "SHIFT_MAX_DAYS",
    "SHIFT_MIN_DAYS",
    "Purpose",
    "SiteKey",
    "legacy_audit_fingerprint",
]

#: shortest accepted site secret, in bytes
MIN_KEY_BYTES = 16
#: the environment variable that holds the site secret unless another is named
DEFAULT_SECRET_ENV = "ATLAS_SITE_SECRET"
#: the date shift is a whole number of days in [-SHIFT_MAX_DAYS, -SHIFT_MIN_DAYS]
SHIFT_MIN_DAYS = 365
SHIFT_MAX_DAYS = 3650


class Purpose(StrEnum):
    """What a keyed value is for: its domain-separation prefix (never change a value)."""

    SUBJECT = "atlas/subject"
    UID = "atlas/uid"
    DATE_SHIFT = "atlas/date-shift"
    AUDIT = "atlas/audit"


class SiteKey:
    """The site secret, and every pseudonym derived from it.

    Parameters
    ----------
    key
        The site secret, at least :data:`MIN_KEY_BYTES` bytes.

    Raises
    ------
    InvalidInput
        ``key`` is not bytes or is too short.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes | bytearray | memoryview) -> None:
        if not isinstance(key, bytes | bytearray | memoryview):
            raise InvalidInput("the site secret must be bytes")
        raw = bytes(key)
        if len(raw) < MIN_KEY_BYTES:
            raise InvalidInput(f"the site secret must be at least {MIN_KEY_BYTES} bytes long")
        self._key = raw

    @classmethod
    def from_env(
        cls, var: str = DEFAULT_SECRET_ENV, *, environ: Mapping[str, str] | None = None
    ) -> SiteKey:
        """Read the site secret from the environment variable ``var`` (UTF-8 bytes).

        Parameters
        ----------
        var
            The variable's name.
        environ
            Replaces ``os.environ`` (tests).

        Raises
        ------
        ConfigError
            The variable is unset, empty or shorter than :data:`MIN_KEY_BYTES` bytes; the message
            names the variable, never its value.
        """
        env = os.environ if environ is None else environ
        raw = env.get(var)
        if not raw:
            raise ConfigError(
                f"environment variable {var} is not set: it must hold the site secret "
                f"(at least {MIN_KEY_BYTES} bytes) used to derive pseudonyms"
            )
        key = raw.encode("utf-8")
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"environment variable {var} is too short: the site secret must be at least "
                f"{MIN_KEY_BYTES} bytes long"
            )
        return cls(key)

    def __repr__(self) -> str:
        return "SiteKey(<hidden>)"

    def digest(self, purpose: Purpose, value: str) -> bytes:
        """HMAC-SHA256 of ``value`` with the site secret, domain-separated by ``purpose``.

        Parameters
        ----------
        purpose
            What the value is for.
        value
            The original (encoded as UTF-8).

        Returns
        -------
        bytes
            The 32-byte digest.
        """
        message = Purpose(purpose).value.encode("ascii") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def subject_id(self, patient_id: str) -> str:
        """The pseudonymous subject id of ``patient_id``: 20 lower-case base32 characters."""
        digest = self.digest(Purpose.SUBJECT, str(patient_id).strip())
        return base64.b32encode(digest).decode("ascii")[:20].lower()

    def uid(self, original_uid: str) -> str:
        """The deterministic replacement of ``original_uid``: ``2.25.<int>`` (at most 44 chars)."""
        digest = self.digest(Purpose.UID, str(original_uid).strip().rstrip("\x00"))
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def date_shift_days(self, patient_id: str) -> int:
        """Days every date of ``patient_id`` moves by: an integer in [-3650, -365]."""
        digest = self.digest(Purpose.DATE_SHIFT, str(patient_id).strip())
        span = SHIFT_MAX_DAYS - SHIFT_MIN_DAYS + 1
        return -(SHIFT_MIN_DAYS + int.from_bytes(digest[:8], "big") % span)

    def audit_fingerprint(self, store_url: str, subject_id: str) -> str:
        """How the audit log names ``subject_id`` of the store at ``store_url``: 16 hex digits."""
        return self.digest(Purpose.AUDIT, f"{store_url}|{subject_id}").hex()[:16]


def legacy_audit_fingerprint(store_url: str, subject_id: str) -> str:
    """The unkeyed fingerprint audit events carried before decision 0031 (for matching only).

    The first 16 hex digits of plain SHA-256 over ``"<store URL>|<subject id>"``. Never written
    any more: it only lets an erasure recognise the events an older version wrote.
    """
    return hashlib.sha256(f"{store_url}|{subject_id}".encode()).hexdigest()[:16]
