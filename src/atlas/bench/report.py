"""Shared pieces of every Atlas benchmark: timing, machine facts and the report files.

A benchmark times its candidates *and* its baselines in the same process with :func:`time_call`,
builds one dict per row, prints them with :func:`print_table` and saves them with
:func:`write_report`, which writes ``<name>.json`` (rows, meta and :func:`machine_facts`),
``<name>.md`` (a Markdown table) and, given a :class:`PlotSpec`, ``<name>.png`` (a bar chart).

Nothing here runs at import time; matplotlib and rich are imported when used.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from atlas.errors import InvalidInput

__all__ = [
    "PlotSpec",
    "Timing",
    "format_value",
    "machine_facts",
    "print_table",
    "time_call",
    "write_report",
]


# --------------------------------------------------------------------------------------------
# timing


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of repeated calls, in seconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median sample (the number to report)."""
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        """Fastest sample."""
        return min(self.samples)

    @property
    def max(self) -> float:
        """Slowest sample."""
        return max(self.samples)

    @property
    def spread(self) -> float:
        """``(max - min) / median``: how noisy the samples are (0 for a single sample)."""
        width = self.max - self.min
        if width == 0:
            return 0.0
        return width / self.median if self.median > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: samples and statistics, in seconds."""
        return {
            "samples_s": list(self.samples),
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "spread": self.spread,
        }


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed (perf_counter).

    Raises
    ------
    InvalidInput
        ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1:
        raise InvalidInput(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise InvalidInput(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(samples)


# --------------------------------------------------------------------------------------------
# machine facts


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unsupported platform
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare runs: CPUs, memory, platform and library versions.

    Keys: ``cpu_count`` (logical), ``cpu_count_usable`` (this process's affinity),
    ``cpu_model``, ``memory_gib``, ``platform``, ``machine``, ``python``, ``numpy``, ``zarr``
    (``None`` where unknown). No host names or user names.
    """
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    memory = _memory_bytes()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "numpy": _version("numpy"),
        "zarr": _version("zarr"),
    }


# --------------------------------------------------------------------------------------------
# formatting


def format_value(value: object) -> str:
    """A table cell: floats with 3-4 significant digits, booleans as yes/no, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        magnitude = abs(value)
        if magnitude == 0:
            return "0"
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        if magnitude >= 0.001:
            return f"{value:.3f}"
        return f"{value:.2e}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "x".join(str(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, non-finite floats as null, paths as str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Timing):
        return _jsonable(value.to_dict())
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _jsonable(item())
    return str(value)


# --------------------------------------------------------------------------------------------
# output


@dataclass(frozen=True)
class PlotSpec:
    """A grouped bar chart: one group per row (labelled by column ``x``), one bar per ``y``.

    Attributes
    ----------
    x
        column whose values label the groups.
    y
        numeric columns, one bar (series) each.
    ylabel
        the value axis label.
    labels
        legend names for the ``y`` columns (default: the column names).
    log
        logarithmic value axis (for values spanning decades, e.g. times).
    title
        chart title (default: the report title).
    """

    x: str
    y: Sequence[str]
    ylabel: str
    labels: Mapping[str, str] | None = None
    log: bool = False
    title: str | None = None


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |"]
    numeric = [
        all(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows)
        and bool(rows)
        for c in columns
    ]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    for row in rows:
        cells = [format_value(row.get(c)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finite_or_nan(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def _plot(path: Path, rows: Sequence[Mapping[str, Any]], spec: PlotSpec, title: str) -> None:
    # The Agg canvas is chosen here, per figure, so no global matplotlib backend is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [format_value(r.get(spec.x)) for r in rows]
    n_series = max(len(spec.y), 1)
    bar = 0.8 / n_series
    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) * n_series / 2 + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, column in enumerate(spec.y):
        values = [_finite_or_nan(r.get(column)) for r in rows]
        xs = [g + (i - (n_series - 1) / 2) * bar for g in range(len(rows))]
        label = (spec.labels or {}).get(column, column)
        ax.bar(xs, values, width=bar, label=label)
    ax.set_xticks(range(len(rows)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(spec.ylabel)
    ax.set_title(spec.title or title)
    if spec.log:
        ax.set_yscale("log")
    if len(spec.y) > 1:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)


def write_report(
    out_dir: Path,
    name: str,
    rows: list[dict[str, Any]],
    columns: list[str],
    title: str,
    meta: dict[str, Any],
    plot: PlotSpec | None = None,
    extra_plots: Mapping[str, PlotSpec] | None = None,
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and (with ``plot``) ``<name>.png`` into ``out_dir``.

    Parameters
    ----------
    out_dir
        created if missing.
    name
        file stem.
    rows
        one dict per measurement; the JSON keeps every key, the table shows ``columns``.
    columns
        the table columns, in order.
    title
        heading of the Markdown file and the chart.
    meta
        benchmark parameters (sizes, repeats, ...) stored in the JSON and listed under
        the table.
    plot
        the bar chart to draw, or ``None`` for no PNG.
    extra_plots
        more charts by short name, each written as ``<name>-<short name>.png``.

    Returns
    -------
    dict[str, Path]
        ``{"json": ..., "md": ..., "png": ...}`` (``png`` only when plotted), and
        ``"png-<short name>"`` for each extra chart.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md"}

    document = {
        "name": name,
        "title": title,
        "created": created,
        "columns": columns,
        "rows": rows,
        "meta": meta,
        "machine": facts,
    }
    paths["json"].write_text(
        json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )

    md = _markdown(rows, columns, title)
    md += "\n" + "\n".join(f"- {k}: {format_value(v)}" for k, v in meta.items())
    cpu = facts["cpu_model"] or "unknown CPU"
    md += (
        f"\n\nMachine: {cpu}, {facts['cpu_count']} CPUs, {facts['memory_gib']} GiB; "
        f"{facts['platform']}; Python {facts['python']}, numpy {facts['numpy']}, "
        f"zarr {facts['zarr']}. Created {created}.\n"
    )
    paths["md"].write_text(md, encoding="utf-8")

    if plot is not None:
        paths["png"] = out_dir / f"{name}.png"
        _plot(paths["png"], rows, plot, title)
    for key, spec in (extra_plots or {}).items():
        paths[f"png-{key}"] = out_dir / f"{name}-{key}.png"
        _plot(paths[f"png-{key}"], rows, spec, title)
    return paths


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str) -> None:
    """Print ``rows`` as a table on the terminal (rich), numbers right-aligned."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        numeric = any(
            isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows
        )
        table.add_column(c, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(format_value(row.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 160))
    console.print(table)
