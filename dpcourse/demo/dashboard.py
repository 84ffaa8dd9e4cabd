"""The scaling demo as a notebook dashboard: pick workers, model, batch, network and cluster, press Run.

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


def static_figure(settings: list[demo.Setting], steps: int = 10, out: Path | None = None, repeats: int = 1,
                  baselines: bool = True) -> "matplotlib.figure.Figure":  # noqa: F821
    """Run ``settings`` and return one figure of the results (optionally saving PNG + CSV in ``out``).

    It prints which link (and dilation) the runs used, a warning if the machine is busy, and every
    speedup with its baseline."""
    warning = demo.busy_warning()
    if warning:
        print(warning)
    if baselines:
        settings = demo.with_single_process_baselines(settings)
    _print_link(settings)
    results = demo.run_settings(settings, steps=steps, repeats=repeats)
    for line in demo.summary(results):
        print(line)
    fig = demo.plot_results(results, warning=warning)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "demo.png", dpi=110)
        demo.write_csv(results, out / "demo.csv")
    return fig


def _print_link(settings: list[demo.Setting]) -> str:
    first = next((s for s in settings if s.algorithm != demo.SINGLE), None)
    if first is None:
        return ""
    link, dilation = demo.link_for(first)
    text = f"link: {link if link is not None else demo.REAL_MACHINE}" + (f"\ndilation: {dilation}" if dilation else "")
    print(text)
    return text


def dashboard(workers: tuple[int, ...] = (1, 2), model: str = "small", batch_size: int = 128,
              backend: str = "gloo", algorithm: str = "ddp", steps: int = 10, out: str | Path | None = "demo-out",
              widgets: bool | None = None, network: str = "", cluster: str = "", repeats: int = 3,
              baselines: bool = True) -> Any:
    """Controls for the scaling demo in a live notebook; elsewhere a static figure of one run of the given settings.

    ``network`` is a preset of ``dpcourse.links()`` ("" for this machine's real loopback) and
    ``cluster`` a GPU of ``dpcourse.dilation.gpus()`` that dilates it ("" for none). A live run saves
    ``demo.png`` and ``demo.csv`` in ``out`` (``demo-out`` when ``None``); the static figure is saved
    there only when ``out`` is given."""
    import argparse

    import matplotlib.pyplot as plt

    network, cluster = demo.check_network(argparse.Namespace(network=network, cluster=cluster))
    if not (widgets_live() if widgets is None else widgets):
        fig = static_figure([demo.Setting(w, model, batch_size, backend, algorithm, "weak", 1, network, cluster)
                             for w in sorted(workers)], steps, None if out is None else Path(out), repeats, baselines)
        plt.show()
        return fig

    import os

    import ipywidgets as w
    from IPython.display import display

    from dpcourse.dilation import gpus
    from dpcourse.network import links

    cores = os.cpu_count() or 1
    wide = {"description_width": "initial"}  # labels in full, never cut to "up to wor..."
    algorithms = [a for a in demo.ALGORITHMS if a != "bucketed" or _has_bucketed()]
    max_workers = w.IntSlider(value=max(workers), min=1, max=max(8, 2 * cores), description="max workers", style=wide)
    model_w = w.Dropdown(options=list(demo.MODELS), value=model, description="model", style=wide)
    batch_w = w.SelectionSlider(options=[16, 32, 64, 128, 256, 512, 1024], value=batch_size, description="batch",
                                style=wide)
    scaling_w = w.ToggleButtons(options=["weak", "strong"], value="weak", description="scaling", style=wide,
                                tooltips=["batch is per worker", "batch is global, split over workers"])
    backend_w = w.Dropdown(options=_backends(), value=backend, description="backend", style=wide)
    algo_w = w.Dropdown(options=algorithms, value=algorithm if algorithm in algorithms else "ddp",
                        description="algorithm", style=wide)
    network_w = w.Dropdown(options=[("none: this machine", "")] + [(name, name) for name in links()], value=network,
                           description="network", style=wide)
    cluster_w = w.Dropdown(options=[("none: no dilation", "")] + [(f"{name} GPUs", name) for name in gpus()],
                           value=cluster, description="cluster it stands for", style=wide)
    repeats_w = w.IntSlider(value=repeats, min=1, max=7, description="repeats", style=wide)
    baselines_w = w.Checkbox(value=baselines, description=f"compare with 1 process x 1..{cores} threads", style=wide,
                             indent=False)
    steps_w = w.IntSlider(value=steps, min=3, max=100, description="steps", style=wide)
    run = w.Button(description="Run", button_style="primary", icon="play")
    progress = w.IntProgress(value=0, min=0, max=1, description="runs", style=wide)
    status = w.HTML()
    plot = w.Output()

    out = Path(out if out is not None else "demo-out")

    def on_run(_: Any) -> None:
        counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= max_workers.value]
        if max_workers.value not in counts:
            counts.append(max_workers.value)
        try:
            net, gpu = demo.check_network(argparse.Namespace(network=network_w.value, cluster=cluster_w.value))
            if net and backend_w.value != "gloo":
                raise ValueError("a simulated network runs over gloo on CPU: choose backend gloo, or network none")
        except ValueError as exc:
            status.value = f"<span style='color:firebrick'>{exc}</span>"
            return
        settings = [demo.Setting(n, model_w.value, batch_w.value, backend_w.value, algo_w.value, scaling_w.value, 1,
                                 net, gpu) for n in counts]
        if baselines_w.value:
            settings = demo.with_single_process_baselines(settings, cores)
        notes = []
        if max(counts) > cores and backend_w.value == "gloo":
            notes.append(f"{max(counts)} workers on {cores} cores: oversubscribed")
        warning = demo.busy_warning(cores)
        if warning:
            notes.append(warning)
        progress.max, progress.value = len(settings) * repeats_w.value, 0
        run.disabled = True
        try:
            status.value = "measuring the dilation..." if gpu else "starting..."
            link, dilation = demo.link_for(next(s for s in settings if s.algorithm != demo.SINGLE))
            head = f"link: {link if link is not None else demo.REAL_MACHINE}" + \
                (f"<br>dilation: {dilation}" if dilation else "") + "".join(f"<br>{n}" for n in notes)
            status.value = f"{head}<br>running {len(settings)} settings x {repeats_w.value} repeat(s)..."
            fig = plt.figure(figsize=(13, 5.4))
            plt.close(fig)  # drawn into the Output widget by hand, not by the inline backend

            def on_result(results: list[demo.Result], done: int, total: int) -> None:
                progress.value = done
                r = results[(done - 1) % len(results)] if len(results) == len(settings) else results[-1]
                status.value = (f"{head}<br>{done}/{total}: {r.describe()}: {r.samples_per_s:,.0f} samples/s, "
                                f"speedup {r.speedup:.2f}x vs {r.baseline}")
                demo.plot_results(results, fig, warning)
                plot.clear_output(wait=True)
                with plot:
                    display(fig)

            results = demo.run_settings(settings, steps=steps_w.value, on_result=on_result, repeats=repeats_w.value)
            out.mkdir(parents=True, exist_ok=True)
            fig.savefig(out / "demo.png", dpi=110)
            demo.write_csv(results, out / "demo.csv")
            status.value = (head + "".join(f"<br>{line}" for line in demo.summary(results))
                            + f"<br>saved {out / 'demo.png'} and {out / 'demo.csv'}")
        except Exception as exc:  # show the failure in the dashboard, keep the controls usable
            status.value = f"<span style='color:firebrick'>run failed: {str(exc).splitlines()[0]}</span>"
        finally:
            run.disabled = False

    run.on_click(on_run)
    ui = w.VBox([w.HBox([max_workers, model_w, batch_w]), w.HBox([scaling_w, backend_w, algo_w]),
                 w.HBox([network_w, cluster_w, repeats_w, baselines_w]),
                 w.HBox([steps_w, run, progress]), status, plot])
    display(_WithText(ui, "*Scaling dashboard: interactive controls, shown when this notebook runs live. "
                          "From a terminal, `dpcourse demo` draws the same plots into `demo-out/demo.png` "
                          "(`--network 25GbE --cluster A100` for a simulated cluster).*"))
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
        from dpcourse.ddp_by_hand import BucketedDDP  # noqa: F401
    except ImportError:
        return False
    return True


def _backends() -> list[str]:
    import torch

    return ["gloo", "nccl"] if torch.cuda.is_available() else ["gloo"]
