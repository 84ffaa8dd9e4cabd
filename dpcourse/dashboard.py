"""The scaling demo as a notebook dashboard: pick workers, model, batch, backend and algorithm, press Run.

``dashboard()`` shows ipywidgets controls; each press runs :func:`dpcourse.demo.run_settings` for the
chosen worker counts and redraws throughput, speedup and efficiency as each run finishes, with a
progress bar, then saves ``demo.png`` and ``demo.csv``. Where widgets cannot run (headless execution,
nbval, exported HTML) it runs the chosen settings once and shows a static figure instead. A cell that
calls it changes its output while it runs: mark it ``# NBVAL_IGNORE_OUTPUT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpcourse import demo
from dpcourse.aids import widgets_live

__all__ = ["dashboard", "static_figure"]


def static_figure(settings: list[demo.Setting], steps: int = 10, out: Path | None = None) -> "matplotlib.figure.Figure":  # noqa: F821
    """Run ``settings`` and return one figure of the results (optionally saving PNG + CSV in ``out``)."""
    results = demo.run_settings(settings, steps=steps)
    fig = demo.plot_results(results)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "demo.png", dpi=110)
        demo.write_csv(results, out / "demo.csv")
    return fig


def dashboard(workers: tuple[int, ...] = (1, 2), model: str = "small", batch_size: int = 128,
              backend: str = "gloo", algorithm: str = "ddp", steps: int = 10, out: str | Path | None = "demo-out",
              widgets: bool | None = None) -> Any:
    """Controls for the scaling demo in a live notebook; elsewhere a static figure of one run of the given settings.

    A live run saves ``demo.png`` and ``demo.csv`` in ``out`` (``demo-out`` when ``None``); the static
    figure is saved there only when ``out`` is given."""
    import matplotlib.pyplot as plt

    if not (widgets_live() if widgets is None else widgets):
        fig = static_figure([demo.Setting(w, model, batch_size, backend, algorithm) for w in sorted(workers)], steps,
                            None if out is None else Path(out))
        plt.show()
        return fig

    import os

    import ipywidgets as w
    from IPython.display import display

    cores = os.cpu_count() or 1
    algorithms = [a for a in demo.ALGORITHMS if a != "bucketed" or _has_bucketed()]
    max_workers = w.IntSlider(value=max(workers), min=1, max=max(8, 2 * cores), description="up to workers")
    model_w = w.Dropdown(options=list(demo.MODELS), value=model, description="model")
    batch_w = w.SelectionSlider(options=[16, 32, 64, 128, 256, 512, 1024], value=batch_size, description="batch")
    scaling_w = w.ToggleButtons(options=["weak", "strong"], value="weak", description="scaling",
                                tooltips=["batch is per worker", "batch is global, split over workers"])
    backend_w = w.Dropdown(options=_backends(), value=backend, description="backend")
    algo_w = w.Dropdown(options=algorithms, value=algorithm if algorithm in algorithms else "ddp", description="algorithm")
    steps_w = w.IntSlider(value=steps, min=3, max=100, description="steps")
    run = w.Button(description="Run", button_style="primary", icon="play")
    progress = w.IntProgress(value=0, min=0, max=1, description="runs")
    status = w.HTML()
    plot = w.Output()

    out = Path(out if out is not None else "demo-out")

    def on_run(_: Any) -> None:
        counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= max_workers.value]
        if max_workers.value not in counts:
            counts.append(max_workers.value)
        settings = [demo.Setting(n, model_w.value, batch_w.value, backend_w.value, algo_w.value, scaling_w.value)
                    for n in counts]
        note = f" ({max(counts)} workers on {cores} cores: oversubscribed)" if max(counts) > cores and backend_w.value == "gloo" else ""
        progress.max, progress.value = len(settings), 0
        status.value = f"running {len(settings)} settings{note}..."
        run.disabled = True
        fig = plt.figure(figsize=(12, 3.8))
        plt.close(fig)  # drawn into the Output widget by hand, not by the inline backend

        def on_result(results: list[demo.Result], done: int, total: int) -> None:
            progress.value = done
            r = results[-1]
            status.value = (f"{done}/{total}: {r.workers} worker(s): {r.samples_per_s:,.0f} samples/s, "
                            f"speedup {r.speedup:.2f}x, efficiency {100 * r.efficiency:.0f} %{note}")
            demo.plot_results(results, fig)
            plot.clear_output(wait=True)
            with plot:
                display(fig)

        try:
            results = demo.run_settings(settings, steps=steps_w.value, on_result=on_result)
            out.mkdir(parents=True, exist_ok=True)
            fig.savefig(out / "demo.png", dpi=110)
            demo.write_csv(results, out / "demo.csv")
            status.value += f"<br>saved {out / 'demo.png'} and {out / 'demo.csv'}"
        except Exception as exc:  # show the failure in the dashboard, keep the controls usable
            status.value = f"<span style='color:firebrick'>run failed: {str(exc).splitlines()[0]}</span>"
        finally:
            run.disabled = False

    run.on_click(on_run)
    ui = w.VBox([w.HBox([max_workers, model_w, batch_w]), w.HBox([scaling_w, backend_w, algo_w]),
                 w.HBox([steps_w, run, progress]), status, plot])
    display(_WithText(ui, "*Scaling dashboard: interactive controls, shown when this notebook runs live. "
                          "From a terminal, `dpcourse demo` draws the same plots into `demo-out/demo.png`.*"))
    return ui


class _WithText:
    """Displays as ``widget`` where a front end can, and as ``text`` (markdown) where it cannot (exported HTML)."""

    def __init__(self, widget: Any, text: str):
        self.widget, self.text = widget, text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = {k: v for k, v in self.widget._repr_mimebundle_().items() if k != "text/plain"}
        return {**bundle, "text/markdown": self.text, "text/plain": "scaling dashboard"}


def _has_bucketed() -> bool:
    try:
        from dpcourse.ddp import BucketedDDP  # noqa: F401
    except ImportError:
        return False
    return True


def _backends() -> list[str]:
    import torch

    return ["gloo", "nccl"] if torch.cuda.is_available() else ["gloo"]
