"""Tests of :mod:`atlas.privacy`'s engine: PS3.15 Annex E de-identification by construction.

The central test fills EVERY attribute of PS3.15 Table E.1-1 with a distinctive canary value,
de-identifies, then checks each attribute's action and that no canary, original UID or original
date is left anywhere in the written file or the JSON header. The attributes come from a list
kept by hand (``tests/privacy/data/ps3.15-table-e1-1-2026c.csv``), not from the table the engine
loads, so an attribute missing from the loaded table is still filled, and the loaded table is
checked against that list.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import pickle
import re
from datetime import datetime
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("dicomanonymizer")

from pydicom import Dataset  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.datadict import dictionary_VR  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
)

from atlas.errors import ConfigError, InvalidInput  # noqa: E402
from atlas.privacy import (  # noqa: E402
    DEFAULT_EDITION,
    METHOD_CODES,
    Deidentifier,
    basic_profile,
    burned_in_risk,
    clean_text,
    header_json,
)
from atlas.privacy.dates import shift_value  # noqa: E402

KEY = b"test-site-secret-0123456789"
OTHER_KEY = b"another-site-secret-9876543210"
CANARY_DATE = "19010203"
CANARY_DT = "19010203040506"
CANARY_TM = "040506"
CANARY_UID_ROOT = "1.2.3.999."

# The standard's "Rtn. Pat. Chars. Opt." K entries (PS3.15 2024b), restated independently of
# the module, plus the K entries of attributes added after 2024b: Ethnic Group Code Sequence,
# Ethnic Groups, Sex Parameters for Clinical Use Category Sequence, Code Sequence and Reference
# (the column the engine applies is generated, decision 0032).
PATIENT_CHARS_KEEP = {
    0x00100040,
    0x00101010,
    0x00101020,
    0x00101030,
    0x00102160,
    0x001021A0,
    0x001021C0,
    0x00102203,
    0x0072005F,
    0x00102161,
    0x00102162,
    0x00100043,
    0x00100046,
    0x00100047,
}
BIRTH_DATE, BIRTH_TIME, GPS_TIME_STAMP = 0x00100030, 0x00100032, 0x00160077
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020


# ---------------------------------------------------------------------------------------------
# The canary data set.


# The standard's table, kept by hand apart from the loaded one (provenance in the file).
STANDARD_EDITION = "2026c"
STANDARD_TABLE = Path(__file__).parent / "data" / f"ps3.15-table-e1-1-{STANDARD_EDITION}.csv"


def _standard_rows() -> list[dict[str, str]]:
    """The rows of the hand-kept Table E.1-1: ``tag`` (8 hex digits, ``x`` for a mask),
    ``name``, ``basic_profile`` (the action), ``since``."""
    with STANDARD_TABLE.open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _vr_by_name(name: str) -> str:
    """A VR for an attribute newer than pydicom's dictionary, from its name (PS3.6 names
    sequences "... Sequence", date-times "... DateTime" and links "... URI"/"... Reference")."""
    if name.endswith("Sequence"):
        return "SQ"
    if name.endswith("DateTime"):
        return "DT"
    if name.endswith(("URI", "Reference")):
        return "UR"
    return "UT"


def _vr(tag: int, name: str = "") -> str | None:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return _vr_by_name(name) if name else None
    vr = vr.split(" or ")[0].strip()
    return None if vr in ("AT", "NONE", "") else vr


def _canary(n: int, vr: str, kept: bool) -> object:
    word = f"KEPT{n}" if kept else f"CANARY{n}"
    if vr in ("AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC"):
        return word
    if vr == "PN":
        return f"{word}^PERSON"
    if vr == "DA":
        return CANARY_DATE
    if vr == "DT":
        return CANARY_DT
    if vr == "TM":
        return CANARY_TM
    if vr == "UI":
        return f"{CANARY_UID_ROOT}{n}"
    if vr == "AS":
        return "042Y"
    if vr == "DS":
        return f"{7000 + n}.5"
    if vr == "IS":
        return str(7000 + n)
    if vr in ("US", "UL", "SS", "SL", "UV", "SV"):
        return 7000 + n
    if vr in ("FL", "FD"):
        return float(7000 + n) + 0.25
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        raw = word.encode()
        return raw + b"\x00" * (-len(raw) % 8)
    if vr == "UR":
        return f"http://{word.lower()}.invalid/"
    if vr == "SQ":
        item = Dataset()
        item.add_new(0x0040A123, "PN", f"{word}^ITEM")  # Person Name (D)
        item.add_new(0x00081155, "UI", f"{CANARY_UID_ROOT}{n}.1")  # Referenced SOP Inst. (U)
        item.add_new(0x00080020, "DA", CANARY_DATE)  # Study Date (Z)
        item.add_new(0x00090010, "LO", f"CANARYPRIVCREATOR{n}")  # private creator
        item.add_new(0x00091001, "LO", f"CANARYPRIV{n}")
        return Sequence([item])
    raise AssertionError(f"no canary for VR {vr}")


def _concrete_tags() -> dict[int, tuple[str, str]]:
    """Every attribute of the standard's table (masks made concrete: 50xx -> 5002, 60xx ->
    6002) with its basic action and name. Taken from the hand-kept list, not the loaded table,
    so that an attribute missing from the loaded table still gets a canary."""
    tags: dict[int, tuple[str, str]] = {}
    for row in _standard_rows():
        tag, action, name = row["tag"], row["basic_profile"], row["name"]
        if "x" not in tag:
            tags[int(tag, 16)] = (action, name)
            continue
        group = int(tag[:4].replace("x", "0"), 16) | (0x0002 if "x" in tag[:4] else 0)
        elements = [0x3000, 0x0005] if "x" in tag[4:] else [int(tag[4:], 16)]
        for element in elements:
            tags[(group << 16) | element] = (action, name)
    return tags


def _canary_dataset(*, mark_kept: bool) -> tuple[Dataset, dict[int, tuple[str, str]]]:
    """A data set with every usable table attribute; returns it and {tag: (action, VR)}."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = f"{CANARY_UID_ROOT}0"
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    filled: dict[int, tuple[str, str]] = {}
    for n, (tag, (action, name)) in enumerate(sorted(_concrete_tags().items()), start=1):
        if tag >> 16 == 0x0002:
            continue  # file meta, set above
        vr = _vr(tag, name)
        if vr is None:
            continue
        kept = mark_kept and tag in PATIENT_CHARS_KEEP
        ds.add_new(tag, vr, _canary(n, vr, kept))
        filled[tag] = (action, vr)
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    # private attributes at the top level
    ds.add_new(0x00290010, "LO", "CANARYCREATOR")
    ds.add_new(0x00291001, "LO", "CANARYPRIVATEVALUE")
    ds.add_new(0x00291002, "OB", b"CANARYBYTES\x00")
    # nested sequences the table does not list, with identifying content deep inside
    inner = Dataset()
    inner.ReferencedSOPClassUID = CTImageStorage
    inner.ReferencedSOPInstanceUID = f"{CANARY_UID_ROOT}100001"
    inner.PatientName = "CANARYNESTED^NAME"
    inner.add_new(0x00191010, "LO", "CANARYNESTEDPRIV")
    inner.add_new(0x00080021, "DA", CANARY_DATE)  # Series Date
    inner.SOPInstanceUIDOfConcatenationSource = f"{CANARY_UID_ROOT}100003"  # not in the table
    inner.EvaluatorName = "CANARYEVALUATOR^NAME"  # a person name the table does not list
    series = Dataset()
    series.SeriesInstanceUID = f"{CANARY_UID_ROOT}100002"
    series.ReferencedInstanceSequence = Sequence([inner])
    ds.ReferencedSeriesSequence = Sequence([series])
    ds.ContextGroupExtensionCreatorUID = f"{CANARY_UID_ROOT}100004"  # not in the table
    ds.add_new(0x60000010, "US", 512)  # Overlay Rows: the whole overlay group goes
    ds.add_new(0x60000011, "US", 512)
    return ds, filled


