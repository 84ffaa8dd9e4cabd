"""Learning aids for lesson 08: how far data parallelism scales, and what stops it."""

TITLE = "Lesson 08 - scaling: from 2 workers to thousands of GPUs"

SUMMARY = {
    "Basic": (
        "Adding workers makes training faster only while each step's **computation** is large compared "
        "with its **communication** (the gradient all-reduce). **Strong scaling** splits a fixed global "
        "batch over more workers, so each one has less to compute while communication stays; **weak "
        "scaling** keeps each worker's batch fixed, so the global batch grows. **Scaling efficiency** = "
        "speedup / number of workers. A slow worker (a straggler) slows everyone, because every step "
        "ends with a collective that waits for all."
    ),
    "Medium": (
        "A step costs compute time plus the part of the all-reduce that is not hidden behind the backward "
        "pass. The **alpha-beta model** prices one message as alpha (latency) + bytes x beta "
        "(seconds per byte); a ring all-reduce of n bytes over p workers costs about 2(p-1) alpha + "
        "2(p-1)/p n beta, nearly independent of p for large n, while a tree costs about 2 log2(p) "
        "(alpha + n beta): trees win for small messages and many workers, rings for large messages. "
        "Fit alpha and beta to measured all-reduce times, add measured compute, and you can predict "
        "step time and efficiency on hardware you do not have. Gradient **buckets** trade the latency "
        "of many small messages against the exposed tail of one big one. Weak scaling grows the "
        "global batch, and keeping accuracy then needs the **linear learning-rate scaling** rule with "
        "a **warmup**."
    ),
    "Detailed": (
        "Per step, with P parameters, b bytes per gradient element and a per-worker batch B, compute "
        "grows with B while the all-reduce moves about 2 b P bytes per worker whatever B is: the "
        "**compute-to-communication ratio** grows with B and with the FLOPs per parameter. Inside a "
        "node, NVLink offers hundreds of GB/s; between nodes, InfiniBand offers tens of GB/s per GPU, so "
        "past 8 GPUs the slower link sets beta and efficiency drops at the node boundary, then slowly "
        "with the latency term 2(p-1) alpha of a ring, which is why libraries switch to trees (log p "
        "latency) at scale. Overlap (DDP starts reducing a bucket as soon as its gradients exist) hides "
        "communication up to the length of the backward pass; what remains is the last bucket plus any "
        "excess. Very large global batches need a learning rate scaled with the batch and ramped up over "
        "the first steps, and eventually stop improving per step. Stragglers make the step time the "
        "maximum over ranks, so the slowest machine rules. Beyond data parallelism, memory becomes the "
        "limit: **ZeRO** and **FSDP** shard optimizer state, gradients and parameters across ranks instead "
        "of replicating them, paying with extra all-gathers and reduce-scatters."
    ),
}

TERMS = {
    "strong scaling": "fixed global batch (fixed total work) split over more workers; ideal step time falls as 1/p",
    "weak scaling": "fixed work per worker, so the global batch grows with the number of workers; ideal step time "
                    "stays flat",
    "scaling efficiency": "speedup divided by the number of workers (1.0 = perfect)",
    "speedup baseline": "what a speedup is measured against; on a CPU, one process with 1 thread and one with all "
                        "cores' threads are different rivals",
    "compute-to-communication ratio": "time a step spends computing divided by the time its gradient exchange takes",
    "alpha-beta model": "message time = alpha (fixed latency) + bytes x beta (inverse bandwidth)",
    "ring vs tree all-reduce": "ring: latency grows with p, bandwidth-optimal; tree: latency grows with log p",
    "gradient bucket": "a group of gradients reduced in one message, sent as soon as all of them are ready",
    "linear LR scaling with warmup": "multiply the learning rate by k when the batch grows k-fold, reaching it "
                                     "gradually over the first steps",
    "straggler": "one slow worker; since collectives wait for everyone, every step takes as long as the slowest rank",
    "ZeRO / FSDP": "shard optimizer state, gradients and parameters over ranks instead of copying them to every rank",
}

