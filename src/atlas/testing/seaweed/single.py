"""One ``weed mini`` process: master, volume server, filer and S3 gateway on loopback."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from atlas.testing.seaweed.base import _SeaweedBase
from atlas.testing.seaweed.binary import _LOOPBACK_FLAGS, _unix_socket_path
from atlas.testing.seaweed.ports import free_port_block

__all__ = ["SeaweedS3"]


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
