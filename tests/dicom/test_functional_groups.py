"""The one functional-group lookup and the readers that use it.

PS3.3 C.7.6.16: a functional-group macro is in the shared item or in each frame's per-frame
item. :func:`functional_group_item` lets the frame's own item override the shared one and
falls back to the shared item when the frame's item lacks the macro. Discovery, the pixel
decoder and SEG placement all read through it, so a non-conformant object that carries a
macro in both places is read the same way by all three.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")
pytest.importorskip("highdicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from atlas.dicom.functional_groups import (  # noqa: E402
    functional_group_item,
    functional_group_items,
    is_enhanced,
)
from atlas.errors import InvalidInput  # noqa: E402
from atlas.ingest.discover import discover  # noqa: E402
from atlas.ingest.geometry import split_series  # noqa: E402
from atlas.ingest.labels import referenced_instance_uids, seg_to_labels  # noqa: E402
from atlas.ingest.model import Volume  # noqa: E402
from atlas.ingest.pixels import load_volume  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA_STORE = Path(data_store.__file__).parent / "data"


def _measures(spacing: tuple[float, float]) -> Dataset:
    item = Dataset()
    item.PixelSpacing = list(spacing)
    return item


def _groups(macros: dict[str, Dataset]) -> Dataset:
    item = Dataset()
    for keyword, value in macros.items():
        setattr(item, keyword, [value])
    return item


def _enhanced(
    shared: tuple[float, float] | None, frames: list[tuple[float, float] | None]
) -> Dataset:
    """A data set with Pixel Measures in the shared item and/or in some frames' items."""
    ds = Dataset()
    ds.SharedFunctionalGroupsSequence = [
        _groups({} if shared is None else {"PixelMeasuresSequence": _measures(shared)})
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        _groups({} if s is None else {"PixelMeasuresSequence": _measures(s)}) for s in frames
    ]
    return ds


def _spacing(item: Dataset | None) -> tuple[float, ...] | None:
    return None if item is None else tuple(float(v) for v in item.PixelSpacing)


# --------------------------------------------------------------------------------------------
# the lookup


def test_frame_item_overrides_shared_item() -> None:
    ds = _enhanced((1.0, 1.0), [(0.5, 0.5), (0.25, 0.25)])
    assert _spacing(functional_group_item(ds, "PixelMeasuresSequence", 0)) == (0.5, 0.5)
    assert _spacing(functional_group_item(ds, "PixelMeasuresSequence", 1)) == (0.25, 0.25)


def test_frame_item_without_the_group_falls_back_to_shared() -> None:
    ds = _enhanced((1.0, 1.0), [(0.5, 0.5), None])
    assert _spacing(functional_group_item(ds, "PixelMeasuresSequence", 1)) == (1.0, 1.0)
    # an empty sequence in the frame's item is no group either
    ds.PerFrameFunctionalGroupsSequence[1].PixelMeasuresSequence = []
    assert _spacing(functional_group_item(ds, "PixelMeasuresSequence", 1)) == (1.0, 1.0)


def test_frame_beyond_the_per_frame_items_reads_shared() -> None:
    ds = _enhanced((1.0, 1.0), [(0.5, 0.5)])
    assert _spacing(functional_group_item(ds, "PixelMeasuresSequence", 3)) == (1.0, 1.0)
    assert _spacing(functional_group_item(ds, "PixelMeasuresSequence", -1)) == (1.0, 1.0)


def test_absent_group_and_plain_objects() -> None:
    ds = _enhanced(None, [None])
    assert functional_group_item(ds, "PixelMeasuresSequence", 0) is None
    assert is_enhanced(ds)
    plain = Dataset()
    plain.PixelSpacing = [1.0, 1.0]
    assert not is_enhanced(plain)
    assert functional_group_item(plain, "PixelMeasuresSequence") is None
    only_frames = Dataset()
    only_frames.PerFrameFunctionalGroupsSequence = [
        _groups({"PixelMeasuresSequence": _measures((0.5, 0.5))})
    ]
    assert _spacing(functional_group_item(only_frames, "PixelMeasuresSequence")) == (0.5, 0.5)


# --------------------------------------------------------------------------------------------
# the three readers agree (discovery, the pixel decoder, SEG placement)


def _ct_with_frame_spacing(tmp_path: Path) -> tuple[Path, tuple[float, float]]:
    """eCT_Supplemental.dcm (Pixel Measures shared) with a different Pixel Measures item in
    every frame as well: not conformant, but the frame's own item describes the frame."""
    ds = pydicom.dcmread(DATA_STORE / "eCT_Supplemental.dcm")
    shared = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    spacing = tuple(float(v) / 2 for v in shared.PixelSpacing)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        item = copy.deepcopy(shared)
        item.PixelSpacing = list(spacing)
        frame.PixelMeasuresSequence = [item]
    path = tmp_path / "ect.dcm"
    ds.save_as(path)
    return path, (spacing[0], spacing[1])


