"""The state of a stream: a few numbers that restore its exact continuation.

An epoch's order and every sample in it follow from the plan, the sampler, the shuffle and
``(seed, epoch)``; what a run has done is how many global positions it has *consumed* (a
prefix of the global order, see :mod:`atlas.stream.partition`). So a checkpoint needs no
sample list and no random state: ``StreamState(epoch, seed, consumed, sampler params, order
params, plan fingerprint)``, a dict of a few hundred bytes. A resumed run — with the same or
another number of ranks and workers — partitions the positions from ``consumed`` on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from atlas.errors import InvalidInput
from atlas.stream.order import EpochOrder
from atlas.stream.samplers import sampler_from_params

__all__ = ["STATE_FORMAT", "StreamState"]

STATE_FORMAT = 1


def _nonneg(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"stream state {what} must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class StreamState:
    """Where a stream stands: epoch, seed, samples consumed, and how it samples.

    Parameters
    ----------
    epoch, seed : int
        The epoch being read and the stream's seed.
    consumed : int
        Global positions of this epoch already delivered (all ranks together).
    sampler : dict
        The sampler's :meth:`params` (rebuilt by :meth:`make_sampler`).
    order : dict
        The :class:`EpochOrder`'s parameters.
    plan : str
        :meth:`VolumeTable.fingerprint` of the plan; a resume on another plan is refused.
    """

    epoch: int = 0
    seed: int = 0
    consumed: int = 0
    sampler: Mapping[str, Any] = field(default_factory=dict)
    order: Mapping[str, Any] = field(default_factory=lambda: EpochOrder().params())
    plan: str = ""

    def __post_init__(self) -> None:
        _nonneg(self.epoch, "epoch")
        _nonneg(self.seed, "seed")
        _nonneg(self.consumed, "consumed")
        if not isinstance(self.plan, str):
            raise InvalidInput(f"stream state plan must be a string, got {self.plan!r}")
        for name in ("sampler", "order"):
            if not isinstance(getattr(self, name), Mapping):
                raise InvalidInput(f"stream state {name} must be a mapping")
        object.__setattr__(self, "sampler", dict(self.sampler))
        object.__setattr__(self, "order", dict(self.order))

    def state_dict(self) -> dict[str, Any]:
        """A small JSON-able dict (what a checkpoint stores)."""
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "seed": self.seed,
            "consumed": self.consumed,
            "sampler": dict(self.sampler),
            "order": dict(self.order),
            "plan": self.plan,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> StreamState:
        """Restore from :meth:`state_dict`; InvalidInput names what is malformed."""
        if not isinstance(state, Mapping):
            raise InvalidInput(f"a stream state must be a mapping, got {type(state).__name__}")
        if state.get("format") != STATE_FORMAT:
            raise InvalidInput(
                f"unsupported stream state format {state.get('format')!r} "
                f"(this version reads {STATE_FORMAT})"
            )
        known = {"format", "epoch", "seed", "consumed", "sampler", "order", "plan"}
        unknown = sorted(set(state) - known)
        if unknown:
            raise InvalidInput(f"unknown stream state keys {unknown}")
        return cls(
            epoch=state.get("epoch", 0),
            seed=state.get("seed", 0),
            consumed=state.get("consumed", 0),
            sampler=state.get("sampler", {}),
            order=state.get("order", EpochOrder().params()),
            plan=state.get("plan", ""),
        )

    def make_sampler(self) -> Any:
        """The sampler these parameters describe."""
        return sampler_from_params(self.sampler)

    def make_order(self) -> EpochOrder:
        """The :class:`EpochOrder` these parameters describe."""
        try:
            return EpochOrder(**self.order)
        except TypeError as exc:
            raise InvalidInput(f"bad shuffle parameters in stream state: {exc}") from None

    def check_plan(self, fingerprint: str) -> None:
        """Refuse to resume on a plan other than the one this state was taken on."""
        if self.plan and fingerprint != self.plan:
            raise InvalidInput(
                "this stream state was taken on another plan (other volumes, release or "
                f"filter): fingerprint {self.plan} != {fingerprint}; plan the same query "
                "(a release pins it) to resume"
            )

    def advanced(self, samples: int) -> StreamState:
        """The state after ``samples`` more global positions were consumed."""
        return replace(self, consumed=self.consumed + _nonneg(samples, "advance"))

    def next_epoch(self) -> StreamState:
        """The state at the start of the following epoch."""
        return replace(self, epoch=self.epoch + 1, consumed=0)
