"""Free text of label objects and header code meanings never reach a byte Atlas writes.

A synthetic study is made hostile: every free-text field of its RTSTRUCT and SEG (names,
descriptions, observation labels, interpreters, algorithm names, tracking ids, typed code
meanings, a private code) and the CT headers' Body Part Examined and code meanings carry
canary names, dates and ids, plus terminal escape sequences and bidi overrides. It is
ingested, indexed and queried through the CLI; then every byte written (store objects incl.
index shards and manifests, staging, report, CLI output) is searched for the canaries. Coded
meanings and clean vocabulary names (``Liver``, ``GTV``) must survive.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from atlas.ingest.label_text import deidentify_labels
from atlas.ingest.model import LabelVolume
from atlas.privacy import Deidentifier, header_json
from atlas.privacy.codes import body_part_code, is_sctid, standard_meaning
from atlas.privacy.descriptors import clean_code, clean_name
from atlas.privacy.safe_text import printable, visible

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"
TOKEN = "q7x3"
#: distinctive canaries: searched in every byte written
CANARIES = {
    "roi_name": f"Smith^John{TOKEN} 1961-02-03",
    "roi_desc": f"CANARY-ROIDESC-{TOKEN}",
    "roi_gen_desc": f"CANARY-ROIGEN-{TOKEN}",
    "obs_label": f"CNRY-OBS-{TOKEN}",
    "obs_desc": f"CANARY-OBSDESC-{TOKEN}",
    "rt_meaning": f"CANARY-RTMEANING-{TOKEN}",
    "private_value": f"CNRYVAL{TOKEN}",
    "private_meaning": f"CANARY-PRIVMEANING-{TOKEN}",
    "seg_label": f"CANARY-SEGLABEL-{TOKEN} 1961-02-03",
    "seg_desc": f"CANARY-SEGDESC-{TOKEN}",
    "seg_algo": f"CANARY-SEGALGO-{TOKEN}",
    "seg_tracking": f"CANARY-TRACKING-{TOKEN}",
    "seg_type_meaning": f"CANARY-TYPEMEANING-{TOKEN}",
    "seg_cat_meaning": f"CANARY-CATMEANING-{TOKEN}",
    "seg_region_meaning": f"CANARY-REGIONMEANING-{TOKEN}",
    "body_part": f"CNRYBODY{TOKEN.upper()}",
    "ct_region_meaning": f"CANARY-CTREGION-{TOKEN}",
    "ct_unknown_meaning": f"CANARY-CTUNKNOWN-{TOKEN}",
}
#: realistic identifying pieces: searched in every text written (too short for binary data)
PIECES = ["Smith^John", "1961-02-03", "patient 123456", "SMITH", "John"]
CONTROLS = ["\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\u200b"]
KEPT_RT = {1: "Liver", 2: "GTV", 3: "roi-3", 4: "tumour of patient"}
KEPT_SEG = {1: "Liver", 2: "segment-2"}


def _code(scheme: str, value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _slice_of(contour: Any, order: dict[str, int]) -> int:
    return order[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]


def make_hostile(study: Any, out: Path) -> list[str]:
    """Hostile copies of the study's CT, RTSTRUCT and SEG under ``out``; the sources to ingest."""
    ct_dir = out / "CT"
    ct_dir.mkdir(parents=True)
    region = Dataset()
    for k, path in enumerate(study.ct_files):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: bidi controls survive in the file
        ds.BodyPartExamined = CANARIES["body_part"]
        ds.Manufacturer = "Acme\x1b[2J\x1b]0;pwned\x07 CT\u202e"
        ds.AnatomicRegionSequence = [
            _code("SCT", "10200004", CANARIES["ct_region_meaning"]),  # known: Liver
            _code("99LOCAL", "R1", CANARIES["ct_unknown_meaning"]),
        ]
        region = ds.AnatomicRegionSequence[0]
        ds.save_as(ct_dir / f"ct{k:03d}.dcm")
    assert region.CodeValue == "10200004"

    # RTSTRUCT: liver and tumour contours split by slice parity over four ROIs
    rt = pydicom.dcmread(study.rtstruct_file)
    rt.SpecificCharacterSet = "ISO_IR 192"
    order = {uid: k for k, uid in enumerate(study.sop_instance_uids)}
    liver, tumour = rt.ROIContourSequence
    names = {
        1: "Liver",
        2: "GTV\x1b[31m",
        3: CANARIES["roi_name"],
        4: "tumour of patient 123456\u202e",
    }
    parts = {
        1: [c for c in liver.ContourSequence if _slice_of(c, order) % 2 == 0],
        2: [c for c in tumour.ContourSequence if _slice_of(c, order) % 2 == 0],
        3: [c for c in liver.ContourSequence if _slice_of(c, order) % 2 == 1],
        4: [c for c in tumour.ContourSequence if _slice_of(c, order) % 2 == 1],
    }
    template_ss = rt.StructureSetROISequence[0]
    template_obs = rt.RTROIObservationsSequence[0]
    ss_items, rc_items, obs_items = [], [], []
    for n in (1, 2, 3, 4):
        ss = Dataset()
        ss.ROINumber = str(n)
        ss.ReferencedFrameOfReferenceUID = template_ss.ReferencedFrameOfReferenceUID
        ss.ROIName = names[n]
        ss.ROIDescription = CANARIES["roi_desc"]
        ss.ROIGenerationAlgorithm = "MANUAL"
        ss.ROIGenerationDescription = CANARIES["roi_gen_desc"]
        ss_items.append(ss)
        rc = Dataset()
        rc.ReferencedROINumber = str(n)
        rc.ROIDisplayColor = ["200", "100", "50"]
        rc.ContourSequence = parts[n]
        rc_items.append(rc)
        obs = Dataset()
        obs.ObservationNumber = str(n)
        obs.ReferencedROINumber = str(n)
        obs.ROIObservationLabel = CANARIES["obs_label"]
        obs.ROIObservationDescription = CANARIES["obs_desc"]
        obs.RTROIInterpretedType = "ORGAN" if n in (1, 3) else "GTV"
        obs.ROIInterpreter = template_obs.ROIInterpreter
        if n == 1:  # a known code with a typed meaning
            obs.RTROIIdentificationCodeSequence = [_code("SCT", "10200004", CANARIES["rt_meaning"])]
        if n == 3:  # a private code: its value could be anything
            obs.RTROIIdentificationCodeSequence = [
                _code("99CNRY", CANARIES["private_value"], CANARIES["private_meaning"])
            ]
        obs_items.append(obs)
    rt.StructureSetROISequence = ss_items
    rt.ROIContourSequence = rc_items
    rt.RTROIObservationsSequence = obs_items
    rt_path = out / "rtstruct.dcm"
    rt.save_as(rt_path)

    seg = pydicom.dcmread(study.seg_file)
    seg.SpecificCharacterSet = "ISO_IR 192"
    first, second = seg.SegmentSequence
    first.SegmentLabel = "Liver"
    second.SegmentLabel = CANARIES["seg_label"] + "\x1b[1;31m"
    for item in (first, second):
        item.SegmentDescription = CANARIES["seg_desc"]
        item.SegmentAlgorithmName = CANARIES["seg_algo"]
        item.TrackingID = CANARIES["seg_tracking"]
        item.SegmentedPropertyTypeCodeSequence[0].CodeMeaning = CANARIES["seg_type_meaning"]
        item.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning = CANARIES["seg_cat_meaning"]
    second.AnatomicRegionSequence[0].CodeMeaning = CANARIES["seg_region_meaning"]
    first.SegmentAlgorithmType = "MANUAL"
    seg_path = out / "seg.dcm"
    seg.save_as(seg_path)
    return [str(ct_dir), str(rt_path), str(seg_path)]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[str]]:
    from atlas.testing.synthetic import make_study

    root = tmp_path_factory.mktemp("hostile")
    study = make_study(root / "study", shape=(12, 48, 48), seed=21, with_nifti=False)
    return study, make_hostile(study, root / "in")


