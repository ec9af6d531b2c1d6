"""Export one series: find it in the catalog, read it, write NIfTI or PNG files atomically.

Everything that can be refused is checked before anything is written: the series (through the
catalog, so a subject without the purpose's consent is "not found"), the volume, the level,
the format against the image's shape (PNG holds single-channel 3-D images only), the window,
and the output folder (writable, no existing file in the way unless ``overwrite``). The files
are then written into a hidden folder beside the output folder and moved into it at the end,
so a failure leaves nothing half-written (docs/decisions/0065).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import AlreadyExists, InvalidInput, NotFound
from atlas.export.window import ExportWindow, WindowPreset, resolve_window
from atlas.storage import Store

__all__ = ["ExportFormat", "ExportResult", "check_png_shape", "export_series"]

#: label image names become file names: only these characters are written
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExportFormat(StrEnum):
    """What :func:`export_series` writes."""

    NIFTI = "nifti"
    PNG = "png"


@dataclass(frozen=True)
class ExportResult:
    """What one export wrote.

    Attributes
    ----------
    series_id
        The (pseudonymous) series exported.
    site
        The site it came from.
    files
        Names written into the output folder (a PNG export: its slices folder).
    shape
        Level shape exported, array order (``z, y, x``).
    spacing
        Voxel size in mm at that level (``z, y, x``).
    window
        ``(width, centre)`` of a PNG export; ``None`` for NIfTI.
    audit_key
        The key of the audit event recorded.
    """

    series_id: str
    site: str
    files: tuple[str, ...]
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    window: tuple[float, float] | None
    audit_key: str


def _find_series(
    stores: Mapping[str, Store], series_id: str, volume: int, purpose: str
) -> dict[str, Any]:
    from atlas.index.catalog import open_atlas

    if not isinstance(series_id, str) or not series_id:
        raise InvalidInput(f"series id must be a non-empty string, got {series_id!r}")
    atlas = open_atlas(stores, purpose=purpose)
    found = atlas.get("series", series_id=series_id)
    rows = [] if found.value is None else found.value.to_pylist()  # None: no site had one
    if not rows:
        why = f"; sites that did not answer: {sorted(found.missing_sites)}" if found.partial else ""
        raise NotFound(f"series {series_id} not found for purpose {purpose!r}{why}")
    mine = [r for r in rows if r["volume"] == volume]
    if not mine:
        have = sorted({int(r["volume"]) for r in rows})
        raise NotFound(f"series {series_id} has volumes {have}, not {volume}")
    if len(mine) > 1:
        sites = sorted(r["site"] for r in mine)
        raise InvalidInput(f"series {series_id} is on several sites {sites}; choose one site")
    return mine[0]


def check_png_shape(shape: tuple[int, ...], n_spatial: int) -> None:
    """Refuse an image PNG slices cannot hold (channels or more than 3 axes).

    Raises
    ------
    InvalidInput
        ``shape`` is not a single-channel 3-D volume.
    """
    squeezed = tuple(s for s in shape[: len(shape) - n_spatial] if s != 1)
    if n_spatial != 3 or squeezed:
        raise InvalidInput(
            f"PNG export holds single-channel 3-D images as grey slices; this image has shape "
            f"{shape}: export it with --format nifti"
        )


def _check_output(out: Path, names: list[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"output {out} exists and is not a folder")
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot write into {out}: {parent} is not a writable folder")
    taken = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if taken and not overwrite:
        raise AlreadyExists(f"{out} already holds {taken}; pass --overwrite to replace them")


def _staging(out: Path) -> Path:
    """A new hidden folder beside ``out`` (same filesystem: the final renames are atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(_mkdtemp(out))
    except OSError as exc:
        raise InvalidInput(f"cannot write into {out}: {exc.strerror or exc}") from None


def _mkdtemp(out: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent)


def _publish(staging: Path, out: Path, names: list[str]) -> None:
    """Move the written entries into ``out`` (created by one rename when it is new)."""
    if not out.exists():
        os.replace(staging, out)
        return
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            old = staging / f".{name}.old"
            os.replace(target, old)  # a folder cannot be replaced by rename while it has files
        os.replace(staging / name, target)
    shutil.rmtree(staging)


def _label_names(row: dict[str, Any]) -> list[str]:
    names = [str(n) for n in row.get("labels") or []]
    for n in names:
        if not _SAFE_NAME.fullmatch(n):
            raise InvalidInput(f"label image name {n!r} cannot be a file name")
    return names


def export_series(
    stores: Mapping[str, Store],
    series_id: str,
    out: str | Path,
    *,
    fmt: ExportFormat | str = ExportFormat.NIFTI,
    purpose: str = "research",
    volume: int = 0,
    level: int = 0,
    labels: bool = False,
    window: WindowPreset | ExportWindow | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export one volume of ``series_id`` into the folder ``out``.

    Parameters
    ----------
    stores
        Site name -> store (the catalog and the images).
    series_id
        The pseudonymous series id (as the catalog shows it).
    out
        Output folder (created if absent; other files in it are left alone).
    fmt
        ``nifti``: ``<series_id>.nii.gz`` (and ``<series_id>_<label>.nii.gz`` per label image
        with ``labels``); ``png``: ``<series_id>/z0000.png ...``, one windowed axial slice each.
    purpose
        Consent scope of the export, as for a query.
    volume, level
        Which volume of the series and which pyramid level.
    labels
        Also export each label image as a NIfTI mask (NIfTI only).
    window
        PNG window; ``None``: ``ct-soft-tissue`` for CT, else ``auto``.
    overwrite
        Replace output files that already exist (else :class:`AlreadyExists`).

    Raises
    ------
    NotFound
        No such series (or volume) visible for ``purpose``.
    InvalidInput
        A level out of range, a format that cannot hold the image, ``labels`` with PNG, or an
        output folder that cannot be written.
    AlreadyExists
        An output file exists and ``overwrite`` is false.
    """
    from atlas.export.nifti import write_nifti
    from atlas.export.window import parse_export_window
    from atlas.privacy import audit
    from atlas.read import ImageRef, Reader, ReadRequest

    try:
        fmt = ExportFormat(fmt)
    except ValueError:
        raise InvalidInput(f"format must be nifti or png, got {fmt!r}") from None
    for name, v in (("volume", volume), ("level", level)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidInput(f"{name} must be an integer >= 0, got {v!r}")
    if labels and fmt is ExportFormat.PNG:
        raise InvalidInput("labels are exported as NIfTI masks: use --format nifti with --labels")
    out = Path(out)
    row = _find_series(stores, series_id, volume, purpose)
    site = str(row["site"])
    reader = Reader({site: stores[site]})
    try:
        ref = ImageRef(site, str(row["image_path"]))
        info = reader.info(ref)
        info.level(level)  # InvalidInput naming the levels there are
        label_names = _label_names(row) if labels else []
        chosen: WindowPreset | ExportWindow = WindowPreset.AUTO
        if fmt is ExportFormat.PNG:
            check_png_shape(info.level_shape(level), info.n_spatial)
            chosen = parse_export_window(None, row.get("modality")) if window is None else window
            names = [series_id]
        else:
            if info.n_spatial != 3:
                raise InvalidInput(f"NIfTI export needs a 3-D image; {series_id} has {info.shape}")
            names = [f"{series_id}.nii.gz"] + [f"{series_id}_{n}.nii.gz" for n in label_names]
        _check_output(out, names, overwrite)
        data = reader.read(ReadRequest(ref, level=level)).data
        affine = info.level_affine(level)
        staging = _staging(out)
        used: tuple[float, float] | None = None
        try:
            if fmt is ExportFormat.PNG:
                win = resolve_window(chosen, data)
                used = (win.width, win.center)
                _write_png(staging / series_id, data.reshape(data.shape[-3:]), win)
            else:
                write_nifti(staging / names[0], data, affine)
                for n, fname in zip(label_names, names[1:], strict=True):
                    mask = reader.read(ReadRequest(ImageRef(site, ref.path, n), level=level)).data
                    write_nifti(staging / fname, mask, affine)
            _publish(staging, out, names)
        except OSError as exc:
            raise InvalidInput(f"cannot write into {out}: {exc.strerror or exc}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        reader.close()
    key = audit.record(
        stores[site], "export", series_id=series_id, volume=volume, level=level,
        format=fmt.value, labels=len(label_names), purpose=purpose,
    )  # fmt: skip
    return ExportResult(
        series_id=series_id,
        site=site,
        files=tuple(names),
        shape=tuple(int(s) for s in info.level_shape(level)),
        spacing=info.level_spacing(level),
        window=used,
        audit_key=key,
    )


def _write_png(folder: Path, volume: np.ndarray, window: ExportWindow) -> None:
    from PIL import Image

    folder.mkdir()
    for z in range(volume.shape[0]):
        Image.fromarray(window.apply(volume[z])).save(folder / f"z{z:04d}.png")
