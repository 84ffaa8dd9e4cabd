"""Exercise 11's broken training functions: six bugs, one per family, different for every learner.

``DebuggingLab(student_id)`` derives a variant from the id (a SHA-256 of it seeds the choices): the
order of the six cases, and in each one which rank, which step, which layer or which collective
goes wrong. The learner reads ``lab.source(n)``, runs ``lab.broken(n)`` through ``dpcourse.launch``
with ``lab.config(n)``, diagnoses it with the lesson's tools and writes a fixed function. The
grader builds the same lab from the id the notebook holds, so it knows each case's truth without
trusting anything the learner's process computes.

Every case trains the same small float64 classifier with hand-written data parallelism (rank 0's
initial weights broadcast, one gradient all-reduce per step, ``DistributedSampler`` order), except
the uneven-inputs case, which uses torch's DDP because its fix is ``Join``. A correct version of
every case gives what one process computes on the global batch: :func:`reference` computes that.
"""

from __future__ import annotations

import hashlib
import io
import linecache
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["DebuggingLab", "Case", "FAMILIES", "WORLD", "make_data", "make_model", "broadcast_parameters",
           "average_gradients", "read_shard", "slow_save", "on_step", "reference"]

WORLD = 3  # ranks of every case (3 on 2 cores is oversubscribed, and fine for models this small)
FAMILIES = ("hang", "divergence", "averaging", "data order", "uneven inputs", "checkpoint race")
PARAMETERS = ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")


# --------------------------------------------------------------------------- building blocks (all correct)

def make_data(config: dict) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """The whole training set: float64 inputs ``x`` (n x features) and int64 labels ``y``."""
    import torch

    g = torch.Generator().manual_seed(config["seed"])
    x = torch.randn(config["n"], config["features"], generator=g, dtype=torch.float64)
    w = torch.randn(config["features"], config["classes"], generator=g, dtype=torch.float64)
    y = (x @ w + 0.5 * torch.randn(config["n"], config["classes"], generator=g, dtype=torch.float64)).argmax(1)
    return x, y


