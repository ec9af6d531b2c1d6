"""A request value as a member of one of the server's vocabularies (an Enum), or a clear error."""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from atlas.errors import InvalidInput

__all__ = ["parse_choice"]

E = TypeVar("E", bound=Enum)


def parse_choice(kind: type[E], value: Any, what: str, *, fold_case: bool = False) -> E:
    """``value`` as a member of ``kind``; :class:`InvalidInput` naming ``what`` and the choices.

    Parameters
    ----------
    kind
        The vocabulary.
    value
        A member, or its value (a string is lower-cased first with ``fold_case``).
    what
        The parameter's name in the message (``"plane"``, ``"tile format"``).
    """
    if isinstance(value, kind):
        return value
    try:
        return kind(value.lower() if fold_case and isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise InvalidInput(f"{what} must be one of {choices}, got {value!r:.40}") from None
