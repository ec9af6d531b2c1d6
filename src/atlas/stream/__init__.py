"""Training streams: plan what to read from the catalog, then stream it as tensors.

The planning half (no torch, no pixel read): :func:`plan_epochs` turns a catalog query into a
:class:`VolumeTable` (volumes and each label's 3-D box, from aggregated index tables), split by
subject (:class:`Split`); a sampler (:class:`SliceSampler`, :class:`PatchSampler`,
:class:`BalancedSampler`, :class:`GridSampler`) says what each sample reads; an
:class:`EpochPlan` puts the samples of one epoch in a shuffled order (:class:`EpochOrder`) that
:func:`shard_for` splits across ranks and DataLoader workers; :class:`StreamState` is the small
state that resumes it exactly.

Imported lazily: ``import atlas.stream`` loads neither numpy, pyarrow nor torch; torch is
imported only when the dataset classes are touched.
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {
    "BalancedSampler": "atlas.stream.samplers",
    "EpochOrder": "atlas.stream.order",
    "EpochPlan": "atlas.stream.epoch",
    "GridSampler": "atlas.stream.samplers",
    "LabelBox": "atlas.stream.table",
    "PatchSampler": "atlas.stream.samplers",
    "SamplePlan": "atlas.stream.spec",
    "SampleSpec": "atlas.stream.spec",
    "Sampler": "atlas.stream.samplers",
    "SliceSampler": "atlas.stream.samplers",
    "Split": "atlas.stream.splits",
    "StreamState": "atlas.stream.state",
    "Volume": "atlas.stream.table",
    "VolumeTable": "atlas.stream.table",
    "plan_epochs": "atlas.stream.table",
    "sampler_from_params": "atlas.stream.samplers",
    "shard_for": "atlas.stream.partition",
    "spearman": "atlas.stream.order",
    # the dataset half (torch is imported only when one of these is touched)
    "AtlasDataset": "atlas.stream.dataset",
    "EpochReport": "atlas.stream.report",
    "GridAggregator": "atlas.stream.aggregate",
    "SiteReport": "atlas.stream.report",
    "StreamLoader": "atlas.stream.loader",
    "collate_samples": "atlas.stream.collate",
    "to_device": "atlas.stream.collate",
    "worker_context": "atlas.stream.loader",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.stream", _EXPORTS, globals())