def _written(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _find(out: Dataset, tag: int):
    return out.get(tag, None)


def _empty(elem) -> bool:
    if elem.VR == "SQ":
        return len(elem.value) == 0
    return elem.VM == 0 or elem.value in (None, "", b"")


def _same(elem, original) -> bool:
    return elem.VR != "SQ" and str(elem.value) == str(original.value)


def _uids_mapped(seq_elem, original, d: Deidentifier) -> bool:
    want = d.uid(original.value[0].ReferencedSOPInstanceUID)
    return any(item.get("ReferencedSOPInstanceUID") == want for item in seq_elem.value)


def _check_basic(tag, action, out_elem, orig_elem, d, subject) -> None:
    """Assert the basic profile action (any allowed outcome of a combined action)."""
    name = f"{tag:08X} {action}"
    present = out_elem is not None
    if tag in (PATIENT_ID, PATIENT_NAME):
        assert present and str(out_elem.value) == subject, name
        return
    if action == "X":
        assert not present, name
    elif action == "Z":
        assert present and _empty(out_elem), name
    elif action == "D":
        assert present and not _same(out_elem, orig_elem), name
        if orig_elem.VR == "UI":
            assert out_elem.value == d.uid(orig_elem.value), name
        if orig_elem.VR == "SQ":
            assert "CANARY" not in str(out_elem.value).upper(), name
    elif action == "U":
        assert present and out_elem.value == d.uid(orig_elem.value), name
    elif action == "Z/D":
        assert present and (_empty(out_elem) or not _same(out_elem, orig_elem)), name
    elif action == "X/Z":
        assert not present or _empty(out_elem), name
    elif action == "X/D":
        assert not present or not _same(out_elem, orig_elem), name
    elif action == "X/Z/D":
        assert not present or _empty(out_elem) or not _same(out_elem, orig_elem), name
    elif action == "X/Z/U*":
        if present and orig_elem.VR == "SQ" and len(out_elem.value):
            assert _uids_mapped(out_elem, orig_elem, d), name
        elif present and orig_elem.VR == "UI":
            assert out_elem.value == d.uid(orig_elem.value), name
        else:
            assert not present or _empty(out_elem), name
    else:  # pragma: no cover
        raise AssertionError(f"unknown action {action}")


def _assert_no_canary(out: Dataset) -> None:
    blobs = [_written(out), json.dumps(header_json(out)).encode()]
    for blob in blobs:
        low = blob.lower()
        assert b"canary" not in low
        assert CANARY_UID_ROOT.encode() not in blob
        assert CANARY_DATE.encode() not in blob
    for elem in out.iterall():
        assert elem.tag.group % 2 == 0, "a private attribute survived"


# ---------------------------------------------------------------------------------------------
# The table.


def test_table_comes_from_dicom_anonymizer_and_covers_all_actions():
    table = basic_profile()
    assert table.edition == DEFAULT_EDITION
    assert len(table) > 600
    actions = set(table.exact.values()) | {m[-1] for m in table.masked}
    assert {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"} <= actions
    assert table.action(0x00100010) == "Z"  # Patient's Name
    assert table.action(0x00100020) == "Z/D"  # Patient ID
    assert table.action(0x00080018) == "U"  # SOP Instance UID
    assert table.action(0x50023000) == "X"  # curve data, group mask 50xx
    assert table.action(0x601E3000) == "X"  # overlay data, group mask 60xx
    assert table.action(0x601E4000) == "X"  # overlay comments
    assert table.action(0x00280010) is None  # Rows: not in the table
    assert basic_profile() is table  # cached
    assert basic_profile("2024b").action(0x00100010) == "Z"


def test_loaded_table_equals_the_standards_list():
    """Every attribute of PS3.15 Table E.1-1 (hand-kept list, edition named) is in the loaded
    table with the same action, and the loaded table lists nothing else."""
    assert DEFAULT_EDITION == STANDARD_EDITION, "update the hand-kept list to the new edition"
    table = basic_profile(STANDARD_EDITION)
    rows = _standard_rows()
    assert len(rows) == 655 and len({r["tag"] for r in rows}) == len(rows)
    exact = {int(r["tag"], 16): r["basic_profile"] for r in rows if "x" not in r["tag"]}
    missing = {f"{t:08X} {r}" for t, r in exact.items() if t not in table.exact}
    assert not missing, f"attributes of the standard missing from the loaded table: {missing}"
    wrong = {f"{t:08X} {a} != {table.exact[t]}" for t, a in exact.items() if table.exact[t] != a}
    assert not wrong, f"actions differ from the standard: {wrong}"
    extra = {f"{t:08X}" for t in table.exact if t not in exact}
    assert not extra, f"the loaded table lists attributes the standard does not: {extra}"
    for row in (r for r in rows if "x" in r["tag"]):
        tag = row["tag"]
        group = int(tag[:4].replace("x", "2"), 16)
        for element in [0x3000, 0x0005] if "x" in tag[4:] else [int(tag[4:], 16)]:
            assert table.action((group << 16) | element) == row["basic_profile"], tag


def test_unknown_edition_is_a_config_error():
    with pytest.raises(ConfigError):
        basic_profile("1999z")
    with pytest.raises(ConfigError):
        basic_profile("../etc")
    with pytest.raises(ConfigError):
        Deidentifier(KEY, edition="latest")
    with pytest.raises(ConfigError):
        Deidentifier(KEY, edition="1999z").deidentify(_small_ct())


# ---------------------------------------------------------------------------------------------
# Every attribute of the table.


def test_every_table_attribute_basic_profile_only():
    ds, filled = _canary_dataset(mark_kept=False)
    assert len(filled) > 600
    before = copy.deepcopy(ds)
    d = Deidentifier(
        KEY,
        retain_dates=False,
        retain_patient_characteristics=False,
        clean_descriptors=False,
    )
    out = d.deidentify(ds)
    subject = d.subject_id(str(before[PATIENT_ID].value))
    for tag, (action, _vr) in filled.items():
        if tag >> 16 == 0x0000:
            assert tag not in out  # command elements never belong in a stored instance
            continue
        _check_basic(tag, action, _find(out, tag), before[tag], d, subject)
    _assert_no_canary(out)
    assert ds == before, "the input data set was modified"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_every_table_attribute_with_all_options():
    ds, filled = _canary_dataset(mark_kept=True)
    before = copy.deepcopy(ds)
    d = Deidentifier(KEY)
    out = d.deidentify(ds)
    pid = str(before[PATIENT_ID].value)
    subject = d.subject_id(pid)
    kept = shifted = times = 0
    for tag, (action, vr) in filled.items():
        if tag >> 16 == 0x0000:
            continue
        elem, orig = _find(out, tag), before[tag]
        name = f"{tag:08X} {action}"
        if tag in PATIENT_CHARS_KEEP:
            assert elem is not None, name
            if vr == "SQ":
                assert len(elem.value) == 1, name
            else:
                assert str(elem.value) == str(orig.value), name
            kept += 1
        elif vr in ("DA", "DT") and tag not in (BIRTH_DATE, GPS_TIME_STAMP):
            assert elem is not None and elem.value == _shifted(d, orig.value, pid), name
            assert CANARY_DATE not in elem.value
            datetime.strptime(elem.value[:8], "%Y%m%d")  # still a valid date
            shifted += 1
        elif vr == "TM" and tag != BIRTH_TIME:
            assert elem is not None and elem.value == orig.value, name  # time of day kept
            times += 1
        elif vr == "SQ" and elem is not None and len(elem.value) and len(elem.value[0]):
            # cleaned (code) sequences and X/Z/U* sequences are kept, the table applied inside
            assert _uids_mapped(elem, orig, d), name
            assert elem.value[0].PersonName == "ANONYMIZED", name
            assert elem.value[0].StudyDate == _shifted(d, CANARY_DATE, pid), name
        else:
            # cleaned text made of canaries falls back to the basic action
            _check_basic(tag, action, elem, orig, d, subject)
    assert kept >= 9 and shifted > 100 and times > 40
    assert out[BIRTH_DATE].value == ""  # never retained
    assert out.PatientSex == "KEPT" + str(sorted(_concrete_tags()).index(0x00100040) + 1)
    _assert_no_canary(out)
    assert ds == before
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_private_tags_and_nested_sequences():
    ds, _ = _canary_dataset(mark_kept=False)
    d = Deidentifier(KEY)
    out = d.deidentify(ds)
    assert not any(e.tag.is_private for e in out.iterall())
    inner = out.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert inner.ReferencedSOPInstanceUID == d.uid(f"{CANARY_UID_ROOT}100001")
    assert inner.ReferencedSOPClassUID == CTImageStorage  # class UIDs are not mapped
    assert inner.SeriesDate == _shifted(d, CANARY_DATE, str(ds.PatientID))
    assert "PatientName" not in inner or inner.PatientName == ""
    assert "EvaluatorName" not in inner
    assert out.ReferencedSeriesSequence[0].SeriesInstanceUID == d.uid(f"{CANARY_UID_ROOT}100002")
    # UIDs the table does not list are mapped too, at any depth
    assert out.ContextGroupExtensionCreatorUID == d.uid(f"{CANARY_UID_ROOT}100004")
    assert inner.SOPInstanceUIDOfConcatenationSource == d.uid(f"{CANARY_UID_ROOT}100003")
    assert not any(0x6000 <= e.tag.group <= 0x60FF for e in out.iterall())


def test_identity_attributes():
    ds = _small_ct()
    d = Deidentifier(KEY)
    out = d.deidentify(ds)
    assert out.PatientID == d.subject_id("PAT-001") == str(out.PatientName)
    assert re.fullmatch(r"[a-z2-7]{20}", out.PatientID)
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod
    # an explicit patient_id overrides the data set's
    assert d.deidentify(ds, patient_id="other").PatientID == d.subject_id("other")


# ---------------------------------------------------------------------------------------------
# Pseudonyms.


def test_mapping_is_deterministic_and_keyed():
    a, b, other = Deidentifier(KEY), Deidentifier(bytes(KEY)), Deidentifier(OTHER_KEY)
    assert a.subject_id("PAT-001") == b.subject_id("PAT-001")
    assert a.subject_id("PAT-001") != a.subject_id("PAT-002")
    assert a.subject_id("PAT-001") != other.subject_id("PAT-001")
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert a.uid(uid) == b.uid(uid) != other.uid(uid)
    for value in (a.uid(uid), a.uid("1"), a.uid("9" * 64)):
        assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", value) and len(value) <= 64
    pids = [f"PAT-{i}" for i in range(20)]
    assert [a.date_shift_days(p) for p in pids] == [b.date_shift_days(p) for p in pids]
    assert [a.date_shift_days(p) for p in pids] != [other.date_shift_days(p) for p in pids]
    ds = _small_ct()
    assert _written(a.deidentify(ds)) == _written(b.deidentify(ds))
    assert a.deidentify(ds).StudyInstanceUID != other.deidentify(ds).StudyInstanceUID


def test_date_shift_is_per_subject_and_keeps_validity():
    d = Deidentifier(KEY)
    shifts = {d.date_shift_days(f"PAT-{i}") for i in range(200)}
    assert all(-3650 <= s <= -365 for s in shifts)
    assert len(shifts) > 150  # really per subject
    s = d.date_shift_days("PAT-001")
    first, second = _shifted(d, "20200131", "PAT-001"), _shifted(d, "20200301", "PAT-001")
    for value in (first, second):
        datetime.strptime(value, "%Y%m%d")
    d1, d2 = (datetime.strptime(v, "%Y%m%d") for v in (first, second))
    assert (d2 - d1).days == 30  # intervals kept
    assert (d1 - datetime(2020, 1, 31)).days == s
    assert _shifted(d, "20240229", "PAT-001") != "20240229"  # leap day stays valid
    datetime.strptime(_shifted(d, "20240229", "PAT-001"), "%Y%m%d")
    dt = _shifted(d, "20200131123456.789+0100", "PAT-001")
    assert dt == first + "123456.789+0100"  # time of day and UTC offset kept
    assert _shifted(d, "2020.01.31", "PAT-001") == first  # ACR-NEMA form
    assert len(_shifted(d, "2020", "PAT-001")) == 4
    assert len(_shifted(d, "202001", "PAT-001")) == 6
    for bad in ("20201341", "2020-01-31", "hello", "2020013", "20200131xyz"):
        with pytest.raises(InvalidInput) as err:
            _shifted(d, bad, "PAT-001")
        assert bad not in str(err.value)
    # two instances of one subject share the offset; another subject gets its own
    one, two = _small_ct(), _small_ct()
    two.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    o1, o2 = d.deidentify(one), d.deidentify(two)
    assert o1.StudyDate == o2.StudyDate == _shifted(d, "20200131", "PAT-001")
    three = _small_ct()
    three.PatientID = "PAT-002"
    assert d.deidentify(three).StudyDate == _shifted(d, "20200131", "PAT-002")


def test_uid_references_stay_consistent_across_objects():
    d = Deidentifier(KEY)
    cts = []
    for i in range(3):
        ct = _small_ct()
        ct.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.10.{i}"
        cts.append(ct)
    seg = _small_ct()
    seg.Modality = "SEG"
    seg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    seg.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.20"
    seg.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.21"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    ref_series.ReferencedInstanceSequence = Sequence()
    frames = Sequence()
    for ct in cts:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ct.SOPClassUID
        ref.ReferencedSOPInstanceUID = ct.SOPInstanceUID
        ref_series.ReferencedInstanceSequence.append(ref)
        source = Dataset()
        source.ReferencedSOPClassUID = ct.SOPClassUID
        source.ReferencedSOPInstanceUID = ct.SOPInstanceUID
        derivation = Dataset()
        derivation.SourceImageSequence = Sequence([source])  # X/Z/U*
        frame = Dataset()
        frame.DerivationImageSequence = Sequence([derivation])
        frames.append(frame)
    seg.ReferencedSeriesSequence = Sequence([ref_series])
    seg.PerFrameFunctionalGroupsSequence = frames
    out_cts = [d.deidentify(ct) for ct in cts]
    out_seg = d.deidentify(seg)
    ref_out = out_seg.ReferencedSeriesSequence[0]
    assert ref_out.SeriesInstanceUID == out_cts[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in ref_out.ReferencedInstanceSequence] == [
        o.SOPInstanceUID for o in out_cts
    ]
    sources = [
        f.DerivationImageSequence[0].SourceImageSequence[0]
        for f in out_seg.PerFrameFunctionalGroupsSequence
    ]
    assert [s.ReferencedSOPInstanceUID for s in sources] == [o.SOPInstanceUID for o in out_cts]
    assert all(s.ReferencedSOPClassUID == CTImageStorage for s in sources)
    assert out_seg.FrameOfReferenceUID == out_cts[0].FrameOfReferenceUID
    assert out_seg.StudyInstanceUID == out_cts[0].StudyInstanceUID
    assert out_seg.SeriesInstanceUID != out_cts[0].SeriesInstanceUID


def test_well_known_uids_are_not_mapped():
    ds = _small_ct()
    ds.SynchronizationFrameOfReferenceUID = "1.2.840.10008.15.1.1"  # U, but DICOM-defined
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodingSchemeUID = "2.16.840.1.113883.6.96"
    ds.ConceptNameCodeSequence = Sequence([code])
    out = Deidentifier(KEY).deidentify(ds)
    assert out.SOPClassUID == CTImageStorage
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.SynchronizationFrameOfReferenceUID == "1.2.840.10008.15.1.1"
    assert out.ConceptNameCodeSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"


# ---------------------------------------------------------------------------------------------
# Options.


def test_patient_characteristics_option():
    ds = _small_ct()
    ds.PatientSex = "F"
    ds.PatientAge = "042Y"
    ds.PatientWeight = "70"
    on = Deidentifier(KEY).deidentify(ds)
    off = Deidentifier(KEY, retain_patient_characteristics=False).deidentify(ds)
    assert on.PatientSex == "F" and on.PatientAge == "042Y" and on.PatientWeight == 70
    assert off.PatientSex == ""  # Z: zero-length
    assert "PatientAge" not in off and "PatientWeight" not in off  # X


def test_modified_dates_option():
    ds = _small_ct()
    on = Deidentifier(KEY).deidentify(ds)
    off = Deidentifier(KEY, retain_dates=False).deidentify(ds)
    assert on.StudyDate == _shifted(Deidentifier(KEY), "20200131", "PAT-001")
    assert on.StudyTime == "101500"  # time of day kept
    assert on.AcquisitionDate == _shifted(Deidentifier(KEY), "20200131", "PAT-001")
    assert on.PatientBirthDate == ""
    assert off.StudyDate == "" and off.StudyTime == ""  # Z
    assert "AcquisitionDate" not in off  # X/Z
    assert off.ContentDate == "19000101"  # Z/D: dummy for dates


def test_clean_descriptors_option():
    ds = _small_ct()
    ds.SeriesDescription = "CT CHEST W CONTRAST"
    ds.ProtocolName = "JOHN SMITH T1_AX_POST"
    ds.StudyDescription = "Smith^John 2019-03-01"
    code = Dataset()
    code.CodeValue = "363358000"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "Malignant tumor of JONES"
    ds.ReasonForVisitCodeSequence = Sequence([code])
    on = Deidentifier(KEY).deidentify(ds)
    off = Deidentifier(KEY, clean_descriptors=False).deidentify(ds)
    assert on.SeriesDescription == "CT CHEST W CONTRAST"
    assert on.ProtocolName == "T1 AX POST"
    assert "StudyDescription" not in on  # nothing safe left: basic action X
    item = on.ReasonForVisitCodeSequence[0]
    assert item.CodeValue == "363358000" and item.CodingSchemeDesignator == "SCT"
    assert item.CodeMeaning == "Malignant tumor of"
    for keyword in ("SeriesDescription", "ProtocolName", "StudyDescription"):
        assert keyword not in off
    assert "ReasonForVisitCodeSequence" not in off


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CT CHEST W CONTRAST", "CT CHEST W CONTRAST"),
        ("T1_AX_POST", "T1_AX_POST"),
        ("GTV-1", "GTV-1"),
        ("PTV_70Gy", "PTV_70Gy"),
        ("Lung_L", "Lung_L"),
        ("2.5mm Soft Tissue", "2.5mm Soft Tissue"),
        ("CT CHEST John Doe 2019-03-01", "CT CHEST"),
        ("JOHN DOE", None),
        ("ACC 12345678", None),
        ("03/01", None),
        ("T1 1234", "T1"),
        ("CT CHEST 03 02 61", "CT CHEST"),  # several bare numbers: a date, like "03/02/61"
        ("LIVER 123 456 789", "LIVER"),  # or an id typed in groups
        ("LIVER 3 FEB 61", "LIVER"),  # the name between them is dropped first
        ("GTV 2", "GTV 2"),  # one alone is kept
        ("PTV 70GY 2", "PTV 70GY 2"),  # a number with a unit is not bare
        ("", ""),
    ],
)
def test_clean_text_rule(value, expected):
    assert clean_text(value) == expected


