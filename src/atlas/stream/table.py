"""The volumes an epoch draws from, and each label's 3-D box in them: a columnar table.

:func:`plan_epochs` builds a :class:`VolumeTable` from the catalog with two SQL aggregations per
site — one row per volume from the series table, one row per (volume, label image, label value)
from the annotations table (z range from ``min``/``max`` of ``z_index``, y/x range from the
per-slice bounding boxes) — never from the image rows one by one (decision 0046). Streaming asks
with the purpose ``ai-training``: rows of subjects whose consent does not cover it never reach
the plan. Everything is held as numpy/pyarrow columns, so a 200,000-volume plan takes a few
tens of MB and pickles quickly into DataLoader workers; :class:`Volume` and :class:`LabelBox`
objects are made on access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from atlas.errors import InvalidInput
from atlas.stream.splits import Split

if TYPE_CHECKING:
    from atlas.index.catalog import Atlas, Query
    from atlas.read import ImageRef

__all__ = ["TRAINING_PURPOSE", "LabelBox", "Volume", "VolumeTable", "plan_epochs"]

#: the purpose every stream asks the catalog with
TRAINING_PURPOSE = "ai-training"

_VOLUME_COLUMNS = (
    "site", "collection", "subject_id", "series_id", "volume", "image_path", "size_z", "size_y",
    "size_x", "spacing_z", "spacing_y", "spacing_x", "levels", "channels", "labels",
)  # fmt: skip
_BOX_COLUMNS = (
    "site", "series_id", "volume", "label_image", "label_value", "label_name",
    "z0", "z1", "y0", "y1", "x0", "x1", "voxels",
)  # fmt: skip
_BOX_SELECT = (
    "site, series_id, volume, label_image, label_value, label_name AS label_name, "
    "min(z_index) AS z0, max(z_index) + 1 AS z1, min(bbox_y0) AS y0, max(bbox_y1) AS y1, "
    "min(bbox_x0) AS x0, max(bbox_x1) AS x1, sum(voxel_count)::BIGINT AS voxels"
)
_BOX_GROUP = "GROUP BY site, series_id, volume, label_image, label_value, label_name"


@dataclass(frozen=True)
class Volume:
    """One readable volume (one row of the series table)."""

    site: str
    subject_id: str
    series_id: str
    volume: int
    image_path: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    levels: int
    labels: tuple[str, ...] = ()
    collection: str = ""
    split: str | None = None

    def ref(self, label: str | None = None) -> ImageRef:
        """The :class:`atlas.read.ImageRef` of the image, or of one of its label images."""
        from atlas.read import ImageRef

        if label is not None and label not in self.labels:
            raise InvalidInput(
                f"volume {self.series_id}/{self.volume} has no label image {label!r}; "
                f"it has {list(self.labels)}"
            )
        return ImageRef(self.site, self.image_path, label)


@dataclass(frozen=True)
class LabelBox:
    """One label's 3-D bounding box in one volume (level-0 voxels, ``stop`` exclusive)."""

    volume: int
    label_image: str
    label_value: int
    label: str
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    voxels: int


class _View(Sequence[Any]):
    """A lazy sequence over a table's rows (made on access)."""

    def __init__(self, n: int, make: Any) -> None:
        self._n = n
        self._make = make

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._make(j) for j in range(*i.indices(self._n))]
        j = int(i) + self._n if int(i) < 0 else int(i)
        if not 0 <= j < self._n:
            raise IndexError(i)
        return self._make(j)

    def __iter__(self) -> Iterator[Any]:
        return (self._make(j) for j in range(self._n))


