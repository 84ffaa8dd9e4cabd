"""Learning aids for lesson 02: why averaging shard gradients gives the full-batch step."""

TITLE = "Lesson 02 - the mini-batch math behind data parallelism"

SUMMARY = {
    "Basic": (
        "The gradient of a **mean** loss over a batch equals the average of the gradients over equal "
        "**shards** of that batch. So k workers, each on its own shard, can average their gradients "
        "and take the very step one worker would take on the whole batch, and their copies of the "
        "model stay identical. **Gradient accumulation** uses the same fact on one device: run "
        "micro-batches one after another and add up their (scaled) gradients."
    ),
    "Medium": (
        "Numerically the identity holds up to rounding: about 1e-8 in float32 and 1e-17 in float64, "
        "because the additions happen in a different order. Replicas that apply the same averaged "
        "gradient stay bit-identical, so weights never need re-synchronising. The identity breaks "
        "when a sample's loss depends on other samples (BatchNorm's batch statistics), when "
        "randomness is drawn differently (dropout masks; identical seeds on every worker even "
        "copy the same masks), when the loss is a sum (averaging then divides the gradient by k), "
        "and when shards differ in size (a plain average over-weights the small shard)."
    ),
    "Detailed": (
        "For per-sample gradients g_i, grad(1/B sum l_i) = 1/B sum g_i; grouping the sum by shards "
        "gives sum_r (n_r/B) G_r, where G_r is shard r's mean-loss gradient. With equal n_r this is "
        "the plain mean of the G_r, which is what DDP computes (sum across ranks, divided by the "
        "world size); with unequal n_r only the size-weighted mean is exact, so samplers give every "
        "rank the same count. A sum-reduced loss needs a sum, not a mean. BatchNorm can be made "
        "global with SyncBatchNorm (extra communication) or replaced by a per-sample norm such as "
        "LayerNorm or GroupNorm; DDP broadcasts rank 0's buffers (running statistics) by default. "
        "Dropout is unbiased either way but not reproducible across layouts; seed initial weights "
        "alike and the in-training randomness per rank. When comparing a parallel run with a "
        "single-device run, differences at rounding level mean 'identical'; anything far above "
        "it means a bug."
    ),
}

TERMS = {
    "shard": "the slice of the global batch that one worker processes",
    "global batch": "all samples whose gradients are averaged into one update, across every worker",
    "micro-batch": "a slice of a batch processed on its own during gradient accumulation",
    "gradient accumulation": "adding the gradients of several micro-batches before one optimizer step",
    "replica": "one worker's copy of the model; all replicas hold the same weights",
    "mean vs sum reduction": "whether a loss averages or adds the per-sample losses; it decides average vs sum of "
                             "gradients",
    "SyncBatchNorm": "BatchNorm whose statistics are computed over all workers' samples together",
    "rounding-level difference": "a difference of about 1e-7 relative (float32) or 1e-16 (float64), from summation "
                                 "order alone",
}

QUIZ = [
    {
        "q": "Four workers each compute the gradient of a mean loss on 32 samples and average them. Compared with one "
             "worker on all 128:",
        "choices": ["the gradient is 4x larger", "the gradient is 4x smaller",
                    "the gradient is the same, up to rounding", "the gradient is a noisier estimate"],
        "answer": 2,
        "why": "Grouping the per-sample mean by equal shards changes only the order of the additions.",
    },
    {
        "q": "The loss uses reduction='sum' and the workers average their gradients. What happens as you add workers?",
        "choices": ["nothing changes", "the effective learning rate shrinks by the number of workers",
                    "training diverges at once", "BatchNorm statistics change"],
        "answer": 1,
        "why": "Averaging k shard sums gives the full sum divided by k: like dividing the learning rate by k.",
    },
    {
        "q": "A batch of 100 is split 10 + 90 and the two shard gradients are averaged plainly. Which samples are "
             "over-weighted?",
        "choices": ["the 90 in the big shard", "the 10 in the small shard", "none, the average is exact",
                    "only the first sample"],
        "answer": 1,
        "why": "Each small-shard sample gets weight 1/20 instead of 1/100; weight shards by n_r/B instead.",
    },
    {
        "q": "Every worker calls torch.manual_seed(0) just before training with dropout. What goes wrong?",
        "choices": ["nothing", "each worker draws the same dropout masks for its shard, so the noise is copied",
                    "the weights start different", "the gradients become zero"],
        "answer": 1,
        "why": "Same seed, same stream: sample i of every shard is dropped the same way. Seed per rank for training "
               "randomness.",
    },
    {
        "q": "Which layer makes a shard's gradient depend on the other samples in its shard?",
        "choices": ["Linear", "ReLU", "LayerNorm", "BatchNorm"],
        "answer": 3,
        "why": "BatchNorm normalises with the batch's mean and variance; LayerNorm uses each sample alone.",
    },
]

MNEMONIC = (
    "*Mean of means is the mean, if the slices are the same size.*\n\n"
    "```\n  grad(batch) = (n1*g1 + n2*g2 + ... + nk*gk) / B      equal n:  = mean(g1..gk)\n```"
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("With a mean loss and equal shards, the average of the shard gradients is the full-batch gradient, "
     "up to rounding.",
     "Like averaging class grades: the mean of equal-sized classes' averages is the school's average."),
    ("Replicas that start equal and apply the same averaged gradient stay exactly equal; nothing needs to "
     "resynchronise the weights.",
     "Like identical twins following the same recipe card to the letter: their cakes cannot come out different."),
    ("A sum loss averaged over k workers shrinks the gradient k times, as if the learning rate were divided by k.",
     "Like splitting a bill: adding everyone's share and then dividing by the number of tables again pays too little."),
    ("BatchNorm, dropout and unequal shards break the equality; weighting shards by their size repairs the last one.",
     "A small class's average should not count as much as a big class's: weight it by its number of students."),
]

CARDS = [
    ("The loss uses reduction='sum' and the gradients are averaged over 4 workers. What goes wrong?",
     "The averaged gradient is the full-batch sum-gradient divided by 4: like a 4 times smaller learning rate. "
     "Use a mean loss and average, or a sum loss and sum."),
    ("dist.all_reduce(grad) uses op SUM by default. What else is needed for the average gradient?",
     "Divide by the world size (DDP does this for you)."),
    ("Shards of 60 and 40 samples, mean loss on each. Is the plain average of the two gradients the "
     "full-batch gradient?",
     "No: weight each shard by its share, 0.6 and 0.4. The plain average over-counts the small shard's samples."),
]
