"""Plotting helpers for the lessons: learning curves, step-phase bars, labelled bar charts.

Each function draws one idea and returns its ``matplotlib`` Figure; a notebook cell calls it and
then ``plt.show()``. Labels name the unit of every axis, because a plot without units teaches nothing.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["plot_history", "plot_phases", "plot_bars", "plot_lines", "plot_timeline", "plot_wire_timeline"]


def plot_history(histories: Mapping[str, object], title: str = "") -> Figure:
    """Training loss (per step, against samples seen) and test accuracy (per epoch) of labelled runs.

    ``histories`` maps a label to a ``dpcourse.train.History``."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, h in histories.items():
        per_step = h.samples_seen / max(len(h.step_loss), 1)  # exact at epoch ends (last batch may be short)
        seen = [(i + 1) * per_step for i in range(len(h.step_loss))]
        ax_loss.plot(seen, h.step_loss, label=label, linewidth=1)
        if h.test_accuracy:
            per_epoch = h.samples_seen / max(len(h.epoch), 1)
            ax_acc.plot([e * per_epoch for e in h.epoch], h.test_accuracy, marker="o", label=label)
    ax_loss.set(xlabel="training samples seen", ylabel="training loss (per step)", yscale="log")
    ax_acc.set(xlabel="training samples seen", ylabel="test accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_phases(phases: Mapping[str, Mapping[str, float]],
                title: str = "Where one training step spends its time") -> Figure:
    """Stacked horizontal bars, one per label, of phase times in milliseconds (``time_step_phases`` output)."""
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.7 * len(phases)))
    labels = list(phases)
    names = list(next(iter(phases.values())))
    left = [0.0] * len(labels)
    for name in names:
        widths = [1e3 * phases[label][name] for label in labels]
        ax.barh(labels, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.2f} ms", va="center")
    ax.set(xlabel="milliseconds per step", title=title, xlim=(0, 1.2 * max(left)))
    ax.invert_yaxis()
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.tight_layout()
    return fig


def plot_bars(values: Mapping[str, float], ylabel: str, title: str = "", fmt: str = "{:,.0f}",
              log: bool = False) -> Figure:
    """One bar per label, each annotated with its value formatted by ``fmt``."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(values) + 2), 3.4))
    bars = ax.bar(list(values), list(values.values()), color="tab:blue")
    if sum(len(str(k)) for k in values) > 8 * len(values):  # long names would overlap: tilt them
        ax.tick_params(axis="x", labelrotation=20)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    for bar, v in zip(bars, values.values()):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize="small")
    ax.set(ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_lines(x: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
               title: str = "", logx: bool = False, logy: bool = False) -> Figure:
    """Several labelled lines over a shared ``x``, with markers (for sweeps: batch size, shards, steps)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, ys in series.items():
        ax.plot(list(x), list(ys), marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_timeline(timelines: Mapping[str, Mapping[str, object]],
                  title: str = "When each bucket's all-reduce ran, against the backward pass") -> Figure:
    """One panel per label: the backward pass as a shaded band and one bar per bucket from the
    start to the end of its all-reduce (a dot marks when the bucket was ready).

    ``timelines`` maps a label to ``{"backward": (start, end), "buckets": [{"bucket", "ready",
    "start", "end"}, ...]}``, all times in milliseconds from the start of backward."""
    fig, axes = plt.subplots(len(timelines), 1, sharex=True, squeeze=False,
                             figsize=(7.0, 1.2 + 1.3 * len(timelines)))
    for ax, (label, t) in zip(axes[:, 0], timelines.items()):
        b0, b1 = t["backward"]  # type: ignore[misc]
        ax.axvspan(b0, b1, color="tab:orange", alpha=0.25, label="backward")
        for e in t["buckets"]:  # type: ignore[union-attr]
            ax.barh(e["bucket"], e["end"] - e["start"], left=e["start"], height=0.6, color="tab:blue")
            ax.plot(e["ready"], e["bucket"], "k.", markersize=4)
        ax.set_ylabel("bucket")
        ax.set_yticks(sorted({e["bucket"] for e in t["buckets"]}))  # type: ignore[union-attr]
        ax.set_title(label, fontsize="medium", loc="left")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("time since backward started (ms); bars: all-reduce, dots: bucket ready")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def plot_wire_timeline(rows: Mapping[str, Mapping[str, object]],
                       title: str = "One training step: computation, and what was on the wire") -> Figure:
    """One row per label: forward and backward as shaded spans, each simulated transfer as a bar.

    ``rows`` maps a label to ``{"forward": (start, end), "backward": (start, end), "step": end,
    "transfers": [(start, end, bytes), ...]}``, in milliseconds from the start of the step (what
    ``dpcourse.network.transfers()`` records, made relative). The step's end is a black tick.
    """
    fig, ax = plt.subplots(figsize=(8.0, 1.0 + 0.55 * len(rows)))
    for y, (label, t) in enumerate(rows.items()):
        f0, f1 = t["forward"]  # type: ignore[misc]
        b0, b1 = t["backward"]  # type: ignore[misc]
        ax.barh(y - 0.22, f1 - f0, left=f0, height=0.36, color="tab:gray", alpha=0.5,
                label="forward" if y == 0 else None)
        ax.barh(y - 0.22, b1 - b0, left=b0, height=0.36, color="tab:orange", alpha=0.6,
                label="backward" if y == 0 else None)
        for i, (s0, s1, _) in enumerate(t["transfers"]):  # type: ignore[union-attr]
            ax.barh(y + 0.2, s1 - s0, left=s0, height=0.36, color="tab:blue" if i % 2 == 0 else "tab:cyan",
                    edgecolor="white", linewidth=0.5, label="on the wire" if y == 0 and i == 0 else None)
        ax.plot([t["step"], t["step"]], [y - 0.45, y + 0.45], color="black", linewidth=2,
                label="step done" if y == 0 else None)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the step started (wire: simulated transfers, alternately shaded)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return fig