def test_method_code_sequence_lists_exactly_the_options_applied():
    ds = _small_ct()
    dcm = pytest.importorskip("pydicom.sr.codedict").codes.DCM
    assert METHOD_CODES["basic"] == ("113100", dcm.BasicApplicationConfidentialityProfile.meaning)
    flags = ("clean_descriptors", "retain_dates", "retain_patient_characteristics")
    for mask in range(8):
        options = {flag: bool(mask >> i & 1) for i, flag in enumerate(flags)}
        out = Deidentifier(KEY, **options).deidentify(ds)
        got = {
            (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
        }
        want = {("113100", "DCM")} | {(METHOD_CODES[f][0], "DCM") for f in flags if options[f]}
        assert got == want
    for item in Deidentifier(KEY).deidentify(ds).DeidentificationMethodCodeSequence:
        assert pydicom.sr.coding.Code(item.CodeValue, "DCM", item.CodeMeaning) in (
            dcm.BasicApplicationConfidentialityProfile,
            dcm.CleanDescriptorsOption,
            dcm.RetainLongitudinalTemporalInformationModifiedDatesOption,
            dcm.RetainPatientCharacteristicsOption,
        )
        assert item.CodeMeaning == next(m for v, m in METHOD_CODES.values() if v == item.CodeValue)


# ---------------------------------------------------------------------------------------------
# Secrets and errors.


def test_key_is_never_shown_and_errors_name_no_values(monkeypatch, caplog):
    d = Deidentifier(KEY)
    assert KEY.decode() not in repr(d) and "hidden" in repr(d)
    assert pickle.loads(pickle.dumps(d)).subject_id("x") == d.subject_id("x")

    monkeypatch.delenv("ATLAS_SITE_SECRET", raising=False)
    with pytest.raises(ConfigError) as err:
        Deidentifier.from_env()
    assert "ATLAS_SITE_SECRET" in str(err.value)
    monkeypatch.setenv("ATLAS_SITE_SECRET", "shortsecret")
    with pytest.raises(ConfigError) as err:
        Deidentifier.from_env()
    assert "ATLAS_SITE_SECRET" in str(err.value) and "shortsecret" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        Deidentifier.from_env("MY_SECRET", environ={"MY_SECRET": ""})
    assert "MY_SECRET" in str(err.value)
    monkeypatch.setenv("ATLAS_SITE_SECRET", KEY.decode())
    from_env = Deidentifier.from_env(retain_patient_characteristics=False)
    assert from_env.subject_id("x") == d.subject_id("x")
    assert not from_env.retain_patient_characteristics

    with pytest.raises(InvalidInput) as err:
        Deidentifier(b"tiny-key")
    assert "tiny-key" not in str(err.value)
    with pytest.raises(InvalidInput):
        Deidentifier("a str key of enough length")  # type: ignore[arg-type]

    ds = _small_ct()
    del ds.PatientID
    with pytest.raises(InvalidInput) as err:
        d.deidentify(ds)
    assert "PAT-001" not in str(err.value) and "Doe" not in str(err.value)

    canary, _ = _canary_dataset(mark_kept=False)
    with caplog.at_level(logging.DEBUG, logger="atlas.privacy.engine"):
        d.deidentify(canary)
    assert caplog.records, "expected a debug summary"
    assert "canary" not in caplog.text.lower() and KEY.decode() not in caplog.text
    assert CANARY_UID_ROOT not in caplog.text


# ---------------------------------------------------------------------------------------------
# Burned-in text and JSON.


@pytest.mark.parametrize(
    ("attrs", "risky"),
    [
        ({"Modality": "CT", "BurnedInAnnotation": "YES"}, True),
        ({"Modality": "CT"}, False),
        ({"Modality": "US"}, True),
        ({"Modality": "US", "BurnedInAnnotation": "NO"}, False),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, True),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.4"}, True),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7", "BurnedInAnnotation": "NO"}, False),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.6"}, False),  # not a Secondary Capture
        ({"Modality": "CT", "ImageType": ["DERIVED", "SECONDARY"]}, False),  # a reconstruction
        ({"Modality": "OT", "ImageType": ["ORIGINAL", "PRIMARY", "SCREEN SAVE"]}, True),
        (
            {"Modality": "OT", "ImageType": ["DERIVED", "SECONDARY"], "BurnedInAnnotation": "NO"},
            False,
        ),
        ({"Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}, False),
    ],
)
def test_burned_in_risk(attrs, risky):
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    reason = burned_in_risk(ds)
    assert (reason is not None) == risky
    if reason:
        assert isinstance(reason, str) and reason


