"""The pipelines users pick today, on the benchmark's volumes exported as gzipped NIfTI.

- :func:`run_monai`: MONAI's dictionary pipeline ``LoadImaged`` + ``EnsureChannelFirstd`` +
  ``RandCropByPosNegLabeld`` (``pos=1, neg=1``) through MONAI's ``DataLoader`` (2 workers);
  with ``cache=True`` the loaded volumes are kept in a ``CacheDataset`` (built inside the
  timed run: a user waits for it before the first batch).
- :func:`run_torchio`: TorchIO's ``Queue`` of ``LabelSampler`` patches (labels 0 and 1 equally
  likely) from a ``SubjectsDataset``, with 2 queue workers.

Both load whole volumes and labels and cut ``samples_per_volume`` patches from each load (the
tutorials' 4). They choose their own patch positions, so they are checked patch by patch
against the ground truth at the positions they report (the crop's affine for MONAI,
``tio.LOCATION`` for TorchIO), not against the shared list. On S3 they read the files through
s3fs with a small reader (:class:`S3Nifti`): the whole object, gunzipped, parsed by nibabel.
"""

from __future__ import annotations

import gc
import gzip
import math
import os
from typing import Any

import numpy as np

from atlas.bench.stream_data import BenchData, NiftiFiles, Site
from atlas.bench.stream_measure import Sink

__all__ = ["S3Nifti", "monai_cache_fits", "run_monai", "run_torchio"]


class S3Nifti:
    """Reads ``bucket/key`` NIfTI objects through s3fs (one filesystem per process)."""

    def __init__(self, s3fs_kwargs: dict[str, Any]) -> None:
        self.s3fs_kwargs = s3fs_kwargs
        self._fs: Any = None
        self._pid: int | None = None

    def image(self, path: str) -> Any:
        """The nibabel image of the object at ``path``."""
        import nibabel as nib

        if self._pid != os.getpid():
            import s3fs

            self._fs = s3fs.S3FileSystem(**self.s3fs_kwargs, skip_instance_cache=True)
            self._pid = os.getpid()
        raw = self._fs.cat(str(path))
        return nib.Nifti1Image.from_bytes(gzip.decompress(raw))

    def __call__(self, path: Any) -> tuple[Any, np.ndarray]:
        """TorchIO's reader protocol: a (1, X, Y, Z) tensor and the affine."""
        import torch

        img = self.image(str(path))
        return torch.from_numpy(np.asarray(img.dataobj)[None].copy()), np.asarray(img.affine)


def _monai_reader(files: NiftiFiles) -> Any:
    from monai.data import NibabelReader
    from monai.utils import ensure_tuple

    if files.s3fs_kwargs is None:
        return NibabelReader()
    s3 = S3Nifti(files.s3fs_kwargs)

    class S3NibabelReader(NibabelReader):
        """MONAI's NIfTI reader, fetching ``bucket/key`` objects with s3fs."""

        def verify_suffix(self, filename: Any) -> bool:
            return True

        def read(self, data: Any, **kwargs: Any) -> Any:
            names = ensure_tuple(data)
            self.filenames = names
            images = [s3.image(str(n)) for n in names]
            return images if len(images) > 1 else images[0]

    return S3NibabelReader()


def _key_of(files: NiftiFiles, path: str, start_xyz: Any) -> tuple[int, int, int, int]:
    x, y, z = (int(v) for v in start_xyz)
    return (files.volume_of(path), z, y, x)


def _zyx(patch: Any) -> np.ndarray:
    """A (1, X, Y, Z) tensor as a (z, y, x) array."""
    return np.asarray(patch)[0].transpose(2, 1, 0)


def monai_cache_fits(data: BenchData) -> bool:
    """Whether MONAI's cache (float32 image + label per volume) fits in half the free memory."""
    import psutil

    need = len(data.images) * data.images[0].size * 8
    return need < psutil.virtual_memory().available / 2


