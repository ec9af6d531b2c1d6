"""Server processes: started in their own process group with a log file, stopped by signal.

Also the readiness probes the servers are polled with (loopback HTTP and TCP).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from atlas.errors import StoreUnavailable
from atlas.testing.seaweed.ports import GRPC_PORT_OFFSET

_STOP_TIMEOUT_S = 8.0  # SIGTERM grace period before SIGKILL
_LOG_TAIL_BYTES = 4000


class _Proc:
    """One ``weed`` subcommand running in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # where this run's output starts in the (appended) log file

    def start(self, cwd: Path, env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- atlas: starting {self.name} at {time.ctime()} ---\n".encode())
            log.flush()
            self.log_offset = log.tell()
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, nbytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``nbytes`` of what this run wrote (earlier runs' output excluded)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self.log_offset, fh.tell() - nbytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group led by ``popen`` unless it was already reaped."""
    if popen.poll() is not None:
        return  # already reaped: its pid (and group id) may belong to someone else by now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)


def _terminate(procs: list[tuple[subprocess.Popen[bytes], float]], hard: bool) -> None:
    """Stop processes in reverse start order: SIGTERM, wait up to each one's grace, SIGKILL.

    ``procs`` holds ``(process, grace seconds)`` pairs and is emptied. With ``hard`` every
    process gets SIGKILL at once. Module-level (no reference to the server object) so
    :func:`weakref.finalize` can call it at garbage collection or interpreter exit.
    """
    for popen, grace in reversed(procs):
        if hard:
            _signal_group(popen, signal.SIGKILL)
            continue
        _signal_group(popen, signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(popen, signal.SIGKILL)
    for popen, _ in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(_STOP_TIMEOUT_S)
    procs.clear()


def _remove_stale_sockets(ports: Iterable[int]) -> None:
    """Remove the unix sockets weed leaves in the temp dir.

    ``weed mini`` leaves its admin and S3 gRPC sockets even after a clean stop; SIGKILL leaves
    all of them.
    """
    tmp = Path(tempfile.gettempdir())
    for port in ports:
        for candidate in (port, port + GRPC_PORT_OFFSET):
            for path in tmp.glob(f"seaweedfs-*-{candidate}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


class _BindConflict(StoreUnavailable):
    """A server process exited because one of its ports was taken meanwhile (retryable).

    The start retries on other ports; should it ever escape, it is a store not available.
    """


def _http_get_json(url: str, timeout: float = 2.0) -> Any:
    """GET a loopback URL as JSON, ignoring any proxy configured in the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.load(response)


def _tcp_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0
