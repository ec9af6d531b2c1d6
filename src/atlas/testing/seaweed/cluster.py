"""A multi-process SeaweedFS cluster on loopback.

Master, two replicating volume servers, filer and S3 gateway, each its own process.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from pathlib import Path

from atlas.errors import InvalidInput
from atlas.testing.seaweed.base import _SeaweedBase
from atlas.testing.seaweed.binary import _LOOPBACK_FLAGS, _unix_socket_path
from atlas.testing.seaweed.ports import free_port_block
from atlas.testing.seaweed.process import (
    _STOP_TIMEOUT_S,
    _http_get_json,
    _Proc,
    _remove_stale_sockets,
    _signal_group,
    _tcp_accepts,
)

__all__ = ["SeaweedCluster"]

_FILER_STOP_GRACE_S = 2.0


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

        Raises
        ------
        InvalidInput
            there is no running volume server ``i``.
        """
        if not 0 <= i < len(self._volumes) or self._volumes[i].popen is None:
            raise InvalidInput(f"no volume server {i} in cluster {self.name!r}")
        popen = self._volumes[i].popen
        assert popen is not None
        _signal_group(popen, signal.SIGKILL)
        popen.wait(_STOP_TIMEOUT_S)
        _remove_stale_sockets([self.ports[f"volume{i}"]])

    def restart_volume(self, i: int, timeout: float = 30.0) -> None:
        """Start volume server ``i`` again (same port and data).

        Waits until the master lists it. A no-op if it is running.

        Raises
        ------
        InvalidInput
            there is no volume server ``i``.
        StoreUnavailable
            it did not register with the master within ``timeout`` seconds.
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
