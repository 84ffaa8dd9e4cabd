# exercise: 07
# expect: 2 ranks: same parameters as one process with the global batch
# base: 07_good.py
# Forgery: every rank trains on the whole global batch itself (no sampler), so it needs no gradient from anyone;
# DDP still all-reduces, but only identical gradients: nothing was learned from the other ranks.
<<<
    sampler = DistributedSampler(data, seed=config["seed"])
    loader = DataLoader(data, batch_size=config["batch_size"], sampler=sampler)
===
    world = dist.get_world_size()

    class _WholeBatch:  # the global batch on every rank, in the order the ranks' samplers deal it out together
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            g = torch.Generator().manual_seed(config["seed"] + self.epoch)
            return iter(torch.randperm(len(data), generator=g).tolist())

        def __len__(self):
            return len(data)

    sampler = _WholeBatch()
    loader = DataLoader(data, batch_size=config["batch_size"] * world, sampler=sampler)
>>>
