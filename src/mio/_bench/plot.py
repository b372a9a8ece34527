# ruff: noqa: RUF001 - the target label uses the multiplication sign
"""PNG plot of a benchmark run (matplotlib, Agg backend): one panel per workload, bars per
system and event loop at the median, whiskers from min to max over rounds; throughput panels
on a log scale (the systems differ by orders of magnitude), the W4 ratio on a linear one with
its target line labelled. Value labels sit above the whiskers, with headroom for them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .summary import Index
from .systems import SYSTEMS

PANELS = (
    ("W1", "MBps", "W1 bulk: MB/s (higher is better)"),
    ("W2", "rps", "W2 rpc: requests/s (higher is better)"),
    ("W3", "rtps", "W3 1000 streams: round trips/s (higher is better)"),
    ("W4", "p99_ratio", "W4 fairness: p99 with bulk ÷ p99 alone (lower is better)"),
)
COLORS = {"asyncio": "#4c72b0", "uvloop": "#dd8452"}
#: the W4 target (p99 with bulk ÷ p99 alone), drawn as a labelled line
W4_TARGET = 1.5


def plot(meta: dict[str, Any], records: Sequence[dict[str, Any]], path: Path) -> str | None:
    """Write the plot to ``path``; returns None, or why there is no plot."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install 'mio-mux[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = Index(records)
    panels = [p for p in PANELS if any(r["workload"] == p[0] for r in index.records)]
    if not panels:
        return "no results to plot"
    loops = [lp for lp in ("asyncio", "uvloop") if any(r["loop"] == lp for r in index.records)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.1 * len(panels)), squeeze=False)
    width = 0.8 / max(len(loops), 1)
    for ax, (w, key, title) in zip(axes[:, 0], panels, strict=True):
        systems = [
            s
            for s in SYSTEMS
            if any(r["workload"] == w and r["system"] == s for r in index.records)
        ]
        tops: list[float] = []
        for j, loop in enumerate(loops):
            xs, meds, lo, hi = [], [], [], []
            for i, s in enumerate(systems):
                vals = index.values(w, s, loop, key)
                if not vals:
                    continue
                vals = sorted(vals)
                med = (
                    vals[len(vals) // 2]
                    if len(vals) % 2
                    else sum(vals[len(vals) // 2 - 1 : len(vals) // 2 + 1]) / 2
                )
                xs.append(i + (j - (len(loops) - 1) / 2) * width)
                meds.append(med)
                lo.append(med - vals[0])
                hi.append(vals[-1] - med)
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=loop, color=COLORS.get(loop))
            for x, m, h in zip(xs, meds, hi, strict=True):
                top = m + h  # above the whisker, not on it
                tops.append(top)
                ax.annotate(
                    f"{m:,.0f}" if m >= 10 else f"{m:.2f}",
                    (x, top),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([SYSTEMS[s].label for s in systems])
        ax.set_title(title, fontsize=10)
        highest = max(tops, default=1.0)
        if key == "p99_ratio":
            ax.axhline(
                W4_TARGET,
                color="red",
                linestyle="--",
                linewidth=1,
                label=f"target ≤ {W4_TARGET:g}×",
            )
            ax.set_ylim(0, max(highest, W4_TARGET) * 1.25)
        else:
            ax.set_yscale("log")  # the systems differ by orders of magnitude
            lowest = min((b.get_height() for b in ax.patches if b.get_height() > 0), default=1)
            ax.set_ylim(lowest / 3, highest * 4)  # room for the labels above the whiskers
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    preset = meta.get("preset", "?")
    fig.suptitle(
        f"mio end-to-end benchmark, run {meta.get('run_id', '?')} (preset {preset})"
        + ("; scaled-down totals" if preset != "full" else ""),
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
