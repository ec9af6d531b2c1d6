"""The burned-in-text screen: RSNA CTP's rules as packaged by ``deid``, not "every derived
image" (decision 0018)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from atlas.ingest.driver import ingest  # noqa: E402
from atlas.ingest.series import IngestOptions  # noqa: E402
from atlas.privacy.burned_in import burned_in_reason, device_rules, parse_device_rules  # noqa: E402
from atlas.storage import open_store  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _ds(**attrs: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    "attrs",
    [
        {"SOPClassUID": MR_STORAGE, "Modality": "MR", "ImageType": ["DERIVED", "SECONDARY"]},
        {"SOPClassUID": MR_STORAGE, "Modality": "MR",
         "ImageType": ["DERIVED", "SECONDARY", "MPR"], "Manufacturer": "SIEMENS"},
        {"SOPClassUID": CT_STORAGE, "Modality": "CT",
         "ImageType": ["DERIVED", "SECONDARY", "REFORMATTED", "MIP"], "Manufacturer": "GE"},
        {"SOPClassUID": CT_STORAGE, "Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY"]},
        {"SOPClassUID": SC_STORAGE, "Modality": "OT", "BurnedInAnnotation": "NO"},
        {"Modality": "US", "BurnedInAnnotation": "NO", "Manufacturer": "Acme"},
    ],
)  # fmt: skip
def test_not_screened(attrs: dict[str, object]) -> None:
    assert burned_in_reason(_ds(**attrs)) is None


@pytest.mark.parametrize(
    ("attrs", "why"),
    [
        ({"SOPClassUID": CT_STORAGE, "Modality": "CT", "BurnedInAnnotation": "YES"},
         "Burned In Annotation is YES"),
        ({"SOPClassUID": SC_STORAGE, "Modality": "OT"}, "Secondary Capture"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.4", "Modality": "OT"}, "Secondary Capture"),
        ({"Modality": "US"}, "ultrasound"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.6.1", "Modality": "OT"}, "ultrasound"),
        ({"SOPClassUID": CT_STORAGE, "Modality": "CT",
          "ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, "screen save"),
        ({"SOPClassUID": CT_STORAGE, "Modality": "CT", "ImageType": ["DERIVED", "SECONDARY"],
          "SecondaryCaptureDeviceManufacturer": "Workstation Inc"}, "Secondary Capture device"),
        # known devices (CTP signatures), whatever Burned In Annotation says
        ({"Modality": "US", "Manufacturer": "GE Healthcare", "ManufacturerModelName": "LOGIQ9",
          "BurnedInAnnotation": "NO"}, "'Logiq US (LOGIQ9)'"),
        ({"SOPClassUID": CT_STORAGE, "Modality": "CT", "Manufacturer": "Philips",
          "ImageType": ["DERIVED", "SECONDARY", "DOSE"]}, "'CT Dose Series'"),
    ],
)  # fmt: skip
def test_screened(attrs: dict[str, object], why: str) -> None:
    reason = burned_in_reason(_ds(**attrs))
    assert reason is not None and why in reason
    for value in attrs.values():  # the reason names rules, never the header's own values
        if isinstance(value, str) and len(value) > 4 and value not in why:
            assert value not in reason


def test_device_rules_come_from_the_deid_recipe() -> None:
    import importlib.resources

    recipe = importlib.resources.files("deid.data").joinpath("deid.dicom").read_text()
    rules = device_rules()
    credited = [
        line for line in recipe.split("%filter blacklist")[0].split("%filter graylist")[1]
        .splitlines() if line.strip().upper().startswith("LABEL") and "(CTP)" in line
    ]  # fmt: skip
    assert len(rules) == len(credited) >= 40
    labels = {r.label for r in rules}
    assert "Logiq US (LOGIQ9)" in labels and not any("Stanford" in lab for lab in labels)


def test_recipe_grammar() -> None:
    (rule,) = parse_device_rules(
        "%filter graylist\nLABEL A # (CTP)\n  contains Modality CT\n"
        "  + contains ManufacturerModelName SOMATOM Definition AS+\n"
        "  + contains ImageType SCREEN SAVE || contains SeriesDescription Dose\n"
        "  ctpcoordinates 0,0,10,10\nLABEL B # (Someone)\n  contains Modality MR\n"
        "%filter blacklist\nLABEL C # (CTP)\n  contains Modality CT\n"
    )
    assert rule.label == "A" and [len(tests) for _, tests in rule.lines] == [1, 1, 2]
    base = {"Modality": "CT", "ManufacturerModelName": "SOMATOM Definition AS+"}
    assert rule.matches(_ds(**base, SeriesDescription="Dose Report"))
    assert rule.matches(_ds(**base, ImageType=["DERIVED", "SCREEN SAVE"]))
    assert not rule.matches(_ds(**base, ImageType=["DERIVED", "SECONDARY"]))
    assert not rule.matches(_ds(Modality="MR", SeriesDescription="Dose"))


def _mr_reconstruction(folder: Path) -> Path:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
    if "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / "mpr.dcm")
    return folder / "mpr.dcm"


def test_mr_reconstruction_is_ingested_and_secondary_capture_screened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-site-key-not-for-production-0123456789")
    mpr = _mr_reconstruction(tmp_path / "src")
    sc = pydicom.dcmread(mpr)
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = SC_STORAGE
    sc.SeriesInstanceUID = generate_uid()
    sc.SOPInstanceUID = sc.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sc.save_as(tmp_path / "src" / "sc.dcm")
    for allow in (False, True):
        store = open_store(tmp_path / f"store-{allow}")
        summary = ingest([tmp_path / "src"], store=store, site="s", collection="c",
                         scheduler="synchronous",
                         options=IngestOptions(secret_env=SECRET_ENV,
                                               allow_burned_in=allow))  # fmt: skip
        reasons = {os.path.basename(q.ref.path): q.reason for q in summary.quarantined}
        if allow:
            assert not reasons and len(summary.images) == 2
        else:
            assert len(summary.images) == 1  # the MPR
            assert set(reasons) == {"sc.dcm"} and "--allow-burned-in" in reasons["sc.dcm"]
