"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed).

matplotlib is a benchmark-only dependency (the ``bench`` extra). Without it every function
here draws nothing, appends a note saying so, and returns no path: the tables and the JSON do
not depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bars", "lateness_cdfs", "lateness_histograms"]

Getter = Callable[[dict[str, Any]], float | None]


def _pyplot(notes: list[str]) -> Any | None:
    try:
        import matplotlib
    except ImportError:
        note = "matplotlib is not installed (pip install '.[bench]'): no plots drawn"
        if note not in notes:
            notes.append(note)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars(
    path: Path,
    title: str,
    results: Mapping[str, dict[str, Any]],
    metrics: Sequence[tuple[str, Getter]],
    notes: list[str],
) -> list[str]:
    """One bar chart per metric (log scale), one bar per variant."""
    plt = _pyplot(notes)
    if plt is None or not results:
        return []
    names = list(results)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, (label, get) in zip(axes[0], metrics, strict=True):
        values = [get(results[n]) for n in names]
        heights = [v if v is not None and v > 0 and math.isfinite(v) else 0 for v in values]
        colors = ["tab:blue" if n.startswith("aiotimer") else "tab:gray" for n in names]
        bars = ax.bar(range(len(names)), heights, color=colors)
        ax.bar_label(bars, labels=[f"{v:.3g}" if v else "-" for v in heights], fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        positive = [v for v in heights if v > 0]
        if positive:
            ax.set_yscale("log")
            ax.set_ylim(min(positive) / 4, max(positive) * 3)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]


def lateness_cdfs(
    path: Path,
    title: str,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    notes: list[str],
) -> list[str]:
    """A grid of panels (one per loop and load), each the lateness CDF (µs) of every
    implementation, on a symmetric-log axis so early fires (negative) show."""
    plt = _pyplot(notes)
    if plt is None or not panels:
        return []
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 4 * rows), squeeze=False)
    for ax, (panel, curves) in zip(axes.flat, panels.items(), strict=False):
        for impl, values in curves.items():
            if values:
                ys = [i / (len(values) - 1) if len(values) > 1 else 1.0 for i in range(len(values))]
                ax.plot(values, ys, label=impl, drawstyle="steps-post")
        ax.set_xscale("symlog", linthresh=10)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("lateness (µs; < 0 = early)")
        ax.set_ylabel("fraction of fires")
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]


def lateness_histograms(
    path: Path,
    title: str,
    curves: Mapping[str, Sequence[float]],
    notes: list[str],
) -> list[str]:
    """Overlaid lateness histograms (µs) of several implementations, one panel, log counts."""
    plt = _pyplot(notes)
    if plt is None or not curves:
        return []
    finite = [v for values in curves.values() for v in values]
    if not finite:
        return []
    low = min(min(finite), 0.0)
    high = max(finite)
    # Clip the long tail so the body stays readable; the tables give the maxima.
    top = sorted(finite)[int(0.999 * (len(finite) - 1))]
    high = min(high, max(top * 1.2, 10.0))
    edges = [low + (high - low) * i / 120 for i in range(121)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for impl, values in curves.items():
        if values:
            ax.hist([min(v, high) for v in values], bins=edges, histtype="step", label=impl)
    ax.set_yscale("log")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("lateness (µs; < 0 = early; tail clipped at the right edge)")
    ax.set_ylabel("fires")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]
