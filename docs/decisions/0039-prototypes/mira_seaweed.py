"""Prototype: SeaweedS3's process handling on mirakuru (for decision 0039, not shipped)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mirakuru import Executor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from atlas.errors import StoreUnavailable
from atlas.testing.seaweed.base import _SeaweedBase
from atlas.testing.seaweed.binary import _child_env, _PORT_TAKEN_SIGNS, find_weed
from atlas.testing.seaweed.credentials import _write_s3_config
from atlas.testing.seaweed.process import _remove_stale_sockets
from atlas.testing.seaweed.single import SeaweedS3


class _WeedExecutor(Executor):
    """One weed process; ready when ``ready()`` is true; environment scrubbed."""

    def __init__(self, argv: list[str], cwd: Path, log: Any, ready: Any, timeout: float) -> None:
        super().__init__(argv, cwd=str(cwd), timeout=timeout, sleep=0.05,
                         stdin=None, stdout=log, stderr=log)
        self._ready = ready
        self._env = _child_env(cwd)

    @property
    def envvars(self) -> dict[str, str]:  # mirakuru copies os.environ: scrub it again
        return {**self._env, "mirakuru_uuid": self._uuid}

    def pre_start_check(self) -> bool:
        return False

    def after_start_check(self) -> bool:
        try:
            return bool(self._ready())
        except Exception:
            return False


class MiraSeaweedS3(SeaweedS3):
    """SeaweedS3 whose process is a mirakuru executor."""

    def start(self, timeout: float = 30.0) -> MiraSeaweedS3:
        self._weed = find_weed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        _write_s3_config(self.s3_config_path, self.admin, self.readonly)
        began = time.monotonic()
        for attempt in range(3):
            self.ports = self._allocate_ports() if (attempt or not self.ports) else self.ports
            log_path = self.workdir / f"{self.name}.log"
            log = open(log_path, "ab")
            args = self._mini_args()
            client = self.s3_client(timeout=2.0)

            def ready() -> bool:
                have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                for b in self.buckets:
                    if b not in have:
                        client.create_bucket(Bucket=b)
                return set(self.buckets) <= have

            self._ex = _WeedExecutor([self._weed, *args], self.workdir, log, ready,
                                     max(0.0, began + timeout - time.monotonic()))
            try:
                self._ex.start()
                break
            except ProcessExitedWithError as exc:
                tail = log_path.read_text(errors="replace")[-4000:]
                if any(s in tail for s in _PORT_TAKEN_SIGNS) and attempt < 2:
                    continue
                raise StoreUnavailable(f"{self.name}: exited during startup\n{tail}") from exc
            except TimeoutExpired as exc:
                self._ex.kill()
                tail = log_path.read_text(errors="replace")[-4000:]
                raise StoreUnavailable(f"{self.name}: not ready in time\n{tail}") from exc
            finally:
                client.close()
                log.close()
        self.startup_seconds = time.monotonic() - began
        return self

    def _mini_args(self) -> list[str]:
        captured: list[list[str]] = []
        self._spawn = lambda name, args, grace=8.0: captured.append(args)  # type: ignore[method-assign]
        self._wait_for_s3 = lambda deadline: None  # type: ignore[method-assign]
        self._launch(0.0)
        del self._spawn, self._wait_for_s3
        return captured[0]

    def stop(self) -> None:
        ex = getattr(self, "_ex", None)
        if ex is not None and ex.running():
            ex.stop()  # SIGTERM to the group, waits, SIGKILL after its timeout
        _remove_stale_sockets(self.ports.values())

    @property
    def running(self) -> bool:
        ex = getattr(self, "_ex", None)
        return ex is not None and ex.running()

    @property
    def pids(self) -> list[int]:
        ex = getattr(self, "_ex", None)
        return [ex.process.pid] if ex is not None and ex.running() and ex.process else []