@dataclass
class PlanCounts:
    """What planning left out, and why (never any id)."""

    volumes: int = 0
    boxes: int = 0
    empty_boxes: int = 0
    boxes_without_volume: int = 0
    missing_sites: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able counts."""
        return dict(self.__dict__)


class VolumeTable:
    """The volumes of a plan and their label boxes, as columns.

    Volumes are in storage order (site, image path, volume number) — the order samplers and
    :class:`~atlas.stream.order.EpochOrder` call "storage order". Build one with
    :func:`plan_epochs` (from the catalog) or :meth:`from_arrow` (from tables with the same
    columns).
    """

    def __init__(
        self,
        volumes: Any,
        boxes: Any,
        *,
        versions: Mapping[str, str] | None = None,
        counts: PlanCounts | None = None,
    ) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        volumes, boxes = volumes.combine_chunks(), boxes.combine_chunks()
        self.arrow: pa.Table = volumes
        self.shapes = _columns(volumes, ("size_z", "size_y", "size_x"), np.int64)
        self.spacings = _columns(volumes, ("spacing_z", "spacing_y", "spacing_x"), np.float64)
        self.levels = _columns(volumes, ("levels",), np.int64)[:, 0]
        self.box_volume = _columns(boxes, ("volume_index",), np.int64)[:, 0]
        self.box_start = _columns(boxes, ("z0", "y0", "x0"), np.int64)
        self.box_stop = _columns(boxes, ("z1", "y1", "x1"), np.int64)
        self.box_voxels = _columns(boxes, ("voxels",), np.int64)[:, 0]
        self.box_value = _columns(boxes, ("label_value",), np.int64)[:, 0]
        names = boxes["label_name"]
        self.label_names: tuple[str, ...] = tuple(sorted(pc.unique(names).to_pylist()))
        codes = pc.index_in(names, value_set=pa.array(self.label_names, pa.string()))
        self.box_label = codes.to_numpy(zero_copy_only=False).astype(np.int64)
        self.box_image: pa.Array = boxes["label_image"].combine_chunks()
        self.versions = dict(versions or {})
        self.counts = counts or PlanCounts(volumes=volumes.num_rows, boxes=boxes.num_rows)
        self._boxes_arrow = boxes

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_arrow(
        cls,
        volumes: Any,
        boxes: Any | None = None,
        *,
        split: Split | None = None,
        versions: Mapping[str, str] | None = None,
        missing_sites: Mapping[str, str] | None = None,
    ) -> VolumeTable:
        """A table from a series-like and an aggregated-annotations-like pyarrow Table.

        ``volumes`` needs the columns of the series table named in ``_VOLUME_COLUMNS``;
        ``boxes`` one row per (site, series, volume, label image, label value) with ``z0, z1,
        y0, y1, x0, x1, voxels`` (ends exclusive). Volumes are sorted into storage order, boxes
        are matched to their volume; boxes that cover nothing (no voxels) are counted and
        dropped.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        split = split or Split()
        missing = [c for c in _VOLUME_COLUMNS if c not in volumes.column_names]
        if missing:
            raise InvalidInput(f"volume table lacks columns {missing}")
        vols = volumes.select(list(_VOLUME_COLUMNS))
        sized = pc.and_(
            pc.and_(pc.is_valid(vols["size_z"]), pc.is_valid(vols["size_y"])),
            pc.is_valid(vols["size_x"]),
        )
        vols = vols.filter(sized).sort_by(
            [(c, "ascending") for c in ("site", "image_path", "volume", "series_id")]
        )
        # one hash per subject (not per volume), mapped back onto the volumes
        subjects = pc.unique(vols["subject_id"])
        of_subject = pa.array(
            np.asarray(split.names, dtype=object)[split.codes(subjects.to_pylist())].tolist()
            if len(subjects)
            else [],
            pa.string(),
        )
        where = pc.index_in(vols["subject_id"], value_set=subjects)
        vols = vols.append_column("split", of_subject.take(where))
        vols = vols.append_column("volume_index", pa.array(np.arange(vols.num_rows)))
        if boxes is None or boxes.num_rows == 0:
            raw = _empty_boxes()
        else:
            raw = boxes.select(list(_BOX_COLUMNS))
        keys = vols.select(["site", "series_id", "volume", "volume_index"])
        raw = raw.cast(_box_schema(raw.schema, keys.schema))
        matched = raw.join(keys, keys=["site", "series_id", "volume"], join_type="inner")
        covers = pc.greater(matched["voxels"], 0)
        for lo, hi in (("z0", "z1"), ("y0", "y1"), ("x0", "x1")):
            covers = pc.and_(covers, pc.greater(matched[hi], matched[lo]))
        kept = matched.filter(covers).sort_by(
            [(c, "ascending") for c in ("volume_index", "label_name", "label_image", "label_value")]
        )
        counts = PlanCounts(
            volumes=vols.num_rows,
            boxes=kept.num_rows,
            empty_boxes=matched.num_rows - kept.num_rows,
            boxes_without_volume=raw.num_rows - matched.num_rows,
            missing_sites=dict(missing_sites or {}),
        )
        return cls(vols, kept, versions=versions, counts=counts)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.arrow.num_rows)

    def __repr__(self) -> str:
        return f"VolumeTable({len(self)} volumes, {len(self.box_volume)} label boxes)"

    def volume(self, i: int) -> Volume:
        """The :class:`Volume` at position ``i`` (storage order)."""
        row = {c: self.arrow[c][int(i)].as_py() for c in self.arrow.column_names}
        return Volume(
            site=row["site"],
            subject_id=row["subject_id"],
            series_id=row["series_id"],
            volume=int(row["volume"]),
            image_path=row["image_path"],
            shape=(int(row["size_z"]), int(row["size_y"]), int(row["size_x"])),
            spacing=(
                float(row["spacing_z"] or 1.0),
                float(row["spacing_y"] or 1.0),
                float(row["spacing_x"] or 1.0),
            ),
            levels=int(row["levels"] or 1),
            labels=tuple(sorted(row["labels"] or ())),
            collection=row["collection"],
            split=row["split"],
        )

    def box(self, j: int) -> LabelBox:
        """The :class:`LabelBox` at position ``j``."""
        j = int(j)
        return LabelBox(
            volume=int(self.box_volume[j]),
            label_image=str(self.box_image[j].as_py()),
            label_value=int(self.box_value[j]),
            label=self.label_names[int(self.box_label[j])],
            start=tuple(int(v) for v in self.box_start[j]),  # type: ignore[arg-type]
            stop=tuple(int(v) for v in self.box_stop[j]),  # type: ignore[arg-type]
            voxels=int(self.box_voxels[j]),
        )

    @property
    def volumes(self) -> Sequence[Volume]:
        """Every volume, as a lazy sequence of :class:`Volume`."""
        return _View(len(self), self.volume)

    @property
    def boxes(self) -> Sequence[LabelBox]:
        """Every label box, as a lazy sequence of :class:`LabelBox`."""
        return _View(len(self.box_volume), self.box)

    @property
    def splits(self) -> np.ndarray:
        """The split name of each volume (object array)."""
        return np.asarray(self.arrow["split"].to_pylist(), dtype=object)

    def label_code(self, name: str) -> int:
        """The index of label ``name`` in :attr:`label_names`; InvalidInput if no box has it."""
        try:
            return self.label_names.index(name)
        except ValueError:
            raise InvalidInput(
                f"no volume of this plan has label {name!r}; labels present: "
                f"{list(self.label_names)}"
            ) from None

    def first_label_image(self) -> list[str | None]:
        """Each volume's first label image by name (``None`` where it has none)."""
        return [min(x) if x else None for x in self.arrow["labels"].to_pylist()]

    # -- derived tables -------------------------------------------------------------------
    def take(self, indices: Sequence[int] | np.ndarray) -> VolumeTable:
        """The volumes at ``indices`` (kept in storage order) with their boxes."""
        import pyarrow as pa

        idx = np.unique(np.asarray(indices, dtype=np.int64))
        if idx.size and (idx[0] < 0 or idx[-1] >= len(self)):
            raise InvalidInput(f"volume indices out of range 0..{len(self) - 1}")
        vols = self.arrow.take(pa.array(idx)).drop_columns(["volume_index"])
        vols = vols.append_column("volume_index", pa.array(np.arange(idx.size)))
        new_of = np.full(len(self), -1, dtype=np.int64)
        new_of[idx] = np.arange(idx.size)
        keep = np.nonzero(new_of[self.box_volume] >= 0)[0]
        boxes = self._boxes_arrow.take(pa.array(keep))
        boxes = boxes.set_column(
            boxes.column_names.index("volume_index"),
            "volume_index",
            pa.array(new_of[self.box_volume[keep]]),
        )
        counts = PlanCounts(
            volumes=int(idx.size),
            boxes=int(keep.size),
            empty_boxes=self.counts.empty_boxes,
            boxes_without_volume=self.counts.boxes_without_volume,
            missing_sites=dict(self.counts.missing_sites),
        )
        return VolumeTable(vols, boxes, versions=self.versions, counts=counts)

    def subset(self, name: str, split: Split | None = None) -> VolumeTable:
        """The volumes of one split (``split`` checks the name; default: the names present)."""
        names = self.splits
        known = split.names if split is not None else tuple(sorted(set(names.tolist())))
        if name not in known:
            raise InvalidInput(f"unknown split {name!r}; choose one of {list(known)}")
        return self.take(np.nonzero(names == name)[0])

    def fingerprint(self) -> str:
        """A digest of which volumes are in the plan (site, series, volume, shape), in order.

        A stream's state carries it, so a resume on a different plan is refused.
        """
        h = hashlib.sha256()
        for col in ("site", "series_id"):
            for chunk in self.arrow[col].chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(buf.to_pybytes())
        h.update(np.ascontiguousarray(self.arrow["volume"].to_numpy()).astype(np.int64).tobytes())
        h.update(self.shapes.tobytes())
        return h.hexdigest()[:32]


