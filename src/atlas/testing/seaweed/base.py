"""What both server shapes share.

Bucket names, credentials, client configuration, lifecycle (start with retries on a port taken
meanwhile, stop, kill, finalizer) and readiness polling.
"""

from __future__ import annotations

import re
import subprocess
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from atlas.errors import InvalidInput, NotFound, StoreUnavailable
from atlas.testing.seaweed.binary import (
    _MINI_PORT_TAKEN,
    _PORT_TAKEN_SIGNS,
    _child_env,
    find_weed,
)
from atlas.testing.seaweed.credentials import REGION, S3Credentials, _write_s3_config
from atlas.testing.seaweed.process import (
    _STOP_TIMEOUT_S,
    _BindConflict,
    _Proc,
    _remove_stale_sockets,
    _terminate,
)

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


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

        Raises
        ------
        NotFound
            the ``weed`` executable is missing.
        StoreUnavailable
            the server did not come up within ``timeout`` seconds; the
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
        """Wait until a signed ``ListBuckets`` succeeds, then create any missing bucket.

        A probe waits at most 2 s, and never much past ``deadline``: weed accepts connections
        on its S3 port before it answers them, so a 2 s probe started at the deadline could
        still succeed after it.
        """
        client = self.s3_client(timeout=min(2.0, max(deadline - time.monotonic(), 0.1)))

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
