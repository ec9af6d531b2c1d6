"""S3 identities for SeaweedFS test servers: generated key pairs and the identities file."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REGION", "S3Credentials"]

#: Region name given to clients; SeaweedFS accepts any, botocore needs one to sign.
REGION = "us-east-1"
_ADMIN_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")
_READONLY_ACTIONS = ("Read", "List")


@dataclass(frozen=True)
class S3Credentials:
    """An S3 access key pair. The secret never appears in ``repr`` (logs, test reports)."""

    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls, prefix: str = "ATLAS") -> S3Credentials:
        """Random credentials (``secrets.token_hex``), access key starting with ``prefix``."""
        return cls(f"{prefix}{secrets.token_hex(8).upper()}", secrets.token_hex(20))


def _write_s3_config(path: Path, admin: S3Credentials, readonly: S3Credentials) -> None:
    """Write the SeaweedFS identities file (``-s3.config``), readable by the owner only."""

    def identity(name: str, creds: S3Credentials, actions: Sequence[str]) -> dict[str, Any]:
        return {
            "name": name,
            "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
            "actions": list(actions),
        }

    config = {
        "identities": [
            identity("atlas-admin", admin, _ADMIN_ACTIONS),
            identity("atlas-readonly", readonly, _READONLY_ACTIONS),
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
