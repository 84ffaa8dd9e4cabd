"""The scaling demo: a tiny run trains for real and leaves a PNG and a CSV with the expected columns."""

from __future__ import annotations

import csv
import os

import pytest

from dpcourse import cli, demo


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_demo_writes_png_and_csv(tmp_path, no_leftover_processes, capsys, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # a quiet machine: no warning
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # the course's machine: baselines 1 x 1 and 1 x 2 threads
    out = tmp_path / "out"
    rc = cli.main(["demo", "--workers", "1,2", "--model", "tiny", "--batch-size", "16", "--steps", "2",
                   "--repeats", "2", "--out", str(out)])
    assert rc == 0
    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(out / "demo.csv")
    assert list(rows[0]) == demo.COLUMNS
    singles = [r for r in rows if r["algorithm"] == demo.SINGLE]
    dp = [r for r in rows if r["algorithm"] == "ddp"]
    assert [int(r["threads"]) for r in singles] == [1, 2]  # the machine's single processes, 1..cores threads
    assert [int(r["workers"]) for r in dp] == [1, 2] and all(r["threads"] == "1" for r in dp)
    one_thread = float(singles[0]["samples_per_s"])
    best = max(singles, key=lambda r: float(r["samples_per_s"]))
    for r in rows:
        lo, mid, hi = (float(r[k]) for k in ("samples_per_s_min", "samples_per_s", "samples_per_s_max"))
        assert 0 < lo <= mid <= hi and r["repeats"] == "2"
        assert r["link"] == demo.REAL_MACHINE and float(r["dilation"]) == 1.0 and int(r["parameters"]) > 0
        assert float(r["vs_best_single"]) == pytest.approx(mid / float(best["samples_per_s"]), rel=1e-3)
        assert r["best_single"] == f"1 process x {best['threads']} thread" + ("s" if best["threads"] == "2" else "")
    for r in dp:  # data parallelism against the plain single process with one thread, named
        assert r["baseline"] == "1 process x 1 thread"
        assert float(r["speedup"]) == pytest.approx(float(r["samples_per_s"]) / one_thread, rel=1e-3)
        assert float(r["efficiency"]) == pytest.approx(float(r["speedup"]) / int(r["workers"]), rel=1e-3)
        assert float(r["speedup_min"]) <= float(r["speedup"]) <= float(r["speedup_max"])
    printed = capsys.readouterr().out
    assert "8/8" in printed  # the progress bar reached the end: 4 settings x 2 repeats
    assert f"link: {demo.REAL_MACHINE}" in printed and "busy" not in printed
    two_ranks = next(line for line in printed.splitlines() if line.startswith("2 ranks x 1 thread (tiny"))
    assert "x vs 1 process x 1 thread" in two_ranks and "x vs 1 process x 2 threads" in two_ranks


def test_demo_warns_when_the_load_average_says_busy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    assert "load average 3.50" in demo.busy_warning(cores=2)
    assert demo.busy_warning(cores=2, load=0.9) is None  # a laptop's own background work is not "busy"
    assert demo.busy_warning(cores=2, load=1.1) is not None
    assert demo.busy_warning(cores=8, load=3.5) is None
    rc = cli.main(["demo", "--workers", "1", "--model", "tiny", "--batch-size", "8", "--steps", "1", "--repeats", "1",
                   "--no-baselines", "--out", str(tmp_path)])
    assert rc == 0
    assert "warning: the machine is busy (load average 3.50" in capsys.readouterr().out


def _fake(workers, samples, algorithm="ddp", threads=1, link=demo.REAL_MACHINE, network="", cluster="", spread=0.1):
    return demo.Result(workers=workers, model="small", batch_size=128, algorithm=algorithm, threads=threads,
                       backend="-" if algorithm == demo.SINGLE else "gloo", link=link, network=network,
                       cluster=cluster, samples_per_s=samples, samples_per_s_min=samples * (1 - spread),
                       samples_per_s_max=samples * (1 + spread), repeats=3)


def _texts(fig):
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return fig._suptitle.get_text(), [ax.get_title() for ax in fig.axes], [ax.get_ylabel() for ax in fig.axes], legends


def _line(fig, label):
    ax = fig.axes[1]
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_plot_names_baselines_stops_ideal_at_the_cores_and_shows_the_spread(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    rs = [_fake(1, 100.0, demo.SINGLE, 1), _fake(1, 170.0, demo.SINGLE, 2),
          _fake(1, 95.0), _fake(2, 180.0), _fake(4, 160.0)]
    demo.add_speedups(rs)
    assert [round(r.speedup, 2) for r in rs[2:]] == [0.95, 1.8, 1.6]  # against 1 process x 1 thread
    assert rs[3].vs_best_single == pytest.approx(180 / 170) and rs[3].best_single == "1 process x 2 threads"
    fig = demo.plot_results(rs, warning="warning: the machine is busy (test)")
    suptitle, titles, ylabels, legends = _texts(fig)
    assert "speedup vs 1 process x 1 thread" in titles and "baseline: 1 process x 1 thread" in ylabels[1]
    assert "3 repeat(s) per point" in suptitle and "ideal line stops at 2 ranks" in suptitle
    assert "warning: the machine is busy (test)" in suptitle
    assert any(t.startswith("best single process (1 process x 2 threads): 1.70x") for t in legends)
    assert list(_line(fig, "ideal (stops at 2 cores)").get_xdata()) == [1, 2]  # not on to 4
    assert not any("cluster" in t for t in legends)
    # the best single process is a point (a star) on the throughput plot
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_ydata()) == [170.0]
    # min-max bars: one error bar per point of the speedup line, from min to max
    bars = fig.axes[1].collections
    segments = [seg for c in bars for seg in c.get_segments()]
    assert any(seg[0][1] == pytest.approx(0.95 * 0.9) and seg[1][1] == pytest.approx(0.95 * 1.1) for seg in segments)


def test_plot_on_a_simulated_cluster_says_which_link_and_dilation(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    link = "25 Gigabit Ethernet between NVIDIA A100 SXM GPUs: 1 ms latency, 9 MB/s per direction (dilated x345)"
    rs = [_fake(w, s, link=link, network="25GbE", cluster="A100") for w, s in ((1, 100.0), (2, 150.0), (4, 200.0))]
    for r in rs:
        r.dilation = 345.0
    demo.add_speedups(rs)  # no single process measured: against the fewest workers
    assert rs[0].baseline == "1 rank x 1 thread"
    fig = demo.plot_results(rs)
    suptitle, titles, _, legends = _texts(fig)
    assert link in suptitle and "dilation: x345" in suptitle
    assert "each rank stands for a GPU" in suptitle
    assert "speedup vs 1 rank x 1 thread" in titles
    assert list(_line(fig, "ideal (stops at 2 cores)").get_xdata()) == [1, 2]
    beyond = next(line for line in fig.axes[1].get_lines() if line.get_label().startswith("ideal for the cluster"))
    assert list(beyond.get_xdata()) == [2, 4]  # drawn dotted, and said to be out of reach here
    assert beyond.get_linestyle() == ":"


def test_demo_on_a_dilated_cluster_link(tmp_path, no_leftover_processes, capsys, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    rc = cli.main(["demo", "--workers", "2", "--model", "tiny", "--batch-size", "8", "--steps", "1", "--repeats", "1",
                   "--network", "25gbe", "--cluster", "T4", "--no-baselines", "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    (row,) = _rows(tmp_path / "demo.csv")
    assert row["network"] == "25GbE" and row["cluster"] == "T4"
    assert row["link"].startswith("25 Gigabit Ethernet between NVIDIA T4 GPUs") and float(row["dilation"]) > 1
    assert f"link: {row['link']}" in printed and "dilation: one step" in printed and "NVIDIA T4" in printed
    assert "[network] 2 rank(s) on 25 Gigabit Ethernet between NVIDIA T4" in printed  # what the launcher said


def test_demo_on_a_network_without_dilation(tmp_path, no_leftover_processes, capsys):
    rc = cli.main(["demo", "--workers", "2", "--model", "tiny", "--batch-size", "8", "--steps", "1", "--repeats", "1",
                   "--network", "1GbE", "--no-baselines", "--out", str(tmp_path)])
    assert rc == 0
    (row,) = _rows(tmp_path / "demo.csv")
    assert row["link"].startswith("1 Gigabit Ethernet: 50 us latency") and float(row["dilation"]) == 1.0
    assert "dilation:" not in capsys.readouterr().out


def test_repeats_are_aggregated_as_median_and_spread():
    runs = [_fake(2, s, spread=0) for s in (90.0, 150.0, 100.0)]
    agg = demo.aggregate(runs)
    assert (agg.samples_per_s, agg.samples_per_s_min, agg.samples_per_s_max, agg.repeats) == (100.0, 90.0, 150.0, 3)


def test_naive_and_ddp_train_the_same_model():
    ddp = demo.run_setting(demo.Setting(2, "tiny", 16, "gloo", "ddp"), steps=3, warmup=0)
    naive = demo.run_setting(demo.Setting(2, "tiny", 16, "gloo", "naive"), steps=3, warmup=0)
    assert ddp.loss == pytest.approx(naive.loss, rel=1e-4)  # same data, same averaged gradients


def test_speedup_against_fewest_workers():
    rs = [demo.Result(workers=w, samples_per_s=s) for w, s in ((1, 100.0), (2, 150.0), (4, 200.0))]
    demo.add_speedups(rs)
    assert [r.speedup for r in rs] == [1.0, 1.5, 2.0]
    assert [r.efficiency for r in rs] == [1.0, 0.75, 0.5]


def test_strong_scaling_splits_the_global_batch():
    assert demo.Setting(4, batch_size=128, scaling="strong").per_worker_batch() == 32
    assert demo.Setting(4, batch_size=128, scaling="weak").per_worker_batch() == 128


@pytest.mark.parametrize("argv, message", [
    (["--model", "huge"], "unknown model 'huge'"),
    (["--workers", "0"], "--workers needs"),
    (["--workers", "two"], "whole numbers"),
    (["--algorithm", "magic"], "unknown algorithm"),
    (["--network", "5G"], "unknown network '5G': choose from"),
    (["--cluster", "Z80"], "unknown GPU 'Z80' for --cluster"),
    (["--repeats", "0"], "--repeats must be at least 1"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    assert cli.main(["demo", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_demo_on_gpu(tmp_path):
    r = demo.run_setting(demo.Setting(1, "tiny", 64, "nccl", "ddp"), steps=2)
    assert r.samples_per_s > 0


def test_dashboard_static_fallback_draws_a_figure(tmp_path, no_leftover_processes, capsys):
    from matplotlib.figure import Figure

    from dpcourse.demo.dashboard import dashboard

    fig = dashboard(workers=(1,), model="tiny", batch_size=16, steps=2, out=tmp_path, widgets=False, repeats=1,
                    baselines=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert (tmp_path / "demo.png").is_file() and (tmp_path / "demo.csv").is_file()
    assert f"link: {demo.REAL_MACHINE}" in capsys.readouterr().out


def _controls(widget):
    """Every control of the dashboard by its label."""
    found = {}
    for child in getattr(widget, "children", ()):
        if getattr(child, "description", None):
            found[child.description] = child
        found.update(_controls(child))
    return found


def test_dashboard_widgets_run_and_save(tmp_path, no_leftover_processes, monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    from dpcourse.demo.dashboard import dashboard

    ui = dashboard(model="tiny", batch_size=16, steps=3, out=tmp_path, widgets=True)
    c = _controls(ui)
    assert {"max workers", "network", "cluster it stands for", "repeats"} <= set(c)
    assert all(w.style.description_width == "initial" for w in c.values() if hasattr(w.style, "description_width"))
    assert c["network"].value == "" and c["cluster it stands for"].value == ""  # default: the real machine
    c["max workers"].value, c["batch"].value, c["repeats"].value = 2, 16, 1
    c["compare with 1 process x 1..2 threads"].value = False
    c["network"].value, c["cluster it stands for"].value = "25GbE", "T4"
    c["Run"].click()
    assert c["runs"].value == c["runs"].max == 2  # runs for 1 and 2 workers finished
    rows = _rows(tmp_path / "demo.csv")
    assert [(r["workers"], r["model"], r["batch_size"], r["network"], r["cluster"]) for r in rows] == \
        [("1", "tiny", "16", "25GbE", "T4"), ("2", "tiny", "16", "25GbE", "T4")]
    status = ui.children[4].value
    assert "saved" in status and "link: 25 Gigabit Ethernet between NVIDIA T4 GPUs" in status and "dilation:" in status


def test_dashboard_refuses_a_network_on_nccl_in_one_line(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from dpcourse.demo import dashboard as dash

    monkeypatch.setattr(dash, "_backends", lambda: ["gloo", "nccl"])
    ui = dash.dashboard(model="tiny", out=tmp_path, widgets=True)
    c = _controls(ui)
    c["backend"].value, c["network"].value = "nccl", "1GbE"
    c["Run"].click()
    assert "runs over gloo" in ui.children[4].value and not (tmp_path / "demo.csv").exists()


def test_single_process_baselines_are_added_once_per_model_and_batch_and_not_on_gpus():
    gloo = [demo.Setting(w, "tiny", 16) for w in (1, 2)] + [demo.Setting(2, "small", 16)]
    out = demo.with_single_process_baselines(gloo, cores=2)
    singles = [(s.model, s.threads) for s in out if s.algorithm == demo.SINGLE]
    assert singles == [("tiny", 1), ("tiny", 2), ("small", 1), ("small", 2)]
    assert out[len(singles):] == gloo  # the singles first, then the settings as given
    nccl = [demo.Setting(w, "tiny", 16, "nccl") for w in (1, 2)]
    assert demo.with_single_process_baselines(nccl, cores=2) == nccl  # on GPUs a rank is a GPU: 1 rank is the baseline
