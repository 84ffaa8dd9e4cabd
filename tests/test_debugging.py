"""The debugging tools on real failures, and exercise 11's truths checked against what the tools report.

The lab's truth for each case (which rank, step, parameter, collective) is what the grader marks a
diagnosis against, so each kind of truth is confirmed here by running the broken function with the
tool a learner would use: TORCH_DISTRIBUTED_DEBUG=DETAIL, the flight recorder, the divergence
detector, per-rank logs, the launcher's stuck-rank report, a comparison with one process.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import dpcourse
from dpcourse import debugging
from dpcourse.debugging_lab import FAMILIES, WORLD, DebuggingLab, make_data, reference

pytestmark = [pytest.mark.usefixtures("no_leftover_processes")]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()


def test_checksums_see_one_changed_element_and_a_swap():
    a, b = _model(), _model()
    assert torch.equal(debugging.checksums(a), debugging.checksums(b))
    with torch.no_grad():
        b[2].weight[1, 2] += 1e-12
    assert not torch.equal(debugging.checksums(a), debugging.checksums(b))
    c = _model()
    with torch.no_grad():
        w = c[0].weight
        w[0, 0], w[0, 1] = w[0, 1].clone(), w[0, 0].clone()
    diff = debugging.checksums(c) != debugging.checksums(a)
    assert diff.tolist() == [True, False, False, False]  # the swap, in 0.weight only


def _drift(split_step, every, stop):
    model = _model()
    detector = debugging.DivergenceDetector(model, every=every, stop=stop)
    for step in range(8):
        if step == split_step and dpcourse.rank() == 1:
            with torch.no_grad():
                model[2].bias.add_(1e-9)
        detector.check(step)
    d = detector.divergence
    return None if d is None else (d.step, d.parameter, d.ranks, d.since, str(d))


def test_divergence_detector_names_the_first_step_and_parameter():
    exact = dpcourse.launch(_drift, 2, 3, 1, False, timeout=60)
    assert exact[0] == exact[1]  # every rank sees the same gathered checksums
    step, parameter, ranks, since, text = exact[0]
    assert (step, parameter, ranks, since) == (3, "2.bias", [1], 2)
    assert "at step 3" in text and "'2.bias'" in text
    coarse = dpcourse.launch(_drift, 2, 3, 2, False, timeout=60)[0]
    assert coarse[:4] == (4, "2.bias", [1], 2) and "between step 3 and step 4" in coarse[4]
    never = dpcourse.launch(_drift, 2, 99, 1, False, timeout=60)
    assert never == [None, None]


def test_divergence_detector_stop_raises_on_every_rank_together():
    with pytest.raises(dpcourse.WorkerError, match="DivergenceError: ranks \\[1\\] split from rank 0 at step 5"):
        dpcourse.launch(_drift, 2, 5, 1, True, timeout=60)


def test_first_difference_names_the_first_parameter_and_the_ratio():
    ref = {"a": torch.ones(3, dtype=torch.float64), "b": torch.full((2,), 4.0, dtype=torch.float64)}
    assert debugging.first_difference(dict(ref), ref) is None
    name, diff, ratio = debugging.first_difference({"a": ref["a"], "b": ref["b"] / 2}, ref)
    assert name == "b" and diff == pytest.approx(2.0) and ratio == pytest.approx(0.5)
    with pytest.raises(KeyError, match="module"):
        debugging.first_difference({"module.a": ref["a"]}, ref)
    with pytest.raises(ValueError, match="every"):
        debugging.DivergenceDetector(_model(), every=0)


def _log_steps(folder):
    log = debugging.rank_logger(folder)
    for step in range(3):
        log.info(f"step {step} batch {[dpcourse.rank() * 10 + step]}")
    return True


def test_rank_logger_writes_one_file_per_rank_and_read_logs_merges_them(tmp_path):
    dpcourse.launch(_log_steps, 2, str(tmp_path), timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.log", "rank1.log"]
    lines = debugging.read_logs(tmp_path)
    assert len(lines) == 6 and [t for t, _, _ in lines] == sorted(t for t, _, _ in lines)
    assert {(r, m) for _, r, m in lines} >= {(0, "step 0 batch [0]"), (1, "step 2 batch [12]")}


def _mismatch(op, folder):
    import torch.distributed as dist

    t = torch.ones(4)
    with debugging.FlightRecorder(folder, after=1.0):
        for _ in range(3):
            dist.all_reduce(t)
        if dist.get_rank() == 0:
            dist.all_reduce(t)  # only rank 0: rank 1 goes on to the broadcast
        getattr(dist, op)(t, 0)
    return True


def test_flight_recorder_on_gloo_finds_the_first_disagreement(tmp_path):
    assert debugging.flight_recorder_supported("gloo")
    with pytest.raises(dpcourse.LaunchTimeout) as info:
        dpcourse.launch(_mismatch, 2, "broadcast", str(tmp_path), timeout=4, env={"TORCH_FR_BUFFER_SIZE": "100"})
    assert info.value.ranks == [0, 1]
    records = debugging.read_flight_records(tmp_path)
    assert set(records) == {0, 1}
    report = debugging.analyse_flight_records(records)
    want = "first disagreement at collective #4: rank 0 called all_reduce [[4]]; rank 1 called broadcast [[4]]"
    assert want in report


def test_flight_recorder_needs_its_buffer_and_says_how(tmp_path):
    with pytest.raises(dpcourse.WorkerError, match="TORCH_FR_BUFFER_SIZE"):
        dpcourse.launch(_mismatch, 2, "broadcast", str(tmp_path), timeout=30)
    assert "no flight-recorder dumps" in debugging.analyse_flight_records({})


def test_detail_mismatch_error_parses_into_sequence_number_and_ops(tmp_path):
    with pytest.raises(dpcourse.WorkerError) as info:
        dpcourse.launch(_mismatch, 2, "broadcast", str(tmp_path), timeout=30,
                        env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL", "TORCH_FR_BUFFER_SIZE": "100"})
    m = debugging.parse_mismatch(str(info.value))
    assert m is not None and m.seq == 3 and set(m.ops) == {"ALLREDUCE", "BROADCAST"} and set(m.ranks) == {0, 1}
    assert "collective #3" in str(m)
    assert debugging.parse_mismatch("some other error") is None


# --------------------------------------------------------------------------- exercise 11's lab

def test_lab_is_a_function_of_the_id_and_ids_differ():
    a, b = DebuggingLab("ada@example.edu"), DebuggingLab(" Ada@Example.edu ")
    assert [(c.family, c.variant) for c in a.cases.values()] == [(c.family, c.variant) for c in b.cases.values()]
    assert sorted(c.family for c in a.cases.values()) == sorted(FAMILIES)
    labs = [DebuggingLab(f"student{i}@example.edu") for i in range(12)]
    variants = {tuple((c.family, tuple(sorted(c.variant.items()))) for c in lab.cases.values()) for lab in labs}
    assert len(variants) == 12
    assert len({tuple(c.family for c in lab.cases.values()) for lab in labs}) > 6
    with pytest.raises(ValueError, match="STUDENT_ID"):
        DebuggingLab("  ")
    with pytest.raises(ValueError, match="cases 1 to 6"):
        a.source(7)


def _lab_with(family, **variant):
    """The first student id whose ``family`` case has ``variant`` (a deterministic search)."""
    for i in range(500):
        lab = DebuggingLab(f"probe{i}")
        n = next(n for n, c in lab.cases.items() if c.family == family)
        if all(lab.cases[n].variant.get(k) == v for k, v in variant.items()):
            return lab, n
    raise AssertionError(f"no id with {family} {variant}")


def _launch_case(lab, n, timeout=4, env=None, source=None, checkpoint=None):
    fn = lab.broken(n)
    if source is not None:
        namespace = {}
        exec(compile(source, f"<edited {n}>", "exec"), namespace)
        fn = namespace[f"broken_{n}"]
    return dpcourse.launch(fn, WORLD, lab.config(n, checkpoint=checkpoint), timeout=timeout, env=env or {})


@pytest.mark.parametrize("op", ["all_reduce", "broadcast", "all_gather"])
def test_hang_truth_is_what_detail_reports(op):
    lab, n = _lab_with("hang", op=op)
    truth = lab.cases[n].truth
    with pytest.raises(dpcourse.WorkerError) as info:
        _launch_case(lab, n, timeout=20, env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"})
    m = debugging.parse_mismatch(str(info.value))
    assert m is not None and m.seq == truth["seq"]
    culprit = truth["ranks"][0]  # two ranks that both skip the extra call agree: the culprit is always named
    assert culprit in m.ranks and m.ops[m.ranks.index(culprit)] == truth["op"]


def test_hang_truth_is_what_the_flight_recorder_reports(tmp_path):
    lab, n = _lab_with("hang", op="broadcast")
    truth = lab.cases[n].truth
    source = lab.source(n).replace("    rank, world = dist.get_rank(), dist.get_world_size()\n",
                                   "    rank, world = dist.get_rank(), dist.get_world_size()\n"
                                   f"    from dpcourse.debugging import FlightRecorder\n"
                                   f"    FlightRecorder({str(tmp_path)!r}, after=1.5).__enter__()\n")
    with pytest.raises(dpcourse.LaunchTimeout):
        _launch_case(lab, n, timeout=4, env={"TORCH_FR_BUFFER_SIZE": "200"}, source=source)
    report = debugging.analyse_flight_records(debugging.read_flight_records(tmp_path))
    culprit = truth["ranks"][0]
    assert f"first disagreement at collective #{truth['collective_seq_id']}:" in report
    assert f"rank {culprit} called broadcast" in report


def test_divergence_truth_is_what_the_detector_reports():
    lab, n = _lab_with("divergence")
    truth = lab.cases[n].truth
    source = lab.source(n).replace("    opt = torch.optim", "    from dpcourse.debugging import DivergenceDetector\n"
                                   "    detector = DivergenceDetector(model)\n    opt = torch.optim")
    source = source.replace("            step += 1\n", "            detector.check(step)\n            step += 1\n")
    source = source.replace('    return {"params"', '    return {"divergence": detector.divergence and '
                            '(detector.divergence.step, detector.divergence.parameter, detector.divergence.ranks), '
                            '"params"')
    found = _launch_case(lab, n, timeout=30, source=source)[0]["divergence"]
    assert found == (truth["step"], truth["parameter"], truth["ranks"])


def test_averaging_truth_is_the_first_difference_from_one_process_after_one_step():
    lab, n = _lab_with("averaging")
    case = lab.cases[n]
    case.config.update(n=WORLD * case.config["batch_size"], epochs=1)  # one step: later ones mix the error in
    ranks = _launch_case(lab, n, timeout=30)
    assert all(torch.equal(ranks[0]["params"][k], r["params"][k]) for r in ranks for k in ranks[0]["params"])
    name, _, _ = debugging.first_difference(ranks[0]["params"], reference(case))
    assert name == case.truth["parameter"]


@pytest.mark.parametrize("kind", ["no set_epoch", "seed per rank"])
def test_data_order_truth_is_the_first_step_a_rank_reads_a_wrong_batch(kind):
    lab, n = _lab_with("data order", kind=kind)
    case = lab.cases[n]
    source = lab.source(n).replace("            idx = order[start:start + config[\"batch_size\"]]\n",
                                   "            idx = order[start:start + config[\"batch_size\"]]\n"
                                   "            seen.append(sorted(idx))\n")
    source = source.replace("    step = 0\n", "    step = 0\n    seen = []\n", 1)
    source = source.replace('    return {"params"', '    return {"seen": seen, "params"')
    ranks = _launch_case(lab, n, timeout=30, source=source)
    c, batch = case.config, case.config["batch_size"]
    wrong = {}
    step = 0
    for epoch in range(c["epochs"]):
        order = torch.randperm(c["n"], generator=torch.Generator().manual_seed(c["seed"] + epoch)).tolist()
        for start in range(0, c["n"], WORLD * batch):
            global_batch = order[start:start + WORLD * batch]
            for r in range(WORLD):
                if ranks[r]["seen"][step] != sorted(global_batch[r::WORLD]):
                    wrong.setdefault(step, set()).add(r)
            step += 1
    first = min(wrong)
    assert first == case.truth["step"] and sorted(wrong[first]) == case.truth["ranks"]


def test_uneven_truth_is_the_rank_the_stuck_report_leaves_out():
    lab, n = _lab_with("uneven inputs")
    truth = lab.cases[n].truth
    with pytest.raises(dpcourse.LaunchTimeout) as info:
        _launch_case(lab, n, timeout=4)
    assert info.value.ranks == [r for r in range(WORLD) if r not in truth["ranks"]]
    x, _ = make_data(lab.config(n))
    assert len(x) == sum(lab.config(n)["shard_sizes"])


def test_checkpoint_race_truth_is_the_ranks_that_read_too_early(tmp_path):
    lab, n = _lab_with("checkpoint race")
    truth = lab.cases[n].truth
    with pytest.raises(dpcourse.WorkerError) as info:
        _launch_case(lab, n, timeout=30, checkpoint=str(tmp_path / "c.pt"))
    assert info.value.rank in truth["ranks"]
    assert "FileNotFoundError" in str(info.value) or "zip archive" in str(info.value)


# --------------------------------------------------------------------------- the NCCL path

def _nccl_three(folder):
    import torch.distributed as dist

    tensors = [torch.full((4,), float(i), device=dpcourse.device()) for i in range(3)]
    with debugging.FlightRecorder(folder, after=30.0):
        works = [dist.all_reduce(t, async_op=True) for t in tensors]  # three entries in the recorder
        for work in works:
            work.wait()
        torch.cuda.synchronize()
    return True


def _pickle_by_value():
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    except (ImportError, ValueError):
        pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flight_recorder_records_nccl_collectives(tmp_path):
    _pickle_by_value()
    assert debugging.flight_recorder_supported("nccl")
    dpcourse.launch(_nccl_three, 1, str(tmp_path), timeout=120, backend="nccl", env={"TORCH_FR_BUFFER_SIZE": "100"})
    entries = debugging.read_flight_records(tmp_path)[0]["entries"]
    assert [e["collective_seq_id"] for e in entries] == [1, 2, 3]
    assert all(e["profiling_name"].startswith("nccl:all_reduce") for e in entries)


def _nccl_mismatch(folder):
    import torch.distributed as dist

    t = torch.ones(4, device=dpcourse.device())
    with debugging.FlightRecorder(folder, after=2.0):
        dist.all_reduce(t)
        if dist.get_rank() == 0:
            dist.all_reduce(t)
        dist.broadcast(t, 0)
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_flight_recorder_on_nccl_finds_the_first_disagreement(tmp_path):
    _pickle_by_value()
    assert debugging.flight_recorder_supported("nccl")
    with pytest.raises(dpcourse.LaunchError):
        dpcourse.launch(_nccl_mismatch, 2, str(tmp_path), timeout=10, backend="nccl",
                        env={"TORCH_FR_BUFFER_SIZE": "100"})
    report = debugging.analyse_flight_records(debugging.read_flight_records(tmp_path))
    assert "first disagreement at collective #2" in report
