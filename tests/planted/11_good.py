# exercise: 11
# expect: full
# A learner's graded cells: their id, the diagnoses the lesson's tools gave, and the six fixed functions.
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler
from dpcourse.debugging_lab import average_gradients, broadcast_parameters, make_data, make_model, read_shard, slow_save

STUDENT_ID = "planted@example.edu"


def diagnosis():
    return {
        1: {"family": "data order", "ranks": [0, 1, 2], "step": 5},
        2: {"family": "averaging", "ranks": "all", "parameter": "2.weight"},
        3: {"family": "divergence", "ranks": [1, 2], "step": 4, "parameter": "0.weight"},
        4: {"family": "uneven inputs", "ranks": [2], "step": 2},
        5: {"family": "hang", "ranks": [2], "op": "ALLREDUCE", "seq": 10},
        6: {"family": "checkpoint race", "ranks": [0, 2]},
    }


def fixed_1(config):
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_2(config):
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))  # the head too: averaged once, like the rest
            opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_3(config):
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    frozen = list(model[0].parameters())
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    step = 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            if step == 4:
                for p in frozen:
                    p.requires_grad_(True)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients([p for p in model.parameters() if p.requires_grad])  # every trained layer, every step
            opt.step()
            step += 1
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_4(config):
    rank = dist.get_rank()
    x, y = read_shard(config, rank)
    model = make_model(config)
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    with Join([ddp]):  # a rank out of data shadows the others' all-reduces until everyone is done
        for epoch in range(config["epochs"]):
            for start in range(0, len(y), config["batch_size"]):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(ddp(x[start:start + config["batch_size"]]),
                                                   y[start:start + config["batch_size"]])
                loss.backward()
                opt.step()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_5(config):
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    step = 0
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
            if (step + 1) % 4 == 0:  # every rank joins the all-reduce; one of them prints
                mean = loss.detach().reshape(1).clone()
                dist.all_reduce(mean)
                if rank == 2:
                    print(f"step {step}: mean loss {mean.item() / world:.4f}")
            step += 1
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def fixed_6(config):
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = make_data(config)
    model = make_model(config)
    broadcast_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    loaded = []
    sampler = DistributedSampler(range(len(y)), num_replicas=world, rank=rank, shuffle=True, seed=config["seed"])
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for start in range(0, len(order), config["batch_size"]):
            idx = order[start:start + config["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            average_gradients(list(model.parameters()))
            opt.step()
        if rank == 1:
            slow_save({"model": model.state_dict(), "epoch": epoch}, config["checkpoint"])
        dist.barrier()  # nobody reads before the writer has finished
        state = torch.load(config["checkpoint"], weights_only=True)
        model.load_state_dict(state["model"])
        loaded.append(state["epoch"])
        dist.barrier()  # and the writer never overwrites it while someone still reads
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "loaded": loaded}