def run_monai(
    site: Site,
    data: BenchData,
    sink: Sink,
    batch: int,
    *,
    cache: bool = False,
    samples_per_volume: int = 4,
    workers: int = 2,
    seed: int = 0,
) -> None:
    """MONAI: LoadImaged + RandCropByPosNegLabeld through a DataLoader (optionally cached)."""
    from monai.data import CacheDataset, DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandCropByPosNegLabeld

    files = site.nifti
    n = len(data.images)
    transform = Compose(
        [
            LoadImaged(keys=["image", "label"], reader=_monai_reader(files)),
            EnsureChannelFirstd(keys=["image", "label"]),
            RandCropByPosNegLabeld(
                keys=["image", "label"],
                label_key="label",
                spatial_size=tuple(reversed(data.patch_size)),
                pos=1,
                neg=1,
                num_samples=samples_per_volume,
            ),
        ]
    )
    transform.set_random_state(seed=seed)
    items = [{"image": files.image(i), "label": files.label(i)} for i in range(n)]
    per_batch = max(1, batch // samples_per_volume)
    if cache:
        dataset: Any = CacheDataset(items, transform, cache_rate=1.0, num_workers=workers,
                                    progress=False)  # fmt: skip
        epochs = math.ceil(len(data.patches) / (n * samples_per_volume))
    else:
        reps = math.ceil(len(data.patches) / (n * samples_per_volume))
        dataset, epochs = Dataset(items * reps, transform), 1
    loader = DataLoader(dataset, batch_size=per_batch, num_workers=workers, shuffle=True)
    for _ in range(epochs):
        for item in loader:
            image, label = item["image"], item["label"]
            affines = np.asarray(image.affine).reshape(-1, 4, 4)
            names = image.meta["filename_or_obj"]
            keys, images, labels = [], [], []
            for j in range(image.shape[0]):
                linear = affines[j][:3, :3]
                start = np.rint(np.linalg.solve(linear, affines[j][:3, 3])).astype(int)
                keys.append(_key_of(files, names[j], start))
                images.append(_zyx(image[j].numpy()))
                labels.append(_zyx(label[j].numpy()))
            sink.add(keys, images, labels)
            if sink.full:
                break
        if sink.full:
            break
    del loader, dataset
    gc.collect()


def run_torchio(
    site: Site,
    data: BenchData,
    sink: Sink,
    batch: int,
    *,
    samples_per_volume: int = 4,
    workers: int = 2,
    seed: int = 0,
) -> None:
    """TorchIO: a Queue of LabelSampler patches (labels 0/1 equally likely), 2 workers."""
    import torch
    import torchio as tio
    from torch.utils.data import DataLoader

    files = site.nifti
    n = len(data.images)
    extra: dict[str, Any] = {}
    image_cls, label_cls = tio.ScalarImage, tio.LabelMap
    if files.s3fs_kwargs is not None:
        from atlas.bench.stream_tio import RemoteLabelMap, RemoteScalarImage

        extra = {"reader": S3Nifti(files.s3fs_kwargs)}
        image_cls, label_cls = RemoteScalarImage, RemoteLabelMap
    reps = math.ceil(len(data.patches) / (n * samples_per_volume))
    subjects = [
        tio.Subject(
            image=image_cls(files.image(i), **extra),
            label=label_cls(files.label(i), **extra),
            volume=i,
        )
        for _ in range(reps)
        for i in range(n)
    ]
    torch.manual_seed(seed)
    sampler = tio.LabelSampler(
        patch_size=(data.patch_size[2], data.patch_size[1], data.patch_size[0]),
        label_name="label",
        label_probabilities={0: 1, 1: 1},
    )
    queue = tio.Queue(
        tio.SubjectsDataset(subjects),
        max_length=max(2 * batch, 2 * samples_per_volume),
        samples_per_volume=samples_per_volume,
        sampler=sampler,
        num_workers=workers,
        shuffle_subjects=True,
        shuffle_patches=True,
    )
    loader = DataLoader(queue, batch_size=batch, num_workers=0)
    for item in loader:
        images, labels = item["image"][tio.DATA], item["label"][tio.DATA]
        locations = item[tio.LOCATION].tolist()
        volumes = item["volume"].tolist()
        keys = [
            (int(v), int(loc[2]), int(loc[1]), int(loc[0]))
            for v, loc in zip(volumes, locations, strict=True)
        ]
        n = images.shape[0]
        sink.add(
            keys,
            [_zyx(images[j].numpy()) for j in range(n)],
            [_zyx(labels[j].numpy()) for j in range(n)],
        )
        if sink.full:
            break
    del loader, queue
    gc.collect()
