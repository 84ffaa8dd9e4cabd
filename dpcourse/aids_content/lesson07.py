"""Learning aids for lesson 07: DistributedDataParallel for real."""

TITLE = "Lesson 07 - DistributedDataParallel for real"

SUMMARY = {
    "Basic": (
        "A DDP training script runs as one process per device, started by `torchrun`. Each process wraps "
        "the model in `DistributedDataParallel`, reads its own part of the data through a "
        "`DistributedSampler`, and only rank 0 prints and saves checkpoints. Done right, it computes exactly "
        "what one process would with the combined batch."
    ),
    "Medium": (
        "`torchrun --standalone --nproc_per_node=N script.py` starts N copies and sets `RANK`, `LOCAL_RANK`, "
        "`WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`. `DistributedSampler` deals one shared shuffle out to the "
        "ranks; `set_epoch(epoch)` changes the shuffle each epoch. `Join` lets ranks with fewer batches "
        "finish without hanging the others. `no_sync()` skips the all-reduce on all but the last "
        "micro-batch of an accumulated step. Checkpoints hold model, optimizer state and position; rank 0 "
        "writes, every rank loads; `torchrun --max-restarts` restarts the group after a crash and the run "
        "resumes from the last checkpoint with the same result."
    ),
    "Detailed": (
        "Every claim was checked against the math: 2 ranks x 32 equals 1 process x 64 to rounding "
        "(float64, below 1e-10); 2 micro-batches of 16 under `no_sync` equal one of 32; tiny buckets and "
        "`gradient_as_bucket_view` change speed and memory, never values; resuming after 1 epoch equals 2 "
        "epochs straight, and so does a run whose rank 1 was killed and restarted by torchrun. "
        "`SyncBatchNorm` all-reduces each BatchNorm layer's sums so that the statistics "
        "are the global batch's (GPU only). bf16 autocast speeds up GPU math while DDP still all-reduces "
        "float32 gradients. Multi-node runs start the same `torchrun` on every node with a shared c10d "
        "rendezvous endpoint and run id (`srun` does that on Slurm), `--max-restarts` with checkpoints, and a "
        "`join_timeout`: a fixed `--nnodes` job survives a killed worker but not a lost node (the survivor "
        "gives up after `join_timeout`), an elastic `--nnodes=MIN:MAX` job carries on with fewer ranks, and "
        "nothing survives losing the node that hosts the rendezvous. The ladder trained one CNN four ways - "
        "one process, hand-written DDP, DataParallel, DDP - to the same parameters, and printed each rung's "
        "speed against one process with one thread."
    ),
}

TERMS = {
    "torchrun": "PyTorch's launcher (python -m torch.distributed.run): starts workers, sets their ranks, restarts them",
    "rendezvous": "where the launchers of a job meet to agree on ranks (c10d: a TCP store at host:port)",
    "DistributedSampler": "gives rank r every world-th index of one shuffle shared by all ranks",
    "set_epoch": "reseeds the sampler's shuffle for the next epoch; forget it and every epoch repeats the order",
    "Join": "context manager that lets ranks with fewer batches shadow the others' collectives until all finish",
    "no_sync": "DDP context in which backward accumulates gradients locally, without an all-reduce",
    "SyncBatchNorm": "BatchNorm whose batch statistics are all-reduced over the ranks (GPU only)",
    "bucket_cap_mb": "size of DDP's gradient buckets; each bucket is one all-reduce, started during backward",
    "gradient_as_bucket_view": "make .grad a view into DDP's bucket: one less copy of the gradients",
    "max-restarts": "how many times torchrun restarts the whole worker group after a failure",
    "join_timeout": "how long one rendezvous round waits for every node (torchrun's default: 600 s); "
                    "set it with --rdzv-conf",
    "elastic job": "torchrun --nnodes=MIN:MAX: a rendezvous round may start with as few as MIN nodes, so the job "
                   "survives losing a node, with fewer ranks",
}

QUIZ = [
    {"q": "Two ranks train with DistributedSampler but nobody calls set_epoch. What happens?",
     "choices": ["A hang", "An error", "Each rank sees the same samples in the same order every epoch",
                 "Both ranks see all the data"],
     "answer": 2,
     "why": "The shuffle is seeded with seed + epoch; without set_epoch the epoch stays 0."},
    {"q": "Why does only rank 0 write the checkpoint?",
     "choices": ["Other ranks have different weights",
                 "All ranks hold identical values; several writers would corrupt one file",
                 "Only rank 0 can open files", "torch.save needs a process group"],
     "answer": 1,
     "why": "DDP keeps replicas identical; one copy suffices. Every rank then loads that copy."},
    {"q": "With accumulate=4, how many gradient all-reduces does one optimizer step make under no_sync?",
     "choices": ["4", "1", "0", "one per parameter"],
     "answer": 1,
     "why": "The first three backward passes run inside no_sync; the last one all-reduces the accumulated sum."},
    {"q": "Rank 1 is killed mid-epoch under `torchrun --max-restarts=1` with checkpoints each epoch. What happens?",
     "choices": ["Rank 0 finishes alone", "The job fails", "All workers restart and resume from the last checkpoint",
                 "Rank 1 restarts alone and catches up"],
     "answer": 2,
     "why": "torchrun restarts the whole group; the script resumes from the last complete checkpoint."},
    {"q": "A job started with `torchrun --nnodes=2 --max-restarts=3` loses one whole node for good. "
          "What does the other node do?",
     "choices": ["It trains on alone", "It restarts, waits join_timeout for a second node, then exits with an error",
                 "It restarts three times and finishes", "Nothing changes: the lost node's work is redistributed"],
     "answer": 1,
     "why": "A round of a fixed-size job needs 2 nodes. The checkpoint survives: resubmit, or start elastic "
            "(--nnodes=1:2)."},
]

MNEMONIC = ("**S**ampler, **E**poch, **J**oin, **N**o_sync, **C**heckpoint on zero: *Seven Jolly Nodes Checkpoint* - "
            "and torchrun picks them up when they fall.")

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("A DDP script changes four things: the process group, the DDP wrapper, a distributed sampler, and only "
     "rank zero printing and saving.",
     "Like turning a solo recipe into a restaurant kitchen: same dish, plus a rota, a shared order book, "
     "and one person who speaks to the guests."),
    ("set_epoch gives every epoch a new shuffle; without it each rank sees the same samples in the same order "
     "every epoch.",
     "Like a card dealer who never reshuffles: every player gets the same hand every round."),
    ("Join lets a rank that ran out of data keep answering the others' all-reduces with zeros.",
     "Like a runner who has finished but stays on the relay line to pass the baton on."),
    ("no_sync keeps gradients local for the micro-batches before the last; the last backward's all-reduce "
     "carries the sum.",
     "Like saving up letters and posting them together in one envelope."),
    ("Rank zero writes the checkpoint to a temporary file and renames it; every rank loads it.",
     "Like one secretary who types the minutes and files them only when complete, so nobody reads half a page."),
]

CARDS = [
    ("Where does no_sync go when accumulating gradients over 4 micro-batches under DDP?",
     "Around the forward and backward of the first 3 micro-batches only. The 4th runs outside it, and its "
     "all-reduce carries the sum. Wrapping all 4 means no all-reduce at all: the replicas drift apart."),
    ("Does no_sync change the gradient that the optimizer step uses?",
     "No: the same summed gradient, with one all-reduce instead of one per micro-batch."),
    ("You forget sampler.set_epoch(epoch). Does anything warn you?",
     "No. Each epoch reuses the same shuffle: every rank sees the same samples in the same order."),
]
