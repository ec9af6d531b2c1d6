"""The functional-group macros of enhanced (multi-frame) DICOM objects, read one way.

An enhanced object describes its frames with functional-group macros (*Plane Position*,
*Plane Orientation*, *Pixel Measures*, *Pixel Value Transformation*, *Segment
Identification*, ...). Each macro sits in the *Shared Functional Groups Sequence* (one item
that applies to every frame) or in the frame's item of the *Per-Frame Functional Groups
Sequence* (PS3.3 C.7.6.16: a macro is in one of the two, not both).

:func:`functional_group_items` is the one lookup every reader uses (and
:func:`functional_group_item` its first item). Its precedence: the
frame's own item overrides the shared item. A conformant object never has a macro in both
places; a non-conformant one that does describes *this* frame in its per-frame item, so that
item wins (as highdicom applies value transformations: the per-frame item is read after, and
replaces, the shared one). A per-frame item that lacks the macro, or holds it empty, falls
back to the shared item.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

__all__ = [
    "PER_FRAME",
    "SHARED",
    "functional_group_item",
    "functional_group_items",
    "is_enhanced",
]

#: keyword of the Per-Frame Functional Groups Sequence (5200,9230)
PER_FRAME = "PerFrameFunctionalGroupsSequence"
#: keyword of the Shared Functional Groups Sequence (5200,9229)
SHARED = "SharedFunctionalGroupsSequence"


def is_enhanced(ds: Dataset) -> bool:
    """Whether ``ds`` carries functional groups (shared or per-frame).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The DICOM object.

    Returns
    -------
    bool
        ``True`` when either functional-groups sequence is present.
    """
    return PER_FRAME in ds or SHARED in ds


def _items(groups: Any, sequence: str) -> list[Dataset]:
    if groups is None:
        return []
    inner = groups.get(sequence)
    return list(inner) if inner else []


def functional_group_items(ds: Dataset, sequence: str, frame: int = 0) -> list[Dataset]:
    """The items of functional-group macro ``sequence`` that apply to ``frame``.

    Most macros hold one item; some (e.g. *Derivation Image*) may hold several.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An enhanced DICOM object (a highdicom object, which is a Dataset, works too).
    sequence : str
        Keyword of the macro's sequence, e.g. ``"DerivationImageSequence"``.
    frame : int, optional
        0-based frame index (default the first frame).

    Returns
    -------
    list of pydicom.dataset.Dataset
        The items of ``sequence`` in the frame's per-frame functional groups when it is there
        and not empty, else its items in the shared functional groups, else an empty list. A
        frame index beyond the per-frame items reads the shared item only.
    """
    per = ds.get(PER_FRAME)
    if per is not None and 0 <= frame < len(per):
        items = _items(per[frame], sequence)
        if items:
            return items
    shared = ds.get(SHARED)
    return _items(shared[0], sequence) if shared else []


def functional_group_item(ds: Dataset, sequence: str, frame: int = 0) -> Dataset | None:
    """The item of functional-group macro ``sequence`` that applies to ``frame``.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        An enhanced DICOM object (a highdicom object, which is a Dataset, works too).
    sequence : str
        Keyword of the macro's sequence, e.g. ``"PlanePositionSequence"``.
    frame : int, optional
        0-based frame index (default the first frame).

    Returns
    -------
    pydicom.dataset.Dataset or None
        The first item of :func:`functional_group_items`: the first item of ``sequence`` in
        the frame's per-frame functional groups when it is there and not empty, else the first
        item in the shared functional groups, else ``None``. A frame index beyond the
        per-frame items reads the shared item only.
    """
    items = functional_group_items(ds, sequence, frame)
    return items[0] if items else None
