"""Where bytes live, named by URL: a local directory, ``memory://`` or ``s3://bucket/prefix``.

A :class:`StoreLocation` is plain, frozen, JSON-able data. It holds the *names* of the
environment variables that carry credentials, never the credentials themselves, so it can be
written into configs, logged and pickled to other processes safely.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from atlas.errors import InvalidInput
from atlas.storage.limits import Timeouts

Scheme = Literal["file", "memory", "s3"]

DEFAULT_KEY_ENV = "AWS_ACCESS_KEY_ID"
DEFAULT_SECRET_ENV = "AWS_SECRET_ACCESS_KEY"
_S3_QUERY_KEYS = {"endpoint", "region", "key_env", "secret_env", "anonymous"}


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store URL plus the options needed to reach it (JSON-able, picklable).

    ``root`` is an absolute directory for ``file``, ``name/prefix`` for ``memory`` and
    ``bucket/prefix`` for ``s3``.
    """

    scheme: Scheme
    root: str
    endpoint: str | None = None
    region: str = "us-east-1"
    key_env: str = DEFAULT_KEY_ENV
    secret_env: str = DEFAULT_SECRET_ENV
    anonymous: bool = False
    site: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def url(self) -> str:
        """The canonical URL, without credentials or query options."""
        if self.scheme == "file":
            return Path(self.root).as_uri()
        return f"{self.scheme}://{self.root}"

    @property
    def bucket(self) -> str:
        """The S3 bucket (only for ``s3``)."""
        if self.scheme != "s3":
            raise InvalidInput(f"{self.url} is not an S3 location, it has no bucket")
        return self.root.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket or memory namespace ('' at the top)."""
        parts = self.root.split("/", 1)
        return parts[1] if len(parts) == 2 and self.scheme != "file" else ""

    def child(self, path: str) -> StoreLocation:
        """The location of ``path`` below this one."""
        path = clean_key_path(path)
        if not path:
            return self
        if self.scheme == "file":
            return replace(self, root=str(Path(self.root) / path))
        return replace(self, root=posixpath.join(self.root, path))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (no secrets: only the names of the credential variables)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreLocation:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        timeouts = data.pop("timeouts", None)
        return cls(**data, timeouts=Timeouts(**timeouts) if timeouts else Timeouts())


def clean_key_path(path: str) -> str:
    """``path`` as a clean relative key (no empty or ``.`` parts); ``..`` is InvalidInput."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInput(f"store paths may not contain '..': {path!r}")
    return "/".join(parts)


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is an ``http(s)://host[:port]`` URL, else :class:`InvalidInput`."""
    if not isinstance(endpoint, str):
        raise InvalidInput(f"S3 endpoint must be an http(s) URL string, got {endpoint!r}")
    split = urlsplit(endpoint)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise InvalidInput(
            f"S3 endpoint must be an http(s) URL such as http://127.0.0.1:8333, got {endpoint!r}"
        )
    try:
        port = split.port
    except ValueError:  # not a number, or outside 0-65535
        port = 0
    if port == 0 or (port is None and split.netloc.endswith(":")):
        raise InvalidInput(
            f"S3 endpoint {endpoint!r} has an invalid port; use a number from 1 to 65535"
        )
    return endpoint


def parse_url(
    url: str | os.PathLike[str],
    *,
    endpoint: str | None = None,
    region: str | None = None,
    key_env: str | None = None,
    secret_env: str | None = None,
    anonymous: bool | None = None,
    site: str | None = None,
    timeouts: Timeouts | None = None,
) -> StoreLocation:
    """Parse a store URL.

    Accepted forms: a plain path (``./atlas-data``, ``/data/atlas``), ``file:///abs/path``,
    ``memory://name/prefix`` and ``s3://bucket/prefix``. S3 options may also be given as query
    parameters (``s3://b/p?endpoint=http://127.0.0.1:8333&region=eu-west-1&key_env=SITE_KEY``);
    keyword arguments win over query parameters.
    """
    text = os.fspath(url).strip()
    if not text:
        raise InvalidInput("empty store URL; give a directory, memory://NAME or s3://BUCKET/PREFIX")
    split = urlsplit(text)
    scheme = split.scheme.lower()
    # A Windows drive letter or a plain relative/absolute path has no (or a 1-letter) scheme.
    if scheme in ("", "file") or len(scheme) == 1:
        if scheme == "file" and split.netloc not in ("", "localhost"):
            raise InvalidInput(
                f"file URL {text!r} names a host ({split.netloc!r}); use file:///absolute/path "
                "or a plain directory path"
            )
        path = split.path if scheme == "file" else text
        root = str(Path(path).expanduser().resolve())
        return StoreLocation(scheme="file", root=root, site=site)
    if scheme == "memory":
        root = clean_key_path(split.netloc + "/" + split.path)
        if not root:
            raise InvalidInput("memory:// URLs need a name, e.g. memory://scratch")
        return StoreLocation(scheme="memory", root=root, site=site)
    if scheme == "s3":
        bucket = split.netloc
        if not bucket:
            raise InvalidInput(f"S3 URL {text!r} has no bucket; use s3://BUCKET/PREFIX")
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        unknown = set(query) - _S3_QUERY_KEYS
        if unknown:
            raise InvalidInput(
                f"unknown S3 URL option(s) {sorted(unknown)}; known: {sorted(_S3_QUERY_KEYS)}"
            )
        root = clean_key_path(bucket + "/" + split.path)
        endpoint = endpoint or query.get("endpoint")
        if endpoint is not None:
            check_endpoint(endpoint)
        return StoreLocation(
            scheme="s3",
            root=root,
            endpoint=endpoint,
            region=region or query.get("region") or "us-east-1",
            key_env=key_env or query.get("key_env") or DEFAULT_KEY_ENV,
            secret_env=secret_env or query.get("secret_env") or DEFAULT_SECRET_ENV,
            anonymous=bool(anonymous)
            if anonymous is not None
            else query.get("anonymous", "").lower() in ("1", "true", "yes"),
            site=site,
            timeouts=timeouts or Timeouts(),
        )
    raise InvalidInput(
        f"unsupported store URL scheme {scheme!r} in {text!r}; "
        "use a local directory, memory://NAME or s3://BUCKET/PREFIX"
    )