def _texts_of_store(store_dir: Path) -> list[tuple[str, str]]:
    """Every object's text: JSON/text files as they are, Parquet decoded to JSON."""
    import pyarrow.parquet as pq

    out = []
    for p in sorted(store_dir.rglob("*")):
        if not p.is_file():
            continue
        raw = p.read_bytes()
        name = str(p.relative_to(store_dir))
        if p.suffix == ".parquet":
            rows = pq.read_table(io.BytesIO(raw)).to_pylist()
            out.append((name, json.dumps(rows, default=str, ensure_ascii=False)))
        else:
            try:
                out.append((name, raw.decode("utf-8")))
            except UnicodeDecodeError:
                continue  # binary chunk data: searched as bytes
    return out


def test_label_and_header_free_text_never_written(hostile, tmp_path, capfd) -> None:
    from typer.testing import CliRunner

    from atlas.cli.app import app

    study, sources = hostile
    store_dir = tmp_path / "store"
    report = tmp_path / "report.json"
    env = {SECRET_ENV: SECRET}
    runner = CliRunner()
    outputs = []

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
        return result.output

    cli("ingest", *sources, "--site", "s1", "--collection", "c1", "--store", str(store_dir),
        "--secret-env", SECRET_ENV, "--report", str(report))  # fmt: skip
    site = ["--store", str(store_dir), "--site", "s1"]  # the store refuses another site name
    cli("consent", "set", "research", "--collection", "c1", *site)
    cli("index", "build", *site)
    rows_json = cli("query", "--table", "annotations", "--format", "json", "--limit", "0", *site)
    cli("query", "--table", "annotations", "--limit", "0", *site)
    cli("query", "label == 'GTV'", "--table", "annotations", "--count", *site)
    captured = capfd.readouterr()
    texts = [("cli", "\n".join(outputs)), ("stdout", captured.out), ("stderr", captured.err)]
    texts.append(("report", report.read_text()))
    store_texts = _texts_of_store(store_dir)
    texts += store_texts
    assert any("_index" in n for n, _ in store_texts), "the index was not built"
    assert json.loads(report.read_text())["quarantined"] == []

    # nothing of the canaries, anywhere
    blobs = [(p, p.read_bytes()) for p in sorted(store_dir.rglob("*")) if p.is_file()]
    canaries = [*CANARIES.values(), *study.canaries]
    for canary in canaries:
        for p, raw in blobs:
            assert canary.encode() not in raw, f"canary in {p.relative_to(store_dir)}"
        upper = canary.upper()
        for name, text in texts:
            assert canary not in text and upper not in text.upper(), (canary, name)
    for piece in PIECES:
        for name, text in texts:
            assert piece not in text, (piece, name)
    for ch in CONTROLS:
        for name, text in texts:
            assert ch not in text, (repr(ch), name)
            assert json.dumps(ch)[1:-1] not in text, (repr(ch), name)  # not even escaped

    # what is kept: clean names, neutral names, standard meanings, flags
    rows = json.loads(rows_json)
    by_source: dict[str, dict[int, Any]] = defaultdict(dict)
    for r in rows:
        by_source[r["source"]][r["label_value"]] = r
    assert {v: r["label_name"] for v, r in by_source["RTSTRUCT"].items()} == KEPT_RT
    assert {v: r["label_name"] for v, r in by_source["SEG"].items()} == KEPT_SEG
    # ROI 1's name is kept, its typed code meaning replaced: every label was cleaned somehow
    assert all(r["label_cleaned"] for r in rows)
    rt1 = by_source["RTSTRUCT"][1]
    assert (rt1["code_scheme"], rt1["code_value"], rt1["code_meaning"]) == (
        "SCT", "10200004", "Liver"
    )  # fmt: skip
    assert by_source["RTSTRUCT"][3]["code_value"] is None  # the private code is dropped
    seg2 = by_source["SEG"][2]
    assert (seg2["code_scheme"], seg2["code_meaning"]) == ("SCT", "Neoplasm")
    assert by_source["SEG"][1]["code_meaning"] == "Liver"

    from atlas.ome import open_image
    from atlas.storage import open_store

    store = open_store(store_dir)
    (path,) = [r["image_path"] for r in rows[:1]]
    image = open_image(store, path)
    attrs = json.loads((store_dir / path / "zarr.json").read_text())["attributes"]
    for name in image.metadata.labels:
        label = image.label(name)
        expected = KEPT_RT if name.startswith("rtstruct") else KEPT_SEG
        assert label.info.names == expected
        cleaned = {v: p.get("cleaned") for v, p in label.info.properties.items()}
        if name.startswith("rtstruct"):
            assert cleaned == {1: ["code_meaning"], 2: ["name"], 3: ["name", "code"], 4: ["name"]}
        else:
            assert cleaned == {1: ["code_meaning"], 2: ["name", "code_meaning"]}
    # header: body part with no known word removed; code meanings standard or dropped
    header = attrs["atlas"]["dicom"]
    assert "00180015" not in header or not header["00180015"].get("Value")
    region = header["00082218"]["Value"]
    assert region[0]["00080104"]["Value"] == ["Liver"]
    assert "00080104" not in region[1]  # unknown code: typed meaning cleaned away
    assert header["00080070"]["Value"] == ["Acme CT"]


