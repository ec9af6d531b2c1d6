"""The entry point: :func:`make_study` writes a whole synthetic study under one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.testing.phantom import make_phantom, phantom_slab
from atlas.testing.synthetic.ct import (
    _check_transfer_syntax,
    _ct_header,
    _rotation,
    _write_ct_slice,
)
from atlas.testing.synthetic.identity import _ds_num, _identity, _uid
from atlas.testing.synthetic.model import SyntheticStudy
from atlas.testing.synthetic.nifti import _write_nifti
from atlas.testing.synthetic.rtstruct import _write_rtstruct
from atlas.testing.synthetic.seg import _write_seg

__all__ = ["make_study"]

_SLAB = 16


def make_study(
    out_dir: Path | str,
    *,
    shape: tuple[int, int, int] = (300, 512, 512),
    spacing: tuple[float, float, float] = (1.5, 0.7, 0.7),
    seed: int = 0,
    oblique: bool = False,
    with_seg: bool = True,
    with_rtstruct: bool = True,
    with_nifti: bool = True,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    patient_id: str | None = None,
    canaries: bool = True,
    signed: bool = False,
    keep_hu: bool = False,
    n_tumours: int = 3,
) -> SyntheticStudy:
    """Write a synthetic CT study (plus SEG, RTSTRUCT, NIfTI) under ``out_dir``.

    Parameters
    ----------
    out_dir:
        Folder to write into (created). Layout: ``CT/IMxxxxx.dcm`` (names in neither slice nor
        instance order), ``seg.dcm``, ``rtstruct.dcm``, ``labels.nii.gz``.
    shape, spacing:
        ``(z, y, x)`` voxels and millimetres (slice spacing, row spacing, column spacing).
    seed:
        Everything (pixels, tumours, UIDs, canary values, dates) follows from ``seed`` and
        ``patient_id``: the same arguments write the same bytes.
    oblique:
        Rotate the image planes (a non-axial ``ImageOrientationPatient``).
    transfer_syntax:
        Explicit/implicit/deflated VR little endian, or a lossless compressed syntax pydicom
        can encode here (see :func:`supported_transfer_syntaxes`); others raise
        :class:`~atlas.errors.InvalidInput`. SEG and RTSTRUCT are always explicit VR little
        endian.
    patient_id:
        Original patient id (default ``CANARY-PID-<token>``).
    canaries:
        Whether :attr:`SyntheticStudy.canaries` lists the identifying values (they are written
        either way; ``False`` returns an empty list).
    signed:
        Store pixels as signed int16 with ``RescaleIntercept`` 0 instead of unsigned 12-bit
        with ``RescaleIntercept`` -1024.
    keep_hu:
        Also return the expected HU volume (int16) in :attr:`SyntheticStudy.hu`.
    n_tumours:
        Tumour spheres in the liver.
    """
    nz, ny, nx = (int(s) for s in shape)
    if min(nz, ny, nx) < 2:
        raise InvalidInput(f"synthetic study shape must be at least 2 in every axis, got {shape}")
    if min(spacing) <= 0:
        raise InvalidInput(f"spacing must be positive, got {spacing}")
    ts, plugin = _check_transfer_syntax(transfer_syntax)
    out = Path(out_dir)
    ct_dir = out / "CT"
    ct_dir.mkdir(parents=True, exist_ok=True)
    spacing_f = (float(spacing[0]), float(spacing[1]), float(spacing[2]))

    ident = _identity(seed, patient_id)
    pid = ident.patient_id
    uids = {
        role: _uid(seed, pid, role)
        for role in (
            "study",
            "series",
            "for",
            "seg_series",
            "seg_sop",
            "seg_dim",
            "rt_series",
            "rt_sop",
        )
    }
    sop_uids = [_uid(seed, pid, "ct", k) for k in range(nz)]

    # geometry: rotation columns = row dir (x), column dir (y), normal (z)
    rot = _rotation(oblique)
    # columns z, y, x; the slice normal is row x column (sorted slices ascend along it)
    direction = np.stack([np.cross(rot[:, 0], rot[:, 1]), rot[:, 1], rot[:, 0]], axis=1)
    centre = np.array([0.0, 0.0, -250.0])
    half = (np.array([nz, ny, nx], dtype=np.float64) - 1) / 2 * np.asarray(spacing_f)
    origin = np.round(centre - direction @ half, 4)
    iop = [_ds_num(float(c), 8) for c in (*rot[:, 0], *rot[:, 1])]

    # instance numbers: head first (slice 0 is the most inferior, so it is numbered last),
    # then a few swapped pairs so they are not in position order either way
    rng = np.random.default_rng([seed, 104729])
    instance_numbers = [nz - k for k in range(nz)]
    for _ in range(min(3, nz // 2)):
        a, b = (int(i) for i in rng.choice(nz, size=2, replace=False))
        instance_numbers[a], instance_numbers[b] = instance_numbers[b], instance_numbers[a]
    names = rng.permutation(nz)
    ct_files = [ct_dir / f"IM{int(names[k]):05d}.dcm" for k in range(nz)]

    phantom = make_phantom((nz, ny, nx), spacing=spacing_f, n_tumours=n_tumours, seed=seed)
    truth = np.zeros((nz, ny, nx), dtype=np.uint8)
    hu_all = np.empty((nz, ny, nx), dtype=np.int16) if keep_hu else None
    headers: list[Any] = []
    for k in range(nz):
        ipp = origin + direction[:, 0] * (spacing_f[0] * k)
        headers.append(
            _ct_header(
                ident=ident,
                uids=uids,
                sop_uid=sop_uids[k],
                instance_number=instance_numbers[k],
                ipp=ipp,
                iop=iop,
                shape=(nz, ny, nx),
                spacing=spacing_f,
                normal=direction[:, 0],
                signed=signed,
            )
        )
    # the phantom's z index 0 is superior (lungs); sorted slice k = phantom slice nz-1-k
    for p0 in range(0, nz, _SLAB):
        p1 = min(nz, p0 + _SLAB)
        img = phantom_slab(p0, p1, (nz, ny, nx), phantom.tumours, seed, "image")
        lab = phantom_slab(p0, p1, (nz, ny, nx), phantom.tumours, seed, "labels")
        lab[lab == 3] = 0
        for p in range(p0, p1):
            k = nz - 1 - p
            truth[k] = lab[p - p0]
            if hu_all is not None:
                hu_all[k] = img[p - p0]
            _write_ct_slice(headers[k], img[p - p0], ct_files[k], ts, plugin, signed)
        del img, lab

    seg_file = rt_file = nifti_file = None
    if with_seg:
        seg_file = out / "seg.dcm"
        _write_seg(seg_file, ident=ident, uids=uids, headers=headers, truth=truth)
    if with_rtstruct:
        rt_file = out / "rtstruct.dcm"
        _write_rtstruct(
            rt_file,
            ident=ident,
            uids=uids,
            headers=headers,
            truth=truth,
            origin=origin,
            direction=direction,
            spacing=spacing_f,
        )
    if with_nifti:
        nifti_file = out / "labels.nii.gz"
        _write_nifti(nifti_file, truth, origin, direction, spacing_f)

    canary_list: list[str] = []
    if canaries:
        canary_list = [*ident.canaries(), uids["study"], uids["series"], uids["for"], *sop_uids]
        if with_seg:
            canary_list += [uids["seg_series"], uids["seg_sop"], uids["seg_dim"]]
        if with_rtstruct:
            canary_list += [uids["rt_series"], uids["rt_sop"]]
        canary_list = list(dict.fromkeys(canary_list))
    return SyntheticStudy(
        out_dir=out,
        ct_files=ct_files,
        seg_file=seg_file,
        rtstruct_file=rt_file,
        nifti_file=nifti_file,
        canaries=canary_list,
        truth_labels=truth,
        hu=hu_all,
        spacing=spacing_f,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        patient_id=pid,
        study_uid=uids["study"],
        series_uid=uids["series"],
        frame_of_reference_uid=uids["for"],
        sop_instance_uids=sop_uids,
        instance_numbers=instance_numbers,
        transfer_syntax=ts,
        seg_uid=uids["seg_sop"] if with_seg else None,
        rtstruct_uid=uids["rt_sop"] if with_rtstruct else None,
    )