def make_model(config: dict) -> "torch.nn.Module":  # noqa: F821
    """Linear - Tanh - Linear - Tanh - Linear, float64; parameters named 0.*, 2.*, 4.*."""
    import torch
    from torch import nn

    torch.manual_seed(config["seed"] + 1)
    h = config["hidden"]
    return nn.Sequential(nn.Linear(config["features"], h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(),
                         nn.Linear(h, config["classes"])).double()


def broadcast_parameters(model: Any) -> None:
    """Give every rank rank 0's initial weights: one broadcast per parameter."""
    import torch.distributed as dist

    for p in model.parameters():
        dist.broadcast(p.data, src=0)


def average_gradients(params: list) -> None:
    """Average the ``.grad`` of ``params`` over the ranks: one all-reduce (sum) of them all, then / world."""
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def read_shard(config: dict, rank: int) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """Rank ``rank``'s own file of the uneven-inputs case: ``config["shard_sizes"][rank]`` samples."""
    x, y = make_data(config)
    start = sum(config["shard_sizes"][:rank])
    return x[start:start + config["shard_sizes"][rank]], y[start:start + config["shard_sizes"][rank]]


def slow_save(obj: Any, path: str, seconds: float = 0.5) -> None:
    """``torch.save`` onto a slow disk (think of a network file system): the file exists, half
    written, for ``seconds`` before the rest arrives."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        time.sleep(seconds)
        f.write(data[len(data) // 2:])


def on_step(step: int, model: Any, batch: list, loss: Any) -> None:
    """The callback slot every case calls after each optimizer step; does nothing. Pass your own to
    ``lab.broken(n, on_step=...)`` to attach a tool (a divergence detector, a per-rank log) without
    editing the function. It runs on every rank, so it may call collectives."""


# --------------------------------------------------------------------------- the six broken functions

_HEADER = '''\
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler
from dpcourse.debugging_lab import make_data, make_model, broadcast_parameters, average_gradients, read_shard, slow_save
from dpcourse.debugging_lab import on_step  # a callback slot for your tools; it does nothing by default


'''

_LOOP = '''\
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    step = 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
'''

_START = '''\
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
'''

_STEP = '''\
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
            on_step(step, model, idx, loss)
'''

_RETURN = '''\
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}
'''

_LOG_OPS = {  # in this order: the variant draws an index
    "all_reduce": ("ALLREDUCE", '''\
            if rank == {rank} and (step + 1) % {every} == 0:  # this rank logs the mean loss over the ranks
                mean = loss.detach().reshape(1).clone()
                dist.all_reduce(mean)
                print(f"step {{step}}: mean loss {{mean.item() / world:.4f}}")
'''),
    "broadcast": ("BROADCAST", '''\
            if rank == {rank} and (step + 1) % {every} == 0:  # this rank tells the others its loss
                news = loss.detach().reshape(1).clone()
                dist.broadcast(news, src={rank})
                print(f"step {{step}}: loss {{news.item():.4f}}")
'''),
    "all_gather": ("ALLGATHER", '''\
            if rank == {rank} and (step + 1) % {every} == 0:  # this rank collects every rank's loss for its log
                losses = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
                dist.all_gather(losses, loss.detach().reshape(1))
                print(f"step {{step}}: losses {{[round(t.item(), 4) for t in losses]}}")
'''),
}


def _hang(v: dict) -> str:
    log = _LOG_OPS[v["op"]][1].format(rank=v["rank"], every=v["every"])
    return _START + _LOOP + _STEP + log + "            step += 1\n" + _RETURN


def _divergence(v: dict) -> str:
    return (_START.replace("    opt =", f'''\
    frozen = list(model[{v["layer"]}].parameters())
    for p in frozen:                     # train the other layers alone for the first steps
        p.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt =''') + _LOOP + f'''\
            if step == {v["step"]}:                   # ...then train layer {v["layer"]} too
                for p in frozen:
                    p.requires_grad_(True)
''' + _STEP.replace("average_gradients(list(model.parameters()))", "average_gradients(trained)")
            + "            step += 1\n" + _RETURN)


def _averaging(v: dict) -> str:
    k = v["layer"]
    if v["kind"] == "twice":
        head = f'''\
            for p in model[{k}:].parameters():          # the head, added later, is averaged on its own
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
                p.grad /= world
'''
    else:
        head = f'''\
            for p in model[{k}:].parameters():          # the head, added later, is summed on its own
                dist.all_reduce(p.grad)
'''
    step = _STEP.replace("            average_gradients(list(model.parameters()))\n",
                         f"            average_gradients(list(model[:{k}].parameters()))\n" + head)
    return _START + _LOOP + step + "            step += 1\n" + _RETURN


def _data_order(v: dict) -> str:
    loop = _LOOP
    if v["kind"] == "no set_epoch":
        loop = loop.replace("        sampler.set_epoch(epoch)\n", "")
    else:
        loop = loop.replace('seed=config["seed"])', 'seed=config["seed"] + rank)  # a shuffle of its own')
    return _START + loop + _STEP + "            step += 1\n" + _RETURN


def _uneven(v: dict) -> str:
    return '''\
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank = dist.get_rank()
    x, y = read_shard(config, rank)      # every rank reads its own file
    model = make_model(config)
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    for epoch in range(config["epochs"]):
        for start in range(0, len(y), config["batch_size"]):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x[start:start + config["batch_size"]]),
                                               y[start:start + config["batch_size"]])
            loss.backward()
            opt.step()
            on_step(start // config["batch_size"], model, list(range(start, start + config["batch_size"])), loss)
''' + _RETURN


def _checkpoint(v: dict) -> str:
    loop_end = f'''\
            step += 1
        # end of the epoch: one rank saves a checkpoint, and every rank reloads it (does resuming work?)
        if rank == {v["rank"]}:
            slow_save({{"model": model.state_dict(), "epoch": epoch}}, config["checkpoint"])
        state = torch.load(config["checkpoint"], weights_only=True)
        model.load_state_dict(state["model"])
        loaded.append(state["epoch"])
'''
    ret = '    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "loaded": loaded}\n'
    return _START + "    loaded = []\n" + _LOOP + _STEP + loop_end + ret


_SOURCES: dict[str, Callable[[dict], str]] = {
    "hang": _hang, "divergence": _divergence, "averaging": _averaging, "data order": _data_order,
    "uneven inputs": _uneven, "checkpoint race": _checkpoint,
}


# --------------------------------------------------------------------------- variants and their truth

@dataclass
class Case:
    """One broken function: its number in the learner's lab, family, variant, config and source."""

    number: int
    family: str
    variant: dict
    config: dict
    source: str
    truth: dict = field(default_factory=dict)


def _base(seed: int, steps_per_epoch: int = 3, epochs: int = 2) -> dict:
    return {"seed": seed, "n": WORLD * 4 * steps_per_epoch, "features": 8, "classes": 3, "hidden": 16,
            "batch_size": 4, "epochs": epochs, "lr": 0.2}


def _variant(family: str, rng: random.Random, seed: int) -> tuple[dict, dict, dict]:
    """(variant, config, truth) of ``family``."""
    ranks_all = list(range(WORLD))
    if family == "hang":
        v = {"op": rng.choice(list(_LOG_OPS)), "rank": rng.randrange(WORLD), "every": rng.choice([2, 3, 4])}
        config = _base(seed)
        # broadcast_parameters: one collective per parameter (numbers 0..5 in DETAIL's count), then one
        # all-reduce per step (6 + step); the extra call comes right after step every-1's all-reduce
        seq = len(PARAMETERS) + v["every"]
        truth = {"family": family, "ranks": [v["rank"]], "op": _LOG_OPS[v["op"]][0], "seq": seq,
                 "collective_seq_id": seq + 1}
    elif family == "divergence":
        v = {"layer": rng.choice([0, 2, 4]), "step": rng.choice([2, 3, 4])}
        config = _base(seed)
        truth = {"family": family, "ranks": ranks_all[1:], "step": v["step"], "parameter": f"{v['layer']}.weight"}
    elif family == "averaging":
        v = {"layer": rng.choice([2, 4]), "kind": rng.choice(["twice", "never"])}
        config = _base(seed)
        truth = {"family": family, "ranks": ranks_all, "parameter": f"{v['layer']}.weight"}
    elif family == "data order":
        v = {"kind": rng.choice(["no set_epoch", "seed per rank"]), "steps_per_epoch": rng.choice([3, 4, 5])}
        config = _base(seed, v["steps_per_epoch"])
        truth = ({"family": family, "ranks": ranks_all, "step": v["steps_per_epoch"]} if v["kind"] == "no set_epoch"
                 else {"family": family, "ranks": ranks_all[1:], "step": 0})
    elif family == "uneven inputs":
        short, fewer, more = rng.randrange(WORLD), rng.choice([2, 3]), rng.choice([1, 2])
        sizes = [4 * (fewer + more)] * WORLD
        sizes[short] = 4 * fewer
        v = {"rank": short, "batches": fewer}
        config = {**_base(seed, epochs=1), "n": sum(sizes), "shard_sizes": sizes}
        truth = {"family": family, "ranks": [short], "step": fewer}
    else:
        v = {"rank": rng.randrange(WORLD)}
        config = {**_base(seed), "checkpoint": "checkpoint.pt"}
        truth = {"family": family, "ranks": [r for r in ranks_all if r != v["rank"]]}
    return v, config, truth


def _seed_of(student_id: str) -> int:
    if not isinstance(student_id, str) or not student_id.strip():
        raise ValueError("STUDENT_ID must be your student id or e-mail, as a non-empty string: "
                         "STUDENT_ID = \"ada@example.edu\".")
    return int.from_bytes(hashlib.sha256(student_id.strip().lower().encode()).digest()[:8], "big")


class DebuggingLab:
    """The six cases of exercise 11 for one learner, numbered 1..6 in an order of their own."""

    def __init__(self, student_id: str):
        self.student_id = student_id
        seed = _seed_of(student_id)
        rng = random.Random(seed)
        families = list(FAMILIES)
        rng.shuffle(families)
        self.cases: dict[int, Case] = {}
        for number, family in enumerate(families, 1):
            v, config, truth = _variant(family, rng, seed % 10_000 + number)
            source = f"def broken_{number}(config):\n" + _SOURCES[family](v)
            self.cases[number] = Case(number, family, v, config, source, truth)

    def _case(self, number: int) -> Case:
        if number not in self.cases:
            raise ValueError(f"the lab has cases 1 to {len(self.cases)}, not {number!r}.")
        return self.cases[number]

    def source(self, number: int) -> str:
        """The code of ``broken_<number>`` (print it, copy it into your fixed function)."""
        return _HEADER + self._case(number).source

    def config(self, number: int, checkpoint: str | None = None) -> dict:
        """A copy of case ``number``'s config; ``checkpoint`` sets the checkpoint path where there is one."""
        config = dict(self._case(number).config)
        if checkpoint is not None and "checkpoint" in config:
            config["checkpoint"] = checkpoint
        return config

    def broken(self, number: int, on_step: Callable | None = None) -> Callable[[dict], Any]:
        """``broken_<number>`` itself, ready for ``dpcourse.launch(fn, WORLD, config)``. Its source is
        registered with ``linecache``, so tracebacks and the launcher's stuck-rank report show its lines.
        ``on_step(step, model, batch, loss)``, if given, is called on every rank after each step."""
        filename = f"<broken_{number} of {self.student_id}>"
        source = self.source(number)
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict[str, Any] = {"__name__": f"broken_{number}"}
        exec(compile(source, filename, "exec"), namespace)
        if on_step is not None:
            namespace["on_step"] = on_step
        return namespace[f"broken_{number}"]

    def __repr__(self) -> str:
        return f"DebuggingLab({self.student_id!r}): cases 1-{len(self.cases)}, {WORLD} ranks each"


# --------------------------------------------------------------------------- what a correct version computes

def reference(case: Case, world: int = WORLD) -> dict[str, "numpy.ndarray"]:  # noqa: F821
    """One process, the same math as a correct version of ``case`` on ``world`` ranks: the global
    batch each step (``DistributedSampler``'s shuffle, ``world`` x batch size), the case's freezing
    schedule, and for uneven inputs what ``Join`` computes (a rank out of data adds zero gradients;
    the mean divides by the whole world)."""
    import torch
    from torch import nn

    config = case.config
    x, y = make_data(config)
    model = make_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    batch = config["batch_size"]
    if case.family == "uneven inputs":
        shards = [read_shard(config, r) for r in range(world)]
        for _ in range(config["epochs"]):
            for start in range(0, max(config["shard_sizes"]), batch):
                opt.zero_grad()
                total = sum(nn.functional.cross_entropy(model(sx[start:start + batch]), sy[start:start + batch])
                            for sx, sy in shards if start < len(sy))
                (total / world).backward()
                opt.step()
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    frozen = list(model[case.variant["layer"]].parameters()) if case.family == "divergence" else []
    for p in frozen:
        p.requires_grad_(False)
    step = 0
    for epoch in range(config["epochs"]):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(config["seed"] + epoch))
        for start in range(0, len(y), world * batch):
            if frozen and step == case.variant["step"]:
                for p in frozen:
                    p.requires_grad_(True)
            idx = order[start:start + world * batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
