"""S3 and S3-compatible object stores (SeaweedFS, MinIO, AWS).

s3fs serves zarr and fsspec, tensorstore's ``s3`` driver serves tensorstore, and
``PutObject`` preconditions make conditional writes atomic.

Credentials are read from the environment variables the location names, in the process that
opens the store. s3fs gets them as arguments; tensorstore gets them through a private
credentials file that the kvstore spec names (``aws_credentials`` of type ``profile``), one
per store handle, removed when the handle is closed or collected (decision 0030). The process
environment is never changed.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from zarr.storage import FsspecStore

from atlas.errors import ConfigError, Forbidden, NotFound, StoreUnavailable
from atlas.storage.base import Backend, Hooked, ObjectStat
from atlas.storage.failures import translated
from atlas.storage.location import StoreLocation
from atlas.storage.s3session import close_fs, make_s3fs
from atlas.storage.timeouts import (
    configure_tensorstore_http,
    s3_config_kwargs,
    tensorstore_context_spec,
)

__all__ = ["S3Backend", "S3ZarrStore"]

_S3_CONFLICT_ATTEMPTS = 5
#: user metadata naming the call that wrote an object conditionally (x-amz-meta-atlas-write-id)
_WRITE_ID_META = "atlas-write-id"
#: the profile name inside a handle's private tensorstore credentials file
_TS_PROFILE = "atlas"


class S3ZarrStore(FsspecStore):
    """zarr's FsspecStore on s3fs, with two changes.

    - A refused delete raises instead of passing silently: ``FsspecStore.delete`` uses s3fs's
      bulk ``_rm``, which ignores per-key errors in the DeleteObjects response, so a key
      without delete permission would look deleted. Erasure cannot live with that, so single
      deletes go through ``DeleteObject``.
    - Listings hold objects only: SeaweedFS (with its filer) answers an emptied "folder" as
      an entry of type ``directory``, which zarr's FsspecStore would list as a key.
    - It pickles as its location (names of credential variables, never their values), so a
      zarr array sent to a dask worker reopens the store there with that process's
      credentials instead of carrying the S3 client and its secret key.
    """

    def __init__(self, *args: Any, location: StoreLocation | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.location = location

    async def delete(self, key: str) -> None:
        self._check_writable()
        path = f"{self.path.rstrip('/')}/{key}" if key else self.path
        with suppress(FileNotFoundError):
            await self.fs._rm_file(path)

    async def _objects(self, path: str) -> list[str]:
        found = await self.fs._find(path, detail=True, maxdepth=None, withdirs=False)
        return [name for name, info in found.items() if info.get("type") != "directory"]

    async def list(self) -> AsyncIterator[str]:
        for name in await self._objects(self.path):
            yield name.removeprefix(self.path + "/")

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for name in await self._objects(f"{self.path}/{prefix}"):
            yield name.removeprefix(f"{self.path}/")

    def with_read_only(self, read_only: bool = False) -> S3ZarrStore:
        clone = type(self)(
            fs=self.fs,
            path=self.path,
            read_only=read_only,
            allowed_exceptions=self.allowed_exceptions,
        )
        clone.location = self.location
        return clone

    def __reduce__(self) -> Any:
        if self.location is None:
            return super().__reduce__()
        return (_reopen, (self.location.to_dict(), self.read_only))


def _reopen(location: dict[str, Any], read_only: bool) -> S3ZarrStore:
    store = S3Backend(StoreLocation.from_dict(location)).zarr_store()
    return store.with_read_only(True) if read_only else store


class S3Backend(Backend):
    """``s3://bucket/prefix`` with an optional endpoint, region and credential variable names."""

    scheme = "s3"
    is_remote = True
    uses_credentials = True

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        self._afs: Any = None
        self._ts_dir: str | None = None
        self._ts_cleanup: weakref.finalize | None = None
        self._ts_lock = threading.Lock()

    @classmethod
    def permission_hint(cls, location: StoreLocation) -> str:
        return f"check the credentials in ${location.key_env}/${location.secret_env}"

    # -- s3fs / zarr -----------------------------------------------------------------------
    def s3fs_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (credentials resolved from the env)."""
        loc = self.location
        opts: dict[str, Any] = {
            "client_kwargs": {"region_name": loc.region},
            "config_kwargs": s3_config_kwargs(loc.timeouts),
        }
        if loc.endpoint:
            opts["client_kwargs"]["endpoint_url"] = loc.endpoint
        creds = self.credentials()
        if creds is None:
            opts["anon"] = True
        else:
            opts["key"], opts["secret"] = creds
        return opts

    def make_fs(self, asynchronous: bool) -> Any:
        try:
            return make_s3fs(self.s3fs_options(), self.location.timeouts, asynchronous=asynchronous)
        except ImportError as exc:  # pragma: no cover - the registry checks first
            raise ConfigError("s3:// stores need s3fs: pip install 'atlas-imaging[s3]'") from exc

    def async_fs(self) -> Any:
        """The asynchronous s3fs filesystem (made on first use)."""
        if self._afs is None:
            self._afs = self.make_fs(asynchronous=True)
        return self._afs

    def zarr_store(self) -> S3ZarrStore:
        return S3ZarrStore(fs=self.async_fs(), path=self.location.root, location=self.location)

    def query_url(self, key: str) -> str:
        return "s3://" + self.fs_path(self.location.child(key))

    def close(self) -> None:
        for fs in (self._afs, self._fs):
            if fs is not None:
                close_fs(fs)
        self._afs = None
        super().close()
        with self._ts_lock:
            if self._ts_cleanup is not None:
                self._ts_cleanup()
            self._ts_dir, self._ts_cleanup = None, None

    # -- tensorstore -----------------------------------------------------------------------
    def kvstore_spec(self, location: StoreLocation) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "driver": "s3",
            "bucket": location.bucket,
            "path": (location.prefix.rstrip("/") + "/") if location.prefix else "",
            "aws_region": location.region,
            "aws_credentials": self._ts_credentials(),
        }
        if location.endpoint:
            spec["endpoint"] = location.endpoint
        return spec

    def tensorstore_context_spec(self) -> dict[str, Any]:
        configure_tensorstore_http(self.location.timeouts)
        return tensorstore_context_spec(self.location.timeouts)

    def _ts_credentials(self) -> dict[str, Any]:
        """Tensorstore's ``aws_credentials`` for this store: a private profile file."""
        creds = self.credentials()
        if creds is None:
            return {"type": "anonymous"}
        with self._ts_lock:
            if self._ts_dir is None or not os.path.isdir(self._ts_dir):
                self._ts_dir = _write_credentials(creds, self.location.region)
                self._ts_cleanup = weakref.finalize(self, shutil.rmtree, self._ts_dir, True)
            folder = self._ts_dir
        return {
            "type": "profile",
            "profile": _TS_PROFILE,
            "credentials_file": os.path.join(folder, "credentials"),
            "config_file": os.path.join(folder, "config"),
        }

    # -- conditional writes ----------------------------------------------------------------
    async def _client(self) -> Any:
        fs = self.async_fs()
        await fs.set_session()
        return await fs.get_s3(self.location.bucket)

    def _key(self, key: str) -> str:
        return self.location.child(key).prefix

    async def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        client = await self._client()
        try:
            response = await client.get_object(Bucket=self.location.bucket, Key=self._key(key))
            async with response["Body"] as body:
                data = await body.read()
        except Exception as exc:
            code, status = _s3_error(exc)
            if code == "NoSuchKey":
                return None
            if status is not None and status >= 500:
                raise self._unavailable(key, "get", f"HTTP {status} {code}") from exc
            raise
        return bytes(data), str(response["ETag"])

    async def stat(self, key: str) -> ObjectStat | None:
        client = await self._client()
        try:
            head = await client.head_object(Bucket=self.location.bucket, Key=self._key(key))
        except Exception as exc:
            status = _s3_error(exc)[1]
            if status == 404:
                return None
            if status == 403:  # HEAD errors carry no code, so translate() cannot tell
                loc = self.location
                who = f"site {loc.site!r} " if loc.site else ""
                raise Forbidden(
                    f"{who}refused to read key {key!r} of {loc.url}",
                    site=loc.site,
                    location=loc.url,
                ) from exc
            if status is not None and status >= 500:
                raise self._unavailable(key, "stat", f"HTTP {status}") from exc
            raise
        return ObjectStat(int(head["ContentLength"]), str(head["ETag"]))

    async def put_conditional(
        self, key: str, data: bytes, version: str | None, write_id: str
    ) -> bool:
        client = await self._client()
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        for conflict in range(1, _S3_CONFLICT_ATTEMPTS + 1):
            try:
                await client.put_object(
                    Bucket=self.location.bucket,
                    Key=self._key(key),
                    Body=data,
                    Metadata={_WRITE_ID_META: write_id},
                    **condition,
                )
                return True
            except Exception as exc:
                code, status = _s3_error(exc)
                if status == 412:
                    # A lost race, or this call's own write answered late: an earlier attempt
                    # whose answer was lost (and which aiohttp, botocore or the retry policy
                    # sent again) may have landed. The write id tells the two apart.
                    return await self._written_by(key, write_id)
                if status == 409 and conflict < _S3_CONFLICT_ATTEMPTS:
                    await asyncio.sleep(random.uniform(0, 0.05 * 2**conflict))
                    continue
                if status is not None and (status == 409 or status >= 500):
                    raise self._unavailable(key, "set", f"HTTP {status} {code}") from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _written_by(self, key: str, write_id: str) -> bool:
        """Whether the object at ``key`` now is the one written with ``write_id``."""
        client = await self._client()
        loc = self.location
        try:
            head = await client.head_object(Bucket=loc.bucket, Key=self._key(key))
        except Exception as exc:
            status = _s3_error(exc)[1]
            if status == 404:
                return False
            if status == 403:  # HEAD errors carry no code, so translate() cannot tell
                who = f"site {loc.site!r} " if loc.site else ""
                raise Forbidden(
                    f"{who}refused to read back key {key!r} of {loc.url} after a conditional "
                    "write found it taken; conditional writes need read permission too",
                    site=loc.site,
                    location=loc.url,
                ) from exc
            raise
        return bool(head.get("Metadata", {}).get(_WRITE_ID_META) == write_id)

    def _unavailable(self, key: str, op: str, what: str) -> StoreUnavailable:
        loc = self.location
        who = f"site {loc.site!r} " if loc.site else ""
        return StoreUnavailable(
            f"{who}store {loc.url} could not {op} key {key!r} ({what}); often transient, try again",
            site=loc.site,
            location=loc.url,
        )

    # -- checks ----------------------------------------------------------------------------
    def ensure_reachable(self, create: bool, hooked: Hooked) -> None:
        loc = self.location
        fs = self.async_fs()
        who = f"site {loc.site!r}: " if loc.site else ""

        async def head() -> None:
            with translated(loc, op="open bucket of"):
                try:
                    await fs._call_s3("head_bucket", Bucket=loc.bucket)
                except FileNotFoundError as exc:
                    raise NotFound(
                        f"{who}bucket {loc.bucket!r} does not exist at {loc.endpoint or 'AWS'}",
                        site=loc.site,
                        location=loc.url,
                    ) from exc

        # through the wrapper stack: error translation, faults, retries within the deadline
        hooked("exists", "", head)


def _write_credentials(creds: tuple[str, str], region: str) -> str:
    """A new private folder (0700) holding a credentials and a config file (0600 each)."""
    key, secret = creds
    if any(c in text for text in creds for c in "\r\n[]"):
        raise ConfigError("S3 credentials may not contain line breaks or brackets")
    folder = tempfile.mkdtemp(prefix="atlas-ts-credentials-")  # mode 0700
    files = {
        "credentials": (
            f"[{_TS_PROFILE}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        ),
        "config": f"[profile {_TS_PROFILE}]\nregion = {region}\n",
    }
    for name, text in files.items():
        fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    return folder


def _s3_error(exc: BaseException) -> tuple[str | None, int | None]:
    """The S3 error code and HTTP status of a botocore ``ClientError`` (``None`` otherwise)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return response.get("Error", {}).get("Code"), int(status) if status else None
