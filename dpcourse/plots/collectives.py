"""Pictures of what every rank holds, drawn from values returned by a real run.

* :func:`show_collective` / :func:`show_collectives`: one row of boxes per rank, before and after.
* :func:`show_ring_steps`: the ring all-reduce step by step, when rank ``r`` starts with ``2**r``
  in every element: the bits of a sum then say which ranks' data it already contains. Its data
  come from :func:`trace_ring_steps`, run in the workers.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["show_collective", "show_collectives", "show_ring_steps", "trace_ring_steps", "contributors"]

Values = Sequence[Sequence[float]]  # one list of numbers per rank


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e4 else f"{v:.1e}"


def _draw_ranks(ax, values: Values, title: str, width: int) -> None:
    import matplotlib.patches as patches

    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(len(values) - 0.5 + 0.1, -0.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    for r, row in enumerate(values):
        ax.text(-0.15, r, f"rank {r}", ha="right", va="center", fontsize=9)
        if row is None or len(row) == 0:
            ax.text(0.1, r, "(not defined)", va="center", fontsize=8, color="gray")
            continue
        for i, v in enumerate(row):
            ax.add_patch(patches.Rectangle((i, r - 0.4), 0.95, 0.8, facecolor=f"C{r % 10}", alpha=0.25,
                                           edgecolor="black", linewidth=0.6))
            ax.text(i + 0.475, r, _fmt(float(v)), ha="center", va="center", fontsize=8)


def show_collective(before: Values, after: Values, name: str, axes=None):
    """Draw ``before`` and ``after`` (one list of numbers per rank) side by side; return the figure."""
    import matplotlib.pyplot as plt

    width = max([len(r) for r in list(before) + list(after) if r is not None] + [1])
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(2.0 + 0.55 * 2 * width, 0.5 + 0.45 * len(before)))
    else:
        fig = axes[0].figure
    _draw_ranks(axes[0], before, f"{name}: before", width)
    _draw_ranks(axes[1], after, f"{name}: after", width)
    return fig


def show_collectives(records: dict[str, tuple[Values, Values]]):
    """One row per collective (``{name: (before, after)}``), before on the left, after on the right."""
    import matplotlib.pyplot as plt

    ranks = max(len(b) for b, _ in records.values())
    width = max(len(r) for b, a in records.values() for r in list(b) + list(a) if r is not None)
    fig, axes = plt.subplots(len(records), 2, figsize=(2.0 + 1.1 * width, (0.55 + 0.4 * ranks) * len(records)),
                             squeeze=False)
    for (name, (before, after)), row in zip(records.items(), axes):
        show_collective(before, after, name, axes=row)
    fig.tight_layout()
    return fig


def contributors(value: float, world_size: int) -> list[int]:
    """Ranks whose ``2**rank`` make up ``value`` (its set bits): ``contributors(5, 4) == [0, 2]``."""
    bits = int(round(value))
    if bits < 0 or bits >= 2 ** world_size or abs(value - bits) > 1e-6:
        raise ValueError(f"{value} is not a sum of distinct 2**rank for {world_size} ranks: start rank r with 2**r.")
    return [r for r in range(world_size) if bits >> r & 1]


def trace_ring_steps(tensor) -> list[tuple[str, int, list[float]]]:
    """Run in a worker: ``ring_all_reduce(tensor)``, with a snapshot of this rank's tensor (as a list)
    before the first step and after every step, as ``[(phase, step, values), ...]``.

    The ring itself knows nothing of this: it calls back after each step, and the callback copies.
    """
    from dpcourse.allreduce import ring_all_reduce

    trace = [("start", 0, tensor.flatten().tolist())]
    ring_all_reduce(tensor, after_step=lambda phase, step, t: trace.append((phase, step, t.flatten().tolist())))
    return trace


def show_ring_steps(traces: Sequence[Sequence[tuple[str, int, Sequence[float]]]]):
    """The ring all-reduce step by step: a column per step, a row per rank, a box per chunk.

    ``traces[r]`` is rank r's ``[(phase, step, values), ...]`` (from :func:`trace_ring_steps`,
    with one element per chunk, rank r starting from ``2**r``). Each box lists the ranks whose data
    the chunk holds and is shaded by their number; a thick edge marks what changed in that step.
    """
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    world = len(traces)
    steps = len(traces[0])
    cmap = plt.get_cmap("Blues")
    fig, axes = plt.subplots(1, steps, figsize=(1.0 + 0.45 * world * steps, 0.6 + 0.5 * world), squeeze=False)
    for s, ax in enumerate(axes[0]):
        phase, step, _ = traces[0][s]
        ax.set_title("start" if phase == "start" else f"{phase}\nstep {step}", fontsize=8)
        ax.set_xlim(-0.05, world + 0.05)
        ax.set_ylim(world - 0.5, -0.6)
        ax.set_axis_off()
        for r in range(world):
            values = traces[r][s][2]
            previous = traces[r][s - 1][2] if s else values
            if s == 0:
                ax.text(-0.1, r, f"rank {r}", ha="right", va="center", fontsize=8)
            for c, v in enumerate(values):
                who = contributors(v, world)
                changed = s > 0 and v != previous[c]
                ax.add_patch(patches.Rectangle((c, r - 0.4), 0.92, 0.8, facecolor=cmap(0.15 + 0.75 * len(who) / world),
                                               edgecolor="crimson" if changed else "black",
                                               linewidth=2.0 if changed else 0.5))
                label = "all" if len(who) == world else "+".join(map(str, who))
                ax.text(c + 0.46, r, label, ha="center", va="center", fontsize=7,
                        color="white" if len(who) > world / 2 else "black")
    fig.tight_layout()
    return fig
