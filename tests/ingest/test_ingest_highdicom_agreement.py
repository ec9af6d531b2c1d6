"""Our slice sorting and SEG placement against highdicom's, on the test data (decision 0037).

highdicom's spatial helpers and ``Segmentation.get_volume`` are not used by ingest (they do
not handle gantry tilt, irregular stacks, big endian SEGs or overlapping segments the way
ingest must), but where both apply they must agree: these tests keep that true.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
data_store = pytest.importorskip("data_store")

from pydicom.data import get_testdata_file  # noqa: E402

from atlas.ingest.discover import discover  # noqa: E402
from atlas.ingest.geometry import (  # noqa: E402
    sort_by_position,
    spacing_along_normal,
    split_series,
    stack_geometry,
)
from atlas.ingest.labels import seg_to_labels  # noqa: E402
from atlas.ingest.model import InstanceInfo, Volume  # noqa: E402
from atlas.testing.synthetic import make_study  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA_STORE = Path(data_store.__file__).parent / "data"
DICOMDIR_TESTS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"


def _stacks(*roots: Path) -> list[list[InstanceInfo]]:
    """Every volume of two or more single-frame instances in ``roots`` (as ingest splits
    series into volumes)."""
    found = discover(list(roots))
    volumes = [v for s in found.series for v in split_series(s)[0]]
    return [v for v in volumes if len(v) > 1 and all(i.number_of_frames == 1 for i in v)]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> list[list[InstanceInfo]]:
    out = tmp_path_factory.mktemp("studies")
    make_study(out / "axial", shape=(20, 64, 64), spacing=(2.5, 0.8, 0.8), seed=1)
    make_study(out / "oblique", shape=(12, 48, 48), spacing=(2.0, 0.9, 0.9), seed=2, oblique=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = _stacks(DICOMDIR_TESTS, out)
    assert len(found) >= 4
    return found


def test_slice_order_and_spacing_agree_with_highdicom(stacks: list[list[InstanceInfo]]) -> None:
    regular = 0
    for stack in stacks:
        ordered, dists = sort_by_position(stack)
        step, regularly_spaced, _ = spacing_along_normal(dists)
        iop = stack[0].image_orientation
        spacing, indices = hd.spatial.get_volume_positions(
            [i.image_position for i in stack], iop, index_convention="RD"
        )
        if spacing is None:  # highdicom: not one regular volume
            assert not regularly_spaced
            continue
        regular += 1
        assert regularly_spaced
        assert spacing == pytest.approx(step, abs=1e-4)
        theirs = [stack[k].sop_instance_uid for k in np.argsort(indices)]
        assert theirs == [i.sop_instance_uid for i in ordered]
    assert regular >= 3


def test_gantry_tilt_is_a_volume_for_us_not_for_highdicom() -> None:
    iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shift = 2.5 * np.tan(np.radians(15))
    tilted = [[0.0, k * shift, k * 2.5] for k in range(10)]
    assert hd.spatial.get_volume_positions(tilted, iop, index_convention="RD") == (None, None)
    geometry = stack_geometry(tilted, iop, (1.0, 1.0), None, 10)
    assert geometry.regularly_spaced and geometry.slice_step is not None


def _volume_like(hvol: object, frame_of_reference_uid: str) -> Volume:
    """An image volume on the grid highdicom's SEG volume has."""
    affine = np.asarray(hvol.affine)  # type: ignore[attr-defined]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    nz, ny, nx = hvol.spatial_shape  # type: ignore[attr-defined]
    return Volume(
        pixels=np.zeros((nz, ny, nx), dtype=np.int16),
        axes="zyx",
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=(float(affine[0, 3]), float(affine[1, 3]), float(affine[2, 3])),
        direction=affine[:3, :3] / spacing,
        regularly_spaced=True,
        slice_positions=[k * float(spacing[0]) for k in range(nz)],
        frames=[],
        header=None,
        instances=[],
        frame_of_reference_uid=frame_of_reference_uid,
    )


@pytest.mark.parametrize(
    "path",
    [DATA_STORE / "liver.dcm", Path(get_testdata_file("liver_1frame.dcm"))],
    ids=["liver", "liver_1frame"],
)
def test_seg_labels_agree_with_highdicom_get_volume(path: Path) -> None:
    ds = pydicom.dcmread(path)
    seg = hd.seg.Segmentation.from_dataset(ds, copy=True)
    theirs = seg.get_volume(combine_segments=True)
    volume = _volume_like(theirs, str(ds.FrameOfReferenceUID))
    ours = seg_to_labels(ds, volume).mask
    assert ours.any()
    np.testing.assert_array_equal(ours, theirs.array)
