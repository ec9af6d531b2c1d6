"""Train/validation/test splits by subject: a stable hash of the pseudonymous subject id.

A subject's split depends only on its id, the salt and the fractions — not on which other
subjects exist, which site is reachable today or in which order rows arrive — so every volume
of one subject lands in the same split, and a subject added later never moves anyone else.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atlas.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_FRACTIONS", "Split"]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
_TOLERANCE = 1e-9


def _unit(salt: str, subject_id: str) -> float:
    """A uniform number in ``[0, 1)`` from 64 bits of ``blake2b(salt NUL subject_id)``."""
    data = salt.encode() + b"\x00" + subject_id.encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"atlas-split").digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


@dataclass(frozen=True)
class Split:
    """Fractions of subjects per split name, assigned by a keyed hash of the subject id.

    Parameters
    ----------
    fractions : mapping of str to float
        Split name to fraction of subjects; each >= 0, summing to 1. The order of the mapping
        is the order of the intervals of ``[0, 1)`` (keep it fixed for stable splits).
    salt : str
        Key of the hash: another salt gives another, independent assignment.

    Raises
    ------
    InvalidInput
        A fraction is negative or not a number, the fractions do not sum to 1, a name is
        empty, or the salt is empty.
    """

    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    salt: str = "atlas"

    def __post_init__(self) -> None:
        if not isinstance(self.fractions, Mapping) or not self.fractions:
            raise InvalidInput(
                f"split fractions must be a non-empty mapping, got {self.fractions!r}"
            )
        clean: dict[str, float] = {}
        for name, value in self.fractions.items():
            if not isinstance(name, str) or not name:
                raise InvalidInput(f"split names must be non-empty strings, got {name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"split fraction of {name!r} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InvalidInput(f"split fraction of {name!r} must be >= 0, got {value!r}")
            clean[name] = float(value)
        total = sum(clean.values())
        if abs(total - 1.0) > _TOLERANCE:
            raise InvalidInput(
                f"split fractions must sum to 1, got {total:g} for {clean} "
                "(e.g. {'train': 0.8, 'validation': 0.1, 'test': 0.1})"
            )
        if not isinstance(self.salt, str) or not self.salt:
            raise InvalidInput(f"split salt must be a non-empty string, got {self.salt!r}")
        object.__setattr__(self, "fractions", clean)

    @property
    def names(self) -> tuple[str, ...]:
        """The split names, in interval order."""
        return tuple(self.fractions)

    def check_name(self, name: str) -> str:
        """``name`` if it is one of :attr:`names`, else InvalidInput naming it."""
        if name not in self.fractions:
            raise InvalidInput(f"unknown split {name!r}; this split has {list(self.names)}")
        return name

    def of(self, subject_id: str) -> str:
        """The split of one pseudonymous subject id."""
        return self.names[int(self._codes([_unit(self.salt, subject_id)])[0])]

    def _codes(self, units: Sequence[float]) -> np.ndarray:
        """Split index of each unit number: the interval of ``[0, 1)`` it falls in."""
        import numpy as np

        edges = np.cumsum(list(self.fractions.values()))
        codes = np.searchsorted(edges, np.asarray(units, dtype=np.float64), side="right")
        # rounding can leave a number above the last edge: the last split with a fraction
        last = max(i for i, f in enumerate(self.fractions.values()) if f > 0)
        return np.minimum(codes, last)

    def codes(self, subject_ids: Sequence[str]) -> np.ndarray:
        """Index into :attr:`names` of each subject id's split (vectorised :meth:`of`)."""
        return self._codes([_unit(self.salt, s) for s in subject_ids])

    def assign(self, subject_ids: Iterable[str]) -> dict[str, str]:
        """Subject id → split name for every distinct id given."""
        unique = list(dict.fromkeys(subject_ids))
        names = self.names
        return {s: names[int(c)] for s, c in zip(unique, self.codes(unique), strict=True)}

    def params(self) -> dict[str, Any]:
        """JSON-able parameters (for a stream's state)."""
        return {"fractions": dict(self.fractions), "salt": self.salt}
