"""Benchmarks, each with its baselines in the same run (``atlas bench ...``).

One module per benchmark, each with a ``run`` function that prints a table and writes
JSON, Markdown and PNG reports: :mod:`~atlas.bench.kernels` (native kernels vs numpy),
:mod:`~atlas.bench.write` (storage layouts), :mod:`~atlas.bench.ingest` (ingest vs a naive
loop), :mod:`~atlas.bench.index` (the sharded index at atlas scale), :mod:`~atlas.bench.stream`
(training streams vs naive zarr, MONAI, TorchIO and the tensorstore/numcodecs ceilings, with
its ``stream_*`` helpers);
:mod:`~atlas.bench.report` holds the shared timing and report code.
"""

__all__ = ["index", "ingest", "kernels", "report", "stream", "write"]