# --------------------------------------------------------------------------------------------
# the rules, one by one


def test_clean_name_keeps_vocabulary_and_neutralises_the_rest() -> None:
    assert clean_name("Liver", "roi-1") == ("Liver", False)
    assert clean_name("GTV", "roi-1") == ("GTV", False)
    assert clean_name("PTV 70GY", "roi-1") == ("PTV 70GY", False)
    assert clean_name("Smith^John 1961-02-03", "roi-3") == ("roi-3", True)
    assert clean_name("tumour of patient 123456", "roi-4") == ("tumour of patient", True)
    # numbers typed in groups (a birth date, a record number) go; one number alone stays
    assert clean_name("liver 03 02 61", "roi-4") == ("liver", True)
    assert clean_name("Liver 123 456 789", "roi-4") == ("Liver", True)
    assert clean_name("Liver \uff10\uff13 \uff10\uff12 \uff16\uff11", "roi-4") == ("Liver", True)
    assert clean_name("GTV 2", "roi-4") == ("GTV 2", False)
    assert clean_name("GTV\x1b[31m", "roi-2") == ("GTV", True)
    assert clean_name("Li\u202ever", "roi-2") == ("Liver", True)  # stored as it reads
    assert clean_name("", "segment-2") == ("segment-2", False)
    assert clean_name("123", "segment-2") == ("segment-2", True)
    assert clean_name("John of the 12", "roi-5") == ("roi-5", True)  # only function words
    assert clean_name("L Lung", "roi-5") == ("L Lung", False)