def test_discovery_and_decoder_read_the_frame_item(tmp_path: Path) -> None:
    path, frame_spacing = _ct_with_frame_spacing(tmp_path)
    found = discover([path])
    assert not found.quarantined
    info = found.series[0].instances[0]
    # discovery used to read the shared item first: it disagreed with the decoder here
    assert info.pixel_spacing == pytest.approx(frame_spacing)
    volumes, quarantined = split_series(found.series[0])
    assert not quarantined
    volume = load_volume(volumes[0])
    assert volume.spacing[1:] == pytest.approx(frame_spacing)


def _seg_and_volume() -> tuple[Dataset, Volume]:
    """liver_1frame.dcm and a one-slice volume on its plane (the CT is not shipped)."""
    seg = pydicom.dcmread(get_testdata_file("liver_1frame.dcm"))
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.asarray([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    ps = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
    row, col = iop[:3], iop[3:]
    volume = Volume(
        pixels=np.zeros((1, int(seg.Rows), int(seg.Columns)), dtype=np.int16),
        axes="zyx",
        spacing=(1.0, ps[0], ps[1]),
        origin=(ipp[0], ipp[1], ipp[2]),
        direction=np.stack([np.cross(row, col), col, row], axis=1),
        regularly_spaced=True,
        slice_positions=[0.0],
        frames=[],
        header=None,
        instances=[],
        frame_of_reference_uid=str(seg.FrameOfReferenceUID),
    )
    return seg, volume


def test_seg_placement_reads_the_frame_item() -> None:
    seg, volume = _seg_and_volume()
    expected = seg_to_labels(copy.deepcopy(seg), volume).mask  # Pixel Measures shared only
    assert expected.any()
    # the frame carries the right spacing, the shared item a wrong one: the frame wins
    conflicting = copy.deepcopy(seg)
    shared = conflicting.SharedFunctionalGroupsSequence[0]
    conflicting.PerFrameFunctionalGroupsSequence[0].PixelMeasuresSequence = copy.deepcopy(
        shared.PixelMeasuresSequence
    )
    shared.PixelMeasuresSequence[0].PixelSpacing = [9.0, 9.0]
    np.testing.assert_array_equal(seg_to_labels(conflicting, volume).mask, expected)
    # and the other way round: a wrong frame item is not hidden by a right shared one
    wrong_frame = copy.deepcopy(seg)
    frame = wrong_frame.PerFrameFunctionalGroupsSequence[0]
    frame.PixelMeasuresSequence = copy.deepcopy(
        wrong_frame.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    )
    frame.PixelMeasuresSequence[0].PixelSpacing = [9.0, 9.0]
    with pytest.raises(InvalidInput, match="pixel spacing"):
        seg_to_labels(wrong_frame, volume)


def test_items_of_a_macro_follow_the_same_precedence() -> None:
    ds = Dataset()
    shared = Dataset()
    shared.PixelMeasuresSequence = [_measures((1.0, 1.0)), _measures((2.0, 2.0))]
    ds.SharedFunctionalGroupsSequence = [shared]
    own = Dataset()
    own.PixelMeasuresSequence = [_measures((0.5, 0.5))]
    empty = Dataset()
    empty.PixelMeasuresSequence = []
    ds.PerFrameFunctionalGroupsSequence = [own, empty]
    spacings = [
        [float(v) for v in m.PixelSpacing]
        for m in functional_group_items(ds, "PixelMeasuresSequence", 1)
    ]
    assert spacings == [[1.0, 1.0], [2.0, 2.0]]  # an empty frame item reads every shared item
    assert len(functional_group_items(ds, "PixelMeasuresSequence", 0)) == 1
    assert functional_group_items(ds, "PlanePositionSequence", 0) == []
    assert functional_group_items(Dataset(), "PixelMeasuresSequence") == []


def _shared_macro(seg: Dataset, keyword: str, frame: int = 0) -> Dataset:
    """``seg`` with frame ``frame``'s ``keyword`` macro moved into the shared item."""
    moved = copy.deepcopy(seg)
    item = moved.PerFrameFunctionalGroupsSequence[frame]
    setattr(moved.SharedFunctionalGroupsSequence[0], keyword, item[keyword].value)
    del item[keyword]
    return moved


def test_referenced_instances_read_a_shared_derivation_image() -> None:
    seg, _ = _seg_and_volume()
    del seg.ReferencedSeriesSequence  # only the Derivation Image Sequences name instances
    expected = referenced_instance_uids(seg)
    source = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert source.SourceImageSequence[0].ReferencedSOPInstanceUID in expected
    assert referenced_instance_uids(_shared_macro(seg, "DerivationImageSequence")) == expected


def test_seg_checks_a_shared_referenced_segment_number() -> None:
    seg, volume = _seg_and_volume()
    moved = seg
    for j in range(len(seg.PerFrameFunctionalGroupsSequence)):
        moved = _shared_macro(moved, "SegmentIdentificationSequence", j)
    assert functional_group_item(moved, "SegmentIdentificationSequence", 0) is not None
    np.testing.assert_array_equal(
        seg_to_labels(copy.deepcopy(moved), volume).mask, seg_to_labels(seg, volume).mask
    )
    ident = moved.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0]
    ident.ReferencedSegmentNumber = None
    with pytest.raises(InvalidInput, match="frame 1: Referenced Segment Number is empty"):
        seg_to_labels(moved, volume)
