"""Pictures for lesson 09 (sharded data parallelism), drawn from measured values.

* :func:`plot_memory`: stacked bars of where each configuration's memory goes, per rank;
* :func:`plot_step_timeline`: one training step, compute above and collectives below, on one time axis.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["plot_memory", "plot_step_timeline"]

_COLORS = {"parameters": "tab:blue", "gradients": "tab:orange", "optimizer state": "tab:green",
           "activations": "tab:gray",
           "gathered parameters (peak, after forward)": "lightsteelblue", "all-gather": "tab:purple",
           "reduce-scatter": "tab:red",
           "all-reduce": "tab:brown", "forward": "tab:cyan", "backward": "tab:olive", "optimizer": "tab:green"}


def plot_memory(bars: Mapping[str, Mapping[str, float]], ylabel: str = "MB per rank", title: str = "",
                scale: float = 2**20) -> Figure:
    """One stacked bar per label; each bar maps a part (``"parameters"``, ...) to bytes."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(bars) + 2.5), 3.8))
    parts = list(dict.fromkeys(p for b in bars.values() for p in b))
    bottoms = [0.0] * len(bars)
    for part in parts:
        heights = [b.get(part, 0.0) / scale for b in bars.values()]
        ax.bar(list(bars), heights, bottom=bottoms, label=part, color=_COLORS.get(part))
        bottoms = [a + h for a, h in zip(bottoms, heights)]
    for x, total in enumerate(bottoms):
        ax.annotate(f"{total:,.1f}", (x, total), ha="center", va="bottom", fontsize="small")
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1.15 * max(bottoms, default=1.0)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_step_timeline(events: Sequence[tuple[str, str, str, float, float]], title: str = "") -> Figure:
    """``events``: ``(lane, kind, label, start_ms, end_ms)``; lanes are drawn top to bottom in order of
    first appearance, each kind in its colour, each bar labelled."""
    lanes = list(dict.fromkeys(e[0] for e in events))
    fig, ax = plt.subplots(figsize=(9.0, 1.0 + 0.8 * len(lanes)))
    seen: set[str] = set()
    for lane, kind, label, start, end in events:
        y = lanes.index(lane)
        ax.barh(y, max(end - start, 0.05), left=start, height=0.6, color=_COLORS.get(kind, "tab:gray"),
                edgecolor="white", label=None if kind in seen else kind)
        seen.add(kind)
        if label:
            ax.text(start + (end - start) / 2, y, label, ha="center", va="center", fontsize=7, color="black")
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlabel("time since the step started (ms)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return fig
