"""The formats ingest hands to the index: staging tables, the journal, the ownership records."""

from __future__ import annotations

import numpy as np
import pytest

from atlas import records
from atlas.errors import ConfigError
from atlas.records import journal, ownership
from atlas.storage import open_store


def test_staging_tables_round_trip(tmp_path) -> None:
    store = open_store(tmp_path / "store")
    mask = np.zeros((2, 4, 4), dtype="uint8")
    mask[1, 1:3, 2:4] = 3
    base = {"site": "s", "collection": "c", "subject_id": "p", "study_id": "st"}
    base |= {"series_id": "se", "volume": 0, "image_path": "c/p/st/se.ome.zarr"}
    rows = records.annotation_rows(
        mask,
        base=base,
        image_ids=["i0", "i1"],
        label_image="seg",
        names={3: "liver"},
        codes={3: {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}},
        source="SEG",
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["z_index"], row["voxel_count"], row["label_name"]) == (1, 4, "liver")
    assert (row["bbox_y0"], row["bbox_x0"], row["bbox_y1"], row["bbox_x1"]) == (1, 2, 3, 4)
    key = records.write_table(store, "annotations", "c", "se", rows)
    assert key == records.staging_key("annotations", "c", "se")
    assert key.startswith(records.STAGING_PREFIX + "/")
    table = records.read_table(store, "annotations", "c")
    assert table.num_rows == 1 and table.column("code_value").to_pylist() == ["10200004"]
    assert table.schema.equals(records.schemas()["annotations"])
    assert records.read_table(store, "series").num_rows == 0  # nothing staged: empty, typed


def test_journal_lists_finished_series(tmp_path) -> None:
    store = open_store(tmp_path / "store")
    assert journal.read_entry(store, "c", "se") is None
    journal.mark_done(store, "c", "se", {"images": 3})
    assert journal.read_entry(store, "c", "se") == {"images": 3}
    assert journal.finished(store, "c") == ["se"]
    assert journal.journal_key("c", "se").startswith(journal.JOURNAL_PREFIX + "/")


def test_a_store_belongs_to_one_site_and_a_series_to_one_collection(tmp_path) -> None:
    store = open_store(tmp_path / "store")
    assert ownership.recorded_site(store) is None
    ownership.claim_site(store, "amsterdam")
    assert ownership.recorded_site(store) == "amsterdam"
    with pytest.raises(ConfigError, match="belongs to site 'amsterdam'"):
        ownership.check_site(store, "berlin")
    ownership.record_series(store, "se", "lung")
    assert ownership.series_collection(store, "se") == "lung"
    assert ownership.refusal(store, "se", "lung") is None
    assert "already in collection 'lung'" in (ownership.refusal(store, "se", "liver") or "")
