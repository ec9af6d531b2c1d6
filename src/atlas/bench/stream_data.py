"""The data of ``atlas bench stream``: volumes, their NIfTI copies and the one patch list.

Every pipeline of the benchmark reads the same volumes: CT phantoms with tumour labels written
as OME-Zarr (:func:`atlas.ome.write_image`) on each store, and the same voxels exported as
gzipped NIfTI (nibabel, the usual format of MONAI and TorchIO users) beside them. The pipelines
that take a list read the same :class:`PatchSpec` list, half of it centred in labelled voxels
and half uniform (what a positive/negative sampler asks for), in a seeded random order.

The ground truth stays in memory (:attr:`BenchData.images`), so every patch a pipeline yields
is checked against the voxels it claims to be.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas.ome import LabelSpec, Layout, write_image
from atlas.storage import Store

__all__ = [
    "BenchData",
    "NiftiFiles",
    "PatchSpec",
    "Site",
    "make_data",
    "nifti_bytes",
    "patch_crc",
    "volume_path",
    "write_nifti",
    "write_volumes",
]

#: label value of the tumours in the phantom's label image, and its label image's name
TUMOUR = 1
LABEL = "tumour"


@dataclass(frozen=True)
class PatchSpec:
    """One patch of the list: volume index and voxel box (z, y, x; level 0; inside the volume)."""

    volume: int
    start: tuple[int, int, int]
    size: tuple[int, int, int]

    @property
    def key(self) -> tuple[int, int, int, int]:
        """``(volume, z0, y0, x0)``: what identifies the patch across pipelines."""
        return (self.volume, *self.start)

    def clip(self, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
        """The part of the box inside ``shape`` (slices), and the padding around it per axis."""
        inside, pad = [], []
        for a, n, s in zip(self.start, self.size, shape, strict=True):
            lo, hi = min(max(a, 0), s), max(min(a + n, s), max(a, 0))
            hi = max(min(hi, s), lo)
            inside.append(slice(lo, hi))
            pad.append((lo - a, a + n - hi))
        return tuple(inside), pad

    def cut(self, read: Any, shape: tuple[int, ...]) -> np.ndarray:
        """``read(slices)`` of the part inside ``shape``, padded with zeros to the full box."""
        inside, pad = self.clip(shape)
        block = np.asarray(read(inside))
        if any(p != (0, 0) for p in pad):
            block = np.pad(block, pad)
        return block


@dataclass
class BenchData:
    """Volumes (ground truth in memory), their layout and the patch list.

    Attributes
    ----------
    images, labels
        one int16 image and one uint8 label array (z, y, x) per volume.
    spacing
        voxel size in mm (z, y, x), the same for every volume.
    layout
        chunks and shards of the OME-Zarr copies.
    patches
        the list, in the order list-taking pipelines read it.
    patch_size
        (z, y, x) of every patch.
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    spacing: tuple[float, float, float]
    layout: Layout
    patches: list[PatchSpec]
    patch_size: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of every volume."""
        return tuple(self.images[0].shape)

    @property
    def patch_bytes(self) -> int:
        """Bytes of one sample: the image patch (int16) and its label patch (uint8)."""
        return int(np.prod(self.patch_size)) * 3

    def expected_crc(self, key: tuple[int, int, int, int]) -> int:
        """:func:`patch_crc` of the image and label voxels of the patch at ``key``."""
        volume, *start = key
        spec = PatchSpec(volume, tuple(start), self.patch_size)  # type: ignore[arg-type]
        image, label = self.images[volume], self.labels[volume]
        return patch_crc(
            spec.cut(lambda box: image[box], image.shape),
            spec.cut(lambda box: label[box], label.shape),
        )

    def storage_rank(self, key: tuple[int, int, int, int]) -> int:
        """Position of a patch's first voxel in storage order (volume, then z, y, x)."""
        nz, ny, nx = self.shape
        volume, z, y, x = key
        return ((volume * nz + z) * ny + y) * nx + x


@dataclass(frozen=True)
class NiftiFiles:
    """Where a site's NIfTI copies are: a local folder, or S3 (s3fs arguments + bucket/prefix).

    File names are ``img_<i>.nii.gz`` and ``lab_<i>.nii.gz`` below ``root``.
    """

    root: str
    s3fs_kwargs: dict[str, Any] | None = None

    def image(self, index: int) -> str:
        """Path (local) or ``bucket/key`` (S3) of volume ``index``'s image."""
        return f"{self.root}/img_{index:03d}.nii.gz"

    def label(self, index: int) -> str:
        """Path (local) or ``bucket/key`` (S3) of volume ``index``'s label image."""
        return f"{self.root}/lab_{index:03d}.nii.gz"

    def volume_of(self, path: str) -> int:
        """The volume index in an image or label file name."""
        return int(str(path).rsplit("_", 1)[1].split(".", 1)[0])


