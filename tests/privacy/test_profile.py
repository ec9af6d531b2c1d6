"""Tests of :mod:`atlas.privacy.profile`: the option columns are generated, never hand-typed.

``src/atlas/privacy/data/table-e1-1-options.csv`` must be exactly what
``scripts/generate_deid_options.py`` writes. Regenerating it needs the generator's source (an
``idiscore`` wheel from the package index, or an installed ``idiscore``): point
``ATLAS_IDISCORE_WHEEL`` at the wheel to run that check. Without it, the file is still checked to
be in the generator's exact format with its provenance, and its columns are checked against an
independent transcription of the same columns: the 2024b edition as made machine-readable from
the standard's XML (innolitics/dicom-standard), restated below.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from atlas.privacy import Action, basic_profile, option_columns
from atlas.privacy.profile import OPTIONS_TABLE

pytest.importorskip("dicomanonymizer")
from pydicom.datadict import dictionary_VR

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src" / "atlas" / "privacy" / OPTIONS_TABLE
STANDARD = Path(__file__).parent / "data" / "ps3.15-table-e1-1-2026c.csv"


def _generator():
    path = ROOT / "scripts" / "generate_deid_options.py"
    spec = importlib.util.spec_from_file_location("generate_deid_options", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _words(text: str) -> set[int]:
    return {int(t, 16) for t in text.split()}


# The option columns of the 2024b edition (innolitics/dicom-standard, from the standard's XML),
# as the engine held them by hand before they were generated.
PATIENT_CHARS_KEEP_2024B = _words("00100040 00101010 00101020 00101030 00102160 001021A0 "
                                  "001021C0 00102203 0072005F")  # fmt: skip
PATIENT_CHARS_CLEAN_2024B = _words("00102110 00380050 00380500 00400012")
CLEAN_DESCRIPTORS_2024B = _words("""
    00081030 0008103E 00081080 00081084 00081088 00082111 00084000 00102000
    00102110 00102180 001021B0 00104000 00120051 00120072 0016002B 0016004B
    00180010 00181030 001811BB 00181400 00184000 00189185 0018937B 0018937F
    00189424 00189937 0018A003 00200027 00204000 00209158 00321030 00321060
    00321066 00321067 00321070 00324000 00380040 00380062 00380500 00384000
    003A0329 003A032B 00400007 00400254 00400275 00400280 00400310 0040051A
    00400600 00400602 00401002 0040100A 00401400 00402001 00402400 00500021
    006A0005 006A0006 00720066 00720068 0072006C 0072006E 00720070 04000565
    22000002 30020121 30020123 30060002 30060004 30060006 30060026 30060028
    30060038 30060085 30060088 300A0002 300A0003 300A0004 300A000B 300A000E
    300A0016 300A0072 300A00C3 300A00DD 300A0196 300A01A6 300A01B2 300A02EB
    300A0608 300A0619 300A0623 300A062A 300A0676 300A067C 300A067D 300A0734
    300A0742 300A0783 300A078E 300A0792 300A0794 300A079A 300C0113 3010000F
    30100017 30100033 30100034 30100035 30100036 30100037 30100038 30100054
    30100056 3010005A 3010005C 30100061 30100077 3010007A 3010007B 3010007F
    30100081 4008010B 40080115 40080300 40084000
""")
#: two OB timestamps: in the Modified Dates column, but an OB value cannot be shifted
UNSHIFTABLE = _words("00340007 04000310")
NOT_RETAINED = _words("00100030 00100032 00160077")  # birth date and time, GPS time stamp


def _standard_rows() -> list[dict[str, str]]:
    with STANDARD.open(encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _edition_2024b() -> set[int]:
    return {
        int(r["tag"], 16) for r in _standard_rows() if r["since"] == "2024b" and "x" not in r["tag"]
    }


def test_shipped_table_is_in_the_generators_format_with_provenance() -> None:
    gen = _generator()
    text = SHIPPED.read_text(encoding="utf-8")
    rows, source = gen.read_table(text)
    assert gen.render(rows, source) == text  # not edited by hand: the generator writes it so
    assert text.startswith("# PS3.15 Table E.1-1, option columns")
    assert "generated; do not edit" in text.splitlines()[0]
    assert source.package == "idiscore" and source.version and len(source.sha256) == 64
    assert source.scraped and "# edition: " in text
    assert {r.option for r in rows} == {"retain_patient_characteristics", "retain_dates",
                                        "clean_descriptors"}  # fmt: skip
    columns = option_columns()
    assert columns.source.startswith(f"idiscore {source.version}")
    assert len(columns.clean_descriptors) == sum(r.option == "clean_descriptors" for r in rows)


def test_shipped_table_equals_a_fresh_generation() -> None:
    gen = _generator()
    wheel = os.environ.get("ATLAS_IDISCORE_WHEEL")
    if wheel:
        data, version = gen._wheel_source(Path(wheel))
    else:
        found = gen._installed_source()
        if found is None:
            pytest.skip("set ATLAS_IDISCORE_WHEEL to an idiscore wheel to regenerate the table")
        data, version = found
    _, source = gen.read_table(SHIPPED.read_text(encoding="utf-8"))
    assert hashlib.sha256(data).hexdigest() == source.sha256, "the table names another source"
    assert gen.generate(data, version) == SHIPPED.read_text(encoding="utf-8")


def test_generated_columns_agree_with_the_2024b_standard() -> None:
    """Two transcriptions of the standard agree on every attribute of the 2024b edition."""
    columns = option_columns()
    old = _edition_2024b()
    keep = {t for t, a in columns.patient_characteristics.items() if a is Action.KEEP}
    clean = {t for t, a in columns.patient_characteristics.items() if a is Action.CLEAN}
    assert keep & old == PATIENT_CHARS_KEEP_2024B
    assert clean & old == PATIENT_CHARS_CLEAN_2024B
    assert columns.clean_descriptors & old == CLEAN_DESCRIPTORS_2024B
    # the attributes added after 2024b that the generated columns name (decision 0032)
    assert keep - old == _words("00102161 00102162 00100043 00100046 00100047")
    assert clean - old == _words("00100042")
    assert columns.clean_descriptors - old == _words(
        "00081301 00081302 00081303 00081304 00100016 00100042 00100045 0040B03B 0040B03F"
    )


def test_every_option_attribute_is_an_attribute_of_the_table() -> None:
    columns = option_columns()
    listed = set(basic_profile("2026c").exact)
    named = set(columns.patient_characteristics) | columns.modified_dates
    assert named | columns.clean_descriptors <= listed


def test_the_modified_dates_rule_reproduces_the_column() -> None:
    """The engine also shifts DA/DT/TM attributes newer than the column; on every attribute the
    column's edition lists, that rule and the column are the same set."""
    columns = option_columns()
    table = basic_profile("2026c")
    scraped = set(basic_profile("2024b").exact) | set(columns.modified_dates)

    def by_rule(tag: int) -> bool:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return False
        return (vr in ("DA", "DT", "TM") and tag not in NOT_RETAINED) or tag == 0x00080201

    known = {t for t in table.exact if t in scraped}
    rule = {t for t in known if by_rule(t)}
    unknown_vr = {t for t in columns.modified_dates if not _has_vr(t)}
    assert rule == (columns.modified_dates & known) - UNSHIFTABLE - unknown_vr


def _has_vr(tag: int) -> bool:
    try:
        dictionary_VR(tag)
    except KeyError:
        return False
    return True
