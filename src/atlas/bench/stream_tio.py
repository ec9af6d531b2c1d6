"""TorchIO image classes for NIfTI objects on S3 (imported only by the TorchIO row).

TorchIO re-creates images when it crops patches, passing the original path, and checks that the
path is a local file unless told otherwise; these subclasses tell it so, so a ``bucket/key``
path read by a custom reader survives cropping in the queue's workers (they are module-level
classes, so the patches pickle back from the workers).
"""

from __future__ import annotations

from typing import Any

import torchio as tio

__all__ = ["RemoteLabelMap", "RemoteScalarImage"]


class RemoteScalarImage(tio.ScalarImage):
    """A ``ScalarImage`` whose path is not a local file (``verify_path=False`` by default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("verify_path", False)
        super().__init__(*args, **kwargs)


class RemoteLabelMap(tio.LabelMap):
    """A ``LabelMap`` whose path is not a local file (``verify_path=False`` by default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("verify_path", False)
        super().__init__(*args, **kwargs)
