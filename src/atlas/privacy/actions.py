"""The actions of PS3.15 Table E.1-1, and how a combined action is resolved for one value.

``X`` remove; ``Z`` zero-length value (empty sequence); ``D`` dummy value of the VR (a UID is
mapped, a sequence becomes one empty item, dates are fixed dummies unless shifted); ``U`` mapped
UID; ``K`` keep; ``C`` clean (dates shifted, text cleaned, code sequences kept with their text
cleaned; a value that cannot be cleaned gets the basic action instead).

Combined actions take the least information the table allows (:func:`resolve`): ``X/Z``,
``X/D`` and ``X/Z/D`` remove; ``Z/D`` gives a zero-length value (a dummy for dates, since Content
Date/Time are Type 1 in some IODs); ``X/Z/U*`` keeps a sequence and maps the UIDs in it
(Source/Referenced Image Sequence carry the references that labels need), is ``U`` on a UID and
removes anything else. Actions apply in every item of every sequence.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TEMPORAL_VRS", "Action", "resolve"]

#: value representations of dates and times
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})


class Action(StrEnum):
    """An action code of Table E.1-1 (its value is the code as the standard writes it)."""

    REMOVE = "X"
    ZERO = "Z"
    DUMMY = "D"
    UID = "U"
    KEEP = "K"
    CLEAN = "C"
    REMOVE_OR_ZERO = "X/Z"
    REMOVE_OR_DUMMY = "X/D"
    REMOVE_OR_ZERO_OR_DUMMY = "X/Z/D"
    ZERO_OR_DUMMY = "Z/D"
    REMOVE_OR_ZERO_OR_UID = "X/Z/U*"


def resolve(basic: Action | str, vr: str) -> Action:
    """The single action (X, Z, D, U or K) a possibly combined basic action means for ``vr``.

    ``K`` is returned only for a sequence under ``X/Z/U*``: it is kept and its items are
    de-identified. An action this module does not know resolves to ``X`` (the safest).
    """
    try:
        action = Action(basic)
    except ValueError:
        return Action.REMOVE
    if action in (Action.REMOVE, Action.ZERO, Action.DUMMY, Action.UID):
        return action
    if action in (Action.REMOVE_OR_ZERO, Action.REMOVE_OR_DUMMY, Action.REMOVE_OR_ZERO_OR_DUMMY):
        return Action.REMOVE
    if action is Action.ZERO_OR_DUMMY:
        return Action.DUMMY if vr in TEMPORAL_VRS else Action.ZERO
    if action is Action.REMOVE_OR_ZERO_OR_UID:
        if vr == "SQ":
            return Action.KEEP
        return Action.UID if vr == "UI" else Action.REMOVE
    return Action.REMOVE  # K or C as a basic action: not in the table's basic column
