"""The scaling demo: a tiny run trains for real and leaves a PNG and a CSV with the expected columns."""

from __future__ import annotations

import csv

import pytest

from dpcourse import cli, demo


def test_tiny_demo_writes_png_and_csv(tmp_path, no_leftover_processes, capsys):
    out = tmp_path / "out"
    rc = cli.main(["demo", "--workers", "1,2", "--model", "tiny", "--batch-size", "16", "--steps", "2",
                   "--out", str(out)])
    assert rc == 0
    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "demo.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == demo.COLUMNS
    for col in ("workers", "model", "batch_size", "backend", "algorithm", "samples_per_s", "speedup", "efficiency"):
        assert col in rows[0]
    assert [int(r["workers"]) for r in rows] == [1, 2]
    assert float(rows[0]["speedup"]) == pytest.approx(1.0)
    for r in rows:
        assert float(r["samples_per_s"]) > 0
        assert float(r["efficiency"]) == pytest.approx(float(r["speedup"]) / int(r["workers"]), rel=1e-3)
        assert int(r["parameters"]) > 0 and r["backend"] == "gloo"
    assert "2/2" in capsys.readouterr().out  # the progress bar reached the end


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


def test_dashboard_static_fallback_draws_a_figure(tmp_path, no_leftover_processes):
    from matplotlib.figure import Figure

    from dpcourse.dashboard import dashboard

    fig = dashboard(workers=(1,), model="tiny", batch_size=16, steps=2, out=tmp_path, widgets=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert (tmp_path / "demo.png").is_file() and (tmp_path / "demo.csv").is_file()


def test_dashboard_widgets_run_and_save(tmp_path, no_leftover_processes):
    pytest.importorskip("ipywidgets")
    from dpcourse.dashboard import dashboard

    ui = dashboard(model="tiny", batch_size=16, steps=3, out=tmp_path, widgets=True)
    (max_workers, model, batch), _, (steps, run, progress) = (box.children for box in ui.children[:3])
    max_workers.value, batch.value = 2, 16
    run.click()
    assert progress.value == progress.max == 2  # runs for 1 and 2 workers finished
    with open(tmp_path / "demo.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["workers"], r["model"], r["batch_size"]) for r in rows] == [("1", "tiny", "16"), ("2", "tiny", "16")]
    assert "saved" in ui.children[3].value
