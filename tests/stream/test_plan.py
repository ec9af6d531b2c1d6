"""Planning from the catalog: volumes and 3-D label boxes from aggregated index tables."""

from __future__ import annotations

import numpy as np
import pytest
from tests.stream.plan_catalog import build_catalog, truth_boxes

from atlas.errors import InvalidInput, NotFound
from atlas.index.build import build_index
from atlas.index.catalog import open_atlas
from atlas.index.release import create_release
from atlas.privacy import consent
from atlas.stream import Split, VolumeTable, plan_epochs

TRUTH_VALUE = {"liver": 1, "liver tumour": 2}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory):
    return build_catalog(tmp_path_factory.mktemp("plan"), {"site-a": 3, "site-b": 2})


@pytest.fixture(scope="module")
def atlas(catalog):
    return open_atlas(catalog.stores, purpose="ai-training")


@pytest.fixture(scope="module")
def table(atlas) -> VolumeTable:
    return plan_epochs(atlas)


def test_volumes_come_from_the_series_table(catalog, table) -> None:
    assert len(table) == len(catalog.truth) == 5
    paths = [v.image_path for v in table.volumes]
    # storage order: site, then image path
    assert [(v.site, v.image_path) for v in table.volumes] == sorted(
        (catalog.site_of[p], p) for p in paths
    )
    for v in table.volumes:
        assert v.shape == catalog.truth[v.image_path].shape
        assert v.subject_id == catalog.subject[v.image_path]
        assert v.site == catalog.site_of[v.image_path]
        assert len(v.labels) == 1 and v.labels[0].startswith("seg-")
        np.testing.assert_allclose(v.spacing, (1.5, 0.7, 0.7), rtol=1e-5)
        assert v.levels >= 1 and v.split in Split().names
    assert table.label_names == ("liver", "liver tumour")


def test_label_boxes_are_the_truth_boxes(catalog, table) -> None:
    seen = 0
    for box in table.boxes:
        vol = table.volume(box.volume)
        truth = catalog.truth[vol.image_path]
        start, stop, voxels = truth_boxes(truth)[TRUTH_VALUE[box.label]]
        assert box.label_image in vol.labels
        assert (box.start, box.stop) == (start, stop), (box.label, vol.image_path)
        assert box.voxels == voxels
        seen += 1
    assert seen == 2 * len(table)  # liver and tumour in every volume
    assert table.counts.empty_boxes == 0 and table.counts.boxes_without_volume == 0


def test_plan_from_a_query_and_a_where_string(catalog, atlas, table) -> None:
    only_b = plan_epochs(atlas, 'site == "site-b"')
    assert {v.site for v in only_b.volumes} == {"site-b"} and len(only_b) == 2
    # a query on the images table: the volumes with at least one matching image
    q = atlas.images.where(label="liver tumour", site="site-a")
    from_images = plan_epochs(q)
    assert [v.image_path for v in from_images.volumes] == [
        v.image_path for v in table.volumes if v.site == "site-a"
    ]
    # boxes of the selected volumes keep every label (the sampler chooses)
    assert set(from_images.label_names) == {"liver", "liver tumour"}
    assert len(from_images.boxes) == 2 * len(from_images)
    none = plan_epochs(atlas, 'modality == "MR"')
    assert len(none) == 0 and len(none.boxes) == 0


def test_splits_keep_subjects_apart(catalog, atlas, table) -> None:
    split = Split({"train": 0.5, "validation": 0.25, "test": 0.25}, salt="s1")
    parts = {name: plan_epochs(atlas, split=split, subset=name) for name in split.names}
    subjects = {name: {v.subject_id for v in t.volumes} for name, t in parts.items()}
    assert sum(len(t) for t in parts.values()) == len(table)
    for a in split.names:
        for b in split.names:
            if a < b:
                assert not subjects[a] & subjects[b]
        for s in subjects[a]:
            assert split.of(s) == a
    with pytest.raises(InvalidInput, match="'tain'"):
        plan_epochs(atlas, split=split, subset="tain")


def test_subject_without_training_consent_is_never_planned(tmp_path, catalog) -> None:
    # a fresh copy of site-a's consent registry and index: one subject withdraws from training
    site = "site-a"
    store = catalog.stores[site]
    quitter = catalog.subjects(site)[0]
    consent.set_subject(store, quitter, ["research"])
    try:
        build_index(store)
        atlas = open_atlas({site: store}, purpose="ai-training")
        table = plan_epochs(atlas)
        assert quitter not in {v.subject_id for v in table.volumes}
        assert len(table) == len(catalog.subjects(site)) - 1
        # and no box of the quitter's volume either
        assert {table.volume(b.volume).subject_id for b in table.boxes} <= {
            v.subject_id for v in table.volumes
        }
        research = open_atlas({site: store}, purpose="research")
        with pytest.raises(InvalidInput, match="'research'"):
            plan_epochs(research)
    finally:
        consent.set_subject(store, quitter, ["research", "ai-training"])
        build_index(store)


def test_release_pins_the_plan(catalog) -> None:
    site = "site-b"
    stores = {site: catalog.stores[site]}
    create_release(stores, "trial-1")
    before = plan_epochs(open_atlas(stores, purpose="ai-training"))
    pinned_version = open_atlas(stores, purpose="ai-training").versions[site]
    # a subject withdraws; the current version loses it, the release still has it
    quitter = catalog.subjects(site)[0]
    consent.set_subject(stores[site], quitter, [])
    try:
        build_index(stores[site])
        now = plan_epochs(open_atlas(stores, purpose="ai-training"))
        pinned = plan_epochs(open_atlas(stores, purpose="ai-training"), release="trial-1")
        assert len(now) == len(before) - 1
        assert pinned.fingerprint() == before.fingerprint() != now.fingerprint()
        assert pinned.versions == {site: pinned_version}
        with pytest.raises(NotFound, match="no-such-release"):
            plan_epochs(open_atlas(stores, purpose="ai-training"), release="no-such-release")
    finally:
        consent.set_subject(stores[site], quitter, ["research", "ai-training"])
        build_index(stores[site])


def test_bad_sources_are_refused(atlas) -> None:
    with pytest.raises(InvalidInput, match="Atlas or a catalog Query"):
        plan_epochs("site-a")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        plan_epochs(atlas, "no_such_column == 1")


def test_volumes_and_samples_name_what_to_read(table) -> None:
    read = pytest.importorskip("atlas.read")
    from atlas.stream import EpochPlan, PatchSampler

    vol = table.volume(0)
    assert vol.ref() == read.ImageRef(vol.site, vol.image_path)
    assert vol.ref(vol.labels[0]).label == vol.labels[0]
    with pytest.raises(InvalidInput, match="no label image 'nope'"):
        vol.ref("nope")
    spec = EpochPlan(table, PatchSampler(8, labels=True))[0]
    assert spec.region == read.Region(spec.start, spec.stop)
    assert spec.label == table.volume(spec.volume).labels[0]