def test_header_json_drops_bulk_data_and_always_serialises():
    ds = _small_ct()
    ds.Rows, ds.Columns, ds.BitsAllocated = 2, 2, 16
    ds.PixelData = b"\x01\x00" * 4
    ds.FloatPixelData = b"\x00" * 16
    ds.DoubleFloatPixelData = b"\x00" * 32
    ds.EncapsulatedDocument = b"%PDF-1.4 CANARY"
    waveform = Dataset()
    waveform.WaveformData = b"\x00\x01" * 8
    ds.WaveformSequence = Sequence([waveform])
    ds.add_new(0x00189087, "FD", float("nan"))  # Diffusion b-value, not finite
    out = Deidentifier(KEY).deidentify(ds)
    header = header_json(out)
    text = json.dumps(header, allow_nan=False)
    for tag in ("7FE00010", "7FE00008", "7FE00009", "00420011"):
        assert tag not in header
    assert "54001010" not in header["54000100"]["Value"][0]
    assert header["00189087"].get("Value", [None]) == [None]
    assert header["00100020"]["Value"] == [out.PatientID]
    assert "canary" not in text.lower()
    with pytest.raises(InvalidInput):
        header_json(ds)  # not de-identified


# ---------------------------------------------------------------------------------------------
# pydicom's real test files.