def test_clean_code_uses_the_standard_meaning() -> None:
    code, changed = clean_code({"scheme": "SCT", "value": "10200004", "meaning": "Smith"})
    assert code == {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}
    assert changed == ["code_meaning"]
    assert clean_code({"scheme": "SCT", "value": "10200004", "meaning": "Liver"}) == (
        {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}, []
    )  # fmt: skip
    # a legacy SNOMED-RT code gets its SNOMED CT concept's meaning
    assert clean_code({"scheme": "SRT", "value": "T-62000", "meaning": "x"})[0] == {
        "scheme": "SRT", "value": "T-62000", "meaning": "Liver"
    }  # fmt: skip
    # private or malformed codes are dropped; a valid SCTID outside the dictionaries is kept
    assert clean_code({"scheme": "99X", "value": "A1", "meaning": "Liver"}) == (None, ["code"])
    assert clean_code({"scheme": "SCT", "value": "1961020312", "meaning": "a"}) == (
        None, ["code"]
    )  # fmt: skip
    assert is_sctid("10200004") and not is_sctid("10200005")
    unknown = "1000000000000" + "10" + "?"
    for digit in "0123456789":  # the one check digit that makes it an SCTID
        value = unknown.replace("?", digit)
        if is_sctid(value) and standard_meaning("SCT", value) is None:
            code, changed = clean_code({"scheme": "SCT", "value": value, "meaning": "Left lung"})
            assert code == {"scheme": "SCT", "value": value, "meaning": "Left lung"}
            code, changed = clean_code({"scheme": "SCT", "value": value, "meaning": "Dr Who"})
            assert code == {"scheme": "SCT", "value": value} and changed == ["code_meaning"]
            break
    else:  # pragma: no cover
        raise AssertionError("no check digit made a valid SCTID")