def _empty_boxes() -> Any:
    import pyarrow as pa

    text = {"site", "series_id", "label_image", "label_name"}
    return pa.table(
        {c: pa.array([], pa.string() if c in text else pa.int64()) for c in _BOX_COLUMNS}
    )


def _box_schema(boxes: Any, keys: Any) -> Any:
    """The boxes' schema with the join keys typed as in the volumes (int widths differ)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(f.name, keys.field(f.name).type if f.name in keys.names else f.type)
            for f in boxes
        ]
    )


def _columns(table: Any, names: Sequence[str], dtype: Any) -> np.ndarray:
    """Columns of a pyarrow Table as one ``(rows, len(names))`` numpy array (nulls: 0)."""
    out = np.zeros((table.num_rows, len(names)), dtype=dtype)
    for i, name in enumerate(names):
        col = table[name]
        if col.null_count:
            import pyarrow.compute as pc

            col = pc.fill_null(col, 0)
        out[:, i] = col.to_numpy()
    return out


def _check_purpose(atlas: Atlas) -> None:
    if atlas.purpose != TRAINING_PURPOSE:
        raise InvalidInput(
            f"streams read for the purpose {TRAINING_PURPOSE!r}, but this catalog was opened "
            f"for {atlas.purpose!r}: open it with open_atlas(..., purpose={TRAINING_PURPOSE!r})"
        )


def _concat(parts: Mapping[str, Any]) -> Any:
    import pyarrow as pa

    tables = [t for t in parts.values() if t is not None and t.num_rows]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def plan_epochs(
    source: Atlas | Query,
    where: str | None = None,
    *,
    release: str | None = None,
    split: Split | None = None,
    subset: str | None = None,
) -> VolumeTable:
    """The :class:`VolumeTable` of a catalog query, from aggregated series and annotations.

    Parameters
    ----------
    source : Atlas or Query
        A catalog opened with ``purpose="ai-training"``, or a query on one of its tables
        (``atlas.images.where(...)``: the volumes with at least one matching row).
    where : str, optional
        A filter on the series table (the catalog's filter syntax).
    release : str, optional
        Plan on the index versions pinned by this release (sites outside it are left out).
    split : Split, optional
        How subjects are assigned to splits (default: 80/10/10 by subject).
    subset : str, optional
        Keep only this split's volumes (e.g. ``"train"``).

    Raises
    ------
    InvalidInput
        The catalog's purpose is not ``ai-training``, the filter is malformed, or ``subset``
        is not a split name.
    NotFound
        ``release`` does not exist at any site.
    """
    from atlas.index.catalog import Atlas, Query

    if isinstance(source, Query):
        atlas, query = source.atlas, source
    elif isinstance(source, Atlas):
        atlas, query = source, None
    else:
        raise InvalidInput(f"plan from an Atlas or a catalog Query, got {type(source).__name__}")
    _check_purpose(atlas)
    split = split or Split()
    if subset is not None:
        split.check_name(subset)
    if release is not None:
        atlas, query = _pinned(atlas, query, release)
    series = atlas.series
    if query is not None and query.table == "series":
        series = Query(atlas, "series", filters=query.filters)
    if where:
        series = series.where(where)
    # the aggregations are independent: run them at once (each fans out over the sites)
    with ThreadPoolExecutor(max_workers=3) as pool:
        vols_f = pool.submit(series.aggregate, ", ".join(_VOLUME_COLUMNS))
        notes_f = pool.submit(atlas.annotations.aggregate, _BOX_SELECT, _BOX_GROUP)
        keys_f = (
            pool.submit(query.aggregate, "DISTINCT site, series_id, volume")
            if query is not None and query.table != "series"
            else None
        )
        vols, notes = vols_f.result(), notes_f.result()
        keys = keys_f.result() if keys_f is not None else None
    missing = {**vols.missing_sites, **notes.missing_sites}
    volumes = _concat(vols.value)
    if keys is not None:
        missing.update(keys.missing_sites)
        volumes = _semi_join(volumes, _concat(keys.value))
    if volumes is None:
        from atlas.records import schemas

        volumes = _empty_volumes(schemas()["series"])
    table = VolumeTable.from_arrow(
        volumes,
        _concat(notes.value),
        split=split,
        versions=atlas.versions,
        missing_sites=missing,
    )
    return table.subset(subset, split) if subset is not None else table


def _empty_volumes(schema: Any) -> Any:
    return schema.empty_table().select(list(_VOLUME_COLUMNS))


def _semi_join(volumes: Any, keys: Any) -> Any:
    import duckdb

    if volumes is None or keys is None:
        return None
    con = duckdb.connect()
    try:
        con.register("vols", volumes)
        con.register("keys", keys)
        return con.sql(
            "SELECT * FROM vols SEMI JOIN keys USING (site, series_id, volume)"
        ).to_arrow_table()
    finally:
        con.close()


def _pinned(atlas: Atlas, query: Query | None, release: str) -> tuple[Atlas, Query | None]:
    """The catalog reopened on the versions ``release`` pins (and the query moved onto it)."""
    from dataclasses import replace

    from atlas.index.catalog import open_atlas
    from atlas.index.release import load_release

    stores = {name: site.store for name, site in atlas.sites.items()}
    pinned = load_release(stores, release)
    pinned_atlas = open_atlas(
        {name: stores[name] for name in pinned},
        purpose=atlas.purpose,
        versions=pinned,
        strict=atlas.strict,
    )
    pinned_atlas.missing.update(atlas.missing)
    return pinned_atlas, (replace(query, atlas=pinned_atlas) if query is not None else None)