@dataclass(frozen=True)
class Site:
    """One store the pipelines read: OME-Zarr volumes in ``store``, NIfTI copies in ``nifti``.

    ``latency`` is the injected delay per request (seconds) and ``blind`` the pipelines that
    cannot see it on this site (they are not run there, and the report says so).
    """

    name: str
    store: Store
    nifti: NiftiFiles
    latency: float = 0.0
    blind: frozenset[str] = frozenset()
    note: str = ""


def patch_crc(image: np.ndarray, label: np.ndarray) -> int:
    """CRC-32 of an image patch (as C-ordered int16) and its label patch (as uint8).

    How every pipeline's output is compared: values, not dtypes (MONAI yields float32).
    """
    crc = zlib.crc32(np.ascontiguousarray(image, dtype=np.int16).data)
    return zlib.crc32(np.ascontiguousarray(label, dtype=np.uint8).data, crc)


def volume_path(index: int, label: bool = False) -> str:
    """Path of volume ``index``'s image (or, with ``label``, its label image) in each store."""
    image = f"bench-stream/vol{index:03d}.ome.zarr"
    return f"{image}/labels/{LABEL}" if label else image


def _patch_list(
    labels: list[np.ndarray], patch: tuple[int, int, int], count: int, rng: np.random.Generator
) -> list[PatchSpec]:
    shape = labels[0].shape
    high = [n - p for n, p in zip(shape, patch, strict=True)]
    half = np.array(patch) // 2
    positives = [np.argwhere(lab == TUMOUR) for lab in labels]
    out: list[PatchSpec] = []
    for i in range(count):
        volume = i % len(labels)
        if i % 2 == 0 and len(positives[volume]):  # centred on a labelled voxel
            centre = positives[volume][rng.integers(len(positives[volume]))]
            start = np.clip(centre - half, 0, high)
        else:
            start = np.array([rng.integers(0, h + 1) for h in high])
        out.append(PatchSpec(volume, tuple(int(v) for v in start), patch))  # type: ignore[arg-type]
    order = rng.permutation(count)
    return [out[i] for i in order]


def make_data(
    volumes: int,
    shape: tuple[int, int, int],
    patch: tuple[int, int, int],
    patches: int,
    layout: Layout,
    seed: int = 0,
) -> BenchData:
    """Generate ``volumes`` phantoms of ``shape`` and a list of ``patches`` boxes of ``patch``."""
    from atlas.testing.phantom import make_phantom

    images, labels = [], []
    for i in range(volumes):
        ph = make_phantom(shape, seed=seed + i, slab=max(16, shape[0] // 4))
        images.append(np.asarray(ph.image.compute()))
        labels.append(np.asarray(ph.labels.compute()))
        spacing = ph.spacing
    rng = np.random.default_rng(seed)
    return BenchData(
        images, labels, spacing, layout, _patch_list(labels, patch, patches, rng), patch
    )


def write_volumes(store: Store, data: BenchData) -> None:
    """Write every volume (level 0 only) with its label image as OME-Zarr into ``store``."""
    for i, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
        write_image(
            store,
            volume_path(i),
            image,
            spacing=data.spacing,
            modality="CT",
            labels={LABEL: LabelSpec(label, names={TUMOUR: "tumour"})},
            layout=data.layout,
            max_levels=1,
            overwrite=True,
        )


def nifti_bytes(volume: np.ndarray, spacing: tuple[float, float, float]) -> bytes:
    """A gzipped NIfTI-1 file of a (z, y, x) volume, stored as nibabel writes it (x, y, z)."""
    import nibabel as nib

    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    img = nib.Nifti1Image(volume.transpose(2, 1, 0), affine)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1)  # what nib.save writes


def write_nifti(store: Store, data: BenchData, prefix: str = "bench-stream-nifti") -> None:
    """Write ``img_<i>.nii.gz`` and ``lab_<i>.nii.gz`` per volume below ``prefix`` in ``store``."""
    for i, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
        store.write_bytes(f"{prefix}/img_{i:03d}.nii.gz", nifti_bytes(image, data.spacing))
        store.write_bytes(f"{prefix}/lab_{i:03d}.nii.gz", nifti_bytes(label, data.spacing))
