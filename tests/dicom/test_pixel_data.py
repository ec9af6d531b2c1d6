"""Expected pixel data lengths: ours against pydicom's helper (decision 0038).

Discovery keeps its own computation from raw header values (it must not raise on a hostile
header); on every well-formed header in pydicom's and pydicom-data's test files it gives what
:func:`pydicom.pixels.utils.get_expected_length` gives.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.pixels.utils import get_expected_length  # noqa: E402

from atlas.dicom.pixel_data import declared_image_bytes, expected_native_length  # noqa: E402

ROOTS = [Path(get_testdata_file("CT_small.dcm")).parent, Path(data_store.__file__).parent / "data"]
#: headers whose Image Pixel module is malformed on purpose (pydicom's helper is not defined)
MALFORMED = {"badVR.dcm"}


def _headers() -> list[tuple[str, pydicom.Dataset]]:
    out = []
    for root in ROOTS:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name in MALFORMED:
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=1 << 20)
            except Exception:  # not DICOM (pydicom's folders hold other test files too)
                continue
            if "Rows" in ds and "SamplesPerPixel" in ds and "PhotometricInterpretation" in ds:
                out.append((path.name, ds))
    return out


def test_expected_length_agrees_with_pydicom() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        headers = _headers()
        assert len(headers) > 100
        for name, ds in headers:
            assert expected_native_length(ds) == get_expected_length(ds), name


def test_hostile_headers_give_a_length_not_an_exception() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    no_samples = copy.deepcopy(ds)
    del no_samples.SamplesPerPixel
    with pytest.raises(AttributeError):
        get_expected_length(no_samples)
    assert expected_native_length(no_samples) == 128 * 128 * 2  # one sample assumed
    assert declared_image_bytes(no_samples) == 128 * 128 * 2
    no_rows = copy.deepcopy(ds)
    del no_rows.Rows
    assert expected_native_length(no_rows) is None
    assert declared_image_bytes(no_rows) is None