def test_deidentify_labels_records_what_changed() -> None:
    lab = LabelVolume(
        mask=np.zeros((1, 2, 2), np.uint8),
        names={1: "Liver", 2: "Jones 1961"},
        source="RTSTRUCT",
        codes={2: {"scheme": "99X", "value": "J1", "meaning": "Jones"}},
    )
    clean = deidentify_labels(lab)
    assert clean.names == {1: "Liver", 2: "roi-2"}
    assert clean.codes == {}
    assert clean.cleaned == {2: ["name", "code"]}
    assert "Jones" not in repr(lab) and "Jones" not in repr(clean)


def test_safe_text() -> None:
    assert printable("a\x1b[2Jb\x1b]0;title\x07c\u202ed\u200be") == "abcde"
    assert printable("two\nlines", multiline=True) == "two\nlines"
    assert printable("two\nlines") == "two lines"
    assert visible("x\x1b[31m\u202ey") == "x\\x1b[31m\\u202ey"
    assert visible("plain") == "plain"


def test_quarantine_reasons_and_paths_cannot_drive_a_terminal(tmp_path) -> None:
    from atlas.ingest.model import FileRef, Quarantined

    q = Quarantined(FileRef(str(tmp_path / "a\x1b[2J.dcm")), "bad \x1b]0;x\x07 value\u202e")
    assert "\x1b" not in q.reason and "\u202e" not in q.reason
    assert "\x1b" not in json.dumps(q.to_json(), ensure_ascii=False)


def test_header_code_meanings_and_body_part() -> None:
    ds = Dataset()
    ds.PatientID = "P-1"
    ds.BodyPartExamined = "chest"
    ds.Manufacturer = "Vendor\x1b[0m"
    ds.SoftwareVersions = "VB20A"
    ds.AnatomicRegionSequence = [
        _code("SCT", "39607008", "Mr Smith's lung"),  # known: Lung
        _code("99LOCAL", "X1", "Left lung Smith 1961"),  # unknown: cleaned
        _code("99LOCAL", "X2", "Smith"),  # unknown: nothing left, dropped
    ]
    # nested in an unlisted sequence
    ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
        _code("SCT", "7771000", "John")  # known: Left
    ]
    out = Deidentifier(b"k" * 32).deidentify(ds)
    assert out.BodyPartExamined == "CHEST" and body_part_code("CHEST") is not None
    assert out.Manufacturer == "Vendor"
    assert out.SoftwareVersions == "VB20A"
    meanings = [i.get("CodeMeaning") for i in out.AnatomicRegionSequence]
    assert meanings == ["Lung", "Left lung", None]
    modifier = out.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    assert modifier.CodeMeaning == standard_meaning("SCT", "7771000") == "Left"
    assert "Smith" not in json.dumps(header_json(out))
    # a private or local code's value (and scheme) goes with it; public codes stay
    assert [i.get("CodeValue") for i in out.AnatomicRegionSequence] == ["39607008", None, None]
    assert "CodingSchemeDesignator" not in out.AnatomicRegionSequence[1]
    ds.ProcedureCodeSequence = [
        _code("99HOSP", "MRN004217", "CT abdomen"),  # a record number as a code value
        _code("L", "SMITHJ61", "Liver"),
        _code("SCT", "1961020300", "Liver"),  # not an SCTID (check digit)
        _code("UCUM", "10-3.mm2/s", "ADC unit"),  # public scheme, value not listed: kept
        _code("DCM", "121322", "whatever"),
    ]
    text = json.dumps(header_json(Deidentifier(b"k" * 32).deidentify(ds)))
    for typed in ("MRN004217", "SMITHJ61", "1961020300", "99HOSP"):
        assert typed not in text
    assert "10-3.mm2/s" in text and "121322" in text
    ds.BodyPartExamined = "JOHN SMITH"
    assert "BodyPartExamined" not in Deidentifier(b"k" * 32).deidentify(ds)
    ds.BodyPartExamined = "LIVER JOHN"
    assert Deidentifier(b"k" * 32).deidentify(ds).BodyPartExamined == "LIVER"