QUIZ = [
    {
        "q": "You double the workers and keep the global batch fixed. Which kind of scaling is that, and what happens "
             "to each worker's compute per step?",
        "choices": ["weak scaling; it stays the same", "strong scaling; it halves",
                    "strong scaling; it doubles", "weak scaling; it halves"],
        "answer": 1,
        "why": "Strong scaling divides a fixed amount of work, so each worker computes half as much while the gradient "
               "exchange stays the same size.",
    },
    {
        "q": "A ring all-reduce of n bytes over p workers costs about 2(p-1) alpha + 2(p-1)/p n beta. What dominates "
             "at p = 4096 for a small message?",
        "choices": ["the bandwidth term", "the latency term 2(p-1) alpha", "neither: both vanish",
                    "the compute time"],
        "answer": 1,
        "why": "The latency term grows linearly with p while the bandwidth term stays near 2 n beta; that is why trees "
               "take over for small messages at scale.",
    },
    {
        "q": "One of 8 ranks computes 50 % slower than the others. Roughly how long do the other seven ranks' steps "
             "take?",
        "choices": ["as before", "1/8 longer", "as long as the slow rank's step", "twice as long"],
        "answer": 2,
        "why": "The gradient all-reduce cannot finish until every rank contributes, so every rank waits for the "
               "slowest.",
    },
    {
        "q": "On an idle 2-core CPU, why can 2 ranks x 1 thread at best come close to 1 process x 2 threads?",
        "choices": ["gloo is slower than NCCL",
                    "the process's intra-op threads already use both cores, and it pays no all-reduce",
                    "two processes cannot run at the same time", "DDP computes the gradients twice"],
        "answer": 1,
        "why": "Both use the same two cores; adding ranks moves the compute around instead of adding any. On a cluster "
               "each rank brings its own GPU.",
    },
    {
        "q": "Weak scaling from 1 to 16 workers with batch 64 each: what should you do to the learning rate?",
        "choices": ["keep it", "divide it by 16", "multiply it by 16, ramped up over a warmup",
                    "multiply it by 16 from the first step"],
        "answer": 2,
        "why": "The global batch grew 16-fold; linear scaling keeps the per-sample step the same, and the warmup "
               "avoids the early instability of a large rate.",
    },
]

MNEMONIC = (
    "**Compute must outweigh talk.** Picture a see-saw: compute per worker on one side, the "
    "all-reduce on the other. Strong scaling takes weight off the compute side; faster GPUs take it off "
    "too; only bigger batches or bigger models per worker put it back.\n\n"
    "```\n"
    "  compute  ###########          efficiency = speedup / p\n"
    "  talk     ####                 ring: 2(p-1) a + 2 n b      tree: 2 log2(p) (a + n b)\n"
    "           ^ the slowest rank sets the pace\n"
    "```"
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("Strong scaling splits a fixed global batch; weak scaling keeps each worker's batch. The all-reduce "
     "moves the model's size either way, so strong scaling runs out of efficiency first.",
     "Like splitting one pizza among more friends: everyone eats less, but the time to pass the plates stays the "
     "same."),
    ("The ratio of compute to communication decides the efficiency, and it grows with the batch per worker.",
     "A long meeting justifies a long commute; a five-minute meeting does not."),
    ("A larger global batch needs a proportionally larger learning rate, usually with a warmup.",
     "Fewer, longer strides need longer legs, and a few careful first steps."),
    ("Every step waits for the slowest worker, so one slow rank slows them all.",
     "A convoy moves at the speed of its slowest lorry."),
    ("ZeRO shards the optimizer state, then the gradients, then the parameters; activations and the batch "
     "are split as in any data parallelism.",
     "Like a shared library: instead of every member owning every book, each keeps a shelf and lends it when needed."),
]

CARDS = [
    ("What do ZeRO stages 1, 2 and 3 shard across the data-parallel ranks?",
     "Stage 1: optimizer state. Stage 2: optimizer state and gradients. Stage 3 (FSDP): those and the "
     "parameters. Each rank keeps 1/N of what is sharded; activations are not sharded."),
    ("Does ZeRO-3 split a layer's computation across ranks, like tensor parallelism?",
     "No. Every rank still runs the whole model on its own shard of the batch; it all-gathers each layer's "
     "parameters just before using them."),
    ("Strong scaling from 1 to 8 workers: does the all-reduce get smaller?",
     "No: it always moves the model's gradient bytes; only each worker's compute shrinks, so efficiency falls."),
]
