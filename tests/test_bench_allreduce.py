"""``dpcourse bench allreduce``: its output has every field, and the ratios follow from the times."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dpcourse.bench.allreduce import ALGORITHMS, RATIOS, format_table, run_benchmark


@pytest.fixture(scope="module")
def result():
    return run_benchmark(2, [1024, 8192], repeats=2, progress=False, timeout=60)


def test_every_size_has_every_algorithm_and_ratio(result):
    assert set(ALGORITHMS) == {"naive", "ring", "pipelined", "torch"}
    assert result["world_size"] == 2 and result["repeats"] == 2 and result["backend"] == "gloo"
    assert [r["size_bytes"] for r in result["results"]] == [1024, 8192]
    for row in result["results"]:
        for name in ALGORITHMS:
            r = row[name]
            assert len(r["times_s"]) == 2 and all(t > 0 for t in r["times_s"])
            assert min(r["times_s"]) <= r["time_s"] <= max(r["times_s"])
            assert r["algbw_GBps"] == pytest.approx(row["size_bytes"] / r["time_s"] / 1e9)
            assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 2 * (2 - 1) / 2)
        assert len(RATIOS) == 4
        for a, b in RATIOS:  # a bandwidth ratio is the inverse ratio of the times
            assert row[f"{a}_vs_{b}"] == pytest.approx(row[b]["time_s"] / row[a]["time_s"])
    assert result["memory_bandwidth_GBps"] > 0


def test_table_names_every_size_and_ratio(result):
    table = format_table(result)
    assert "1KB" in table and "8KB" in table
    for a, b in RATIOS:
        assert table.count(f"{a}/{b} = ") == 2, (a, b)
    assert table.count(" pipelined | ") == 2


def test_cli_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    proc = subprocess.run([sys.executable, "-m", "dpcourse.cli", "bench", "allreduce", "--world-size", "3",
                           "--sizes", "1KB", "--repeats", "1", "--json", str(out), "--plot", str(png)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["world_size"] == 3 and data["results"][0]["size"] == "1KB"
    assert set(ALGORITHMS) <= set(data["results"][0])
    assert png.stat().st_size > 1000
    assert "1/1" in proc.stderr and "all-reduce sizes" in proc.stderr  # tqdm's bar counts the sizes


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "12XB"], "cannot read size"),
    (["--world-size", "0", "--sizes", "1KB"], "at least 1"),
    (["--repeats", "0", "--sizes", "1KB"], "at least 1"),
])
def test_bad_input_gets_a_one_line_error(argv, message, capsys):
    from dpcourse.cli import main

    try:
        code = main(["bench", "allreduce", *argv])
    except SystemExit as exc:  # argparse rejects unreadable sizes itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