def _originals(ds: Dataset) -> set[str]:
    """Every identifying original value in ``ds``: names, ids, UIDs and dates."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR in ("PN", "DA", "DT") or elem.keyword in ("PatientID", "StudyID"):
            values = elem.value if elem.VM > 1 else [elem.value]
            found.update(str(v) for v in values if v not in (None, ""))
        if elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            found.update(str(v) for v in values if not str(v).startswith("1.2.840.10008."))
    return {v for v in found if len(v.strip("^ -")) >= 4}


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtstruct.dcm"])
def test_real_files(name):
    ds = pydicom.dcmread(get_testdata_file(name), force=True)
    before = copy.deepcopy(ds)
    originals = _originals(ds)
    assert str(ds.PatientID) in originals
    d = Deidentifier(KEY)
    out = d.deidentify(ds)
    # pydicom wrote these files, so its implementation UID (which we write) shares their root
    written = _written(out)
    scanned = written.replace(PYDICOM_IMPLEMENTATION_UID.encode(), b"")
    text = json.dumps(header_json(out))
    for value in originals:
        assert value.encode() not in scanned, f"an original {len(value)}-char value survived"
        assert value not in text
    assert not any(e.tag.is_private for e in out.iterall())
    assert out.PatientID == d.subject_id(str(before.PatientID))
    back = pydicom.dcmread(io.BytesIO(written))
    assert back.PatientIdentityRemoved == "YES"
    if "PixelData" in before:
        assert out.PixelData == before.PixelData
    assert ds == before


def test_rtstruct_references_follow_the_mapped_series():
    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    d = Deidentifier(KEY)
    out = d.deidentify(ds)
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    frame_out = out.ReferencedFrameOfReferenceSequence[0]
    assert frame_out.FrameOfReferenceUID == d.uid(frame.FrameOfReferenceUID)
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    series_out = frame_out.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series_out.SeriesInstanceUID == d.uid(series.SeriesInstanceUID)
    for roi, roi_out in zip(ds.StructureSetROISequence, out.StructureSetROISequence, strict=True):
        assert roi_out.ReferencedFrameOfReferenceUID == frame_out.FrameOfReferenceUID
        assert roi_out.ROIName == roi.ROIName  # "patient", "Isocenter 1": clean descriptors
    assert out.StructureSetLabel == "ANONYMIZED"  # "sep30" is not a safe descriptor: D


# ---------------------------------------------------------------------------------------------
# Helpers.


def _shifted(d: Deidentifier, value: str, patient_id: str) -> str:
    """``value`` shifted as ``d`` shifts the dates of ``patient_id`` (its site key's offset)."""
    return shift_value(value, d.site_key.date_shift_days(patient_id))


def _small_ct() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-001"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200131"
    ds.StudyTime = "101500"
    ds.AcquisitionDate = "20200131"
    ds.ContentDate = "20200131"
    ds.Modality = "CT"
    return ds
