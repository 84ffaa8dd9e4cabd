"""Learning aids for lesson 05: data-parallel training written by hand."""

TITLE = "Lesson 05 - data-parallel training by hand"

SUMMARY = {
    "Basic": (
        "Every rank keeps a full copy of the model and trains on its own slice of each batch. "
        "Copies start equal (rank 0 broadcasts its parameters) and stay equal because, after "
        "`backward()`, every rank replaces its gradients by the average over all ranks before the "
        "optimizer steps. With equal slices that average *is* the full-batch gradient, so the "
        "result is the same training as one process on the whole batch."
    ),
    "Medium": (
        "The simplest version runs one all-reduce per parameter after backward: correct, but it "
        "pays a start-up cost per message and leaves the network idle during backward. Packing all "
        "gradients into one flat tensor cuts the message count to one per step. Gradient hooks "
        "(`register_post_accumulate_grad_hook`) and `all_reduce(..., async_op=True)` let "
        "communication start while backward is still computing earlier layers. Buckets of about "
        "`bucket_mb` megabytes, filled in the order gradients become ready (reverse registration "
        "order for most models), combine both ideas: few messages, and early ones."
    ),
    "Detailed": (
        "`BucketedDDP` broadcasts parameters and buffers at construction, assigns trainable "
        "parameters to buckets in reverse registration order, and from each hook counts down its "
        "bucket; a full bucket is flattened, divided by the world size and all-reduced "
        "asynchronously, strictly in bucket order so all ranks issue identical collective sequences. "
        "`finish_gradient_synchronization()` sends buckets that never filled (a parameter unused "
        "in this step), waits, and copies the averages back. Each bucket carries one 'had a "
        "gradient' flag per parameter, so a parameter unused on every rank keeps `grad=None` "
        "(optimizers then skip it, as in single-process training) without an extra collective. "
        "Frozen parameters are never reduced, a shared parameter is one tensor and is reduced once, "
        "and `no_sync()` turns the hooks off so that several backward passes accumulate locally "
        "and the next synchronised one averages the sum. On 2 CPU cores the overlap gains little, "
        "because computation and gloo's communication compete for the same cores."
    ),
}

TERMS = {
    "data parallelism": "every rank holds the whole model and processes a different part of each batch",
    "shard": "one rank's slice of the global batch",
    "broadcast": "a collective that copies one rank's tensor to all ranks; used once to start all replicas equal",
    "gradient averaging": "all-reduce the gradients (sum) and divide by the world size, after backward",
    "gradient hook": "a function autograd calls when a parameter's gradient is final for this backward pass",
    "asynchronous collective": "a collective started with async_op=True; it returns a work handle to wait() on later",
    "overlap": "running communication of finished gradients while backward still computes the others",
    "bucket": "a group of gradients flattened into one tensor and all-reduced as one message",
    "ready order": "the order in which gradients become final: roughly the reverse of the forward order",
    "no_sync": "a context in which backward passes accumulate gradients locally without communicating",
}

QUIZ = [
    {
        "q": "Why do the ranks end with identical parameters after many steps?",
        "choices": [
            "They all start from rank 0's parameters and apply the same averaged gradient every step",
            "Every step broadcasts rank 0's parameters to the others",
            "They use the same random seed for their data",
            "gloo checks the parameters after each optimizer step",
        ],
        "answer": 0,
        "why": "Equal start plus equal updates keeps the copies equal; no parameters travel after the first broadcast.",
    },
    {
        "q": "Two ranks get shards of 100 and 28 samples, each computes the mean loss on its shard, and the "
             "gradients are averaged. What goes wrong?",
        "choices": [
            "Nothing: the average of the gradients is still the full-batch gradient",
            "The samples of the smaller shard weigh more than those of the larger one",
            "The all-reduce hangs because the tensors have different sizes",
            "The optimizer takes two steps instead of one",
        ],
        "answer": 1,
        "why": "Each sample in the 28-sample shard carries weight 1/56 instead of 1/128: averaging means "
               "equals the full-batch mean only when the shards are equal.",
    },
    {
        "q": "Why must every rank start its bucket all-reduces in the same order?",
        "choices": [
            "Because gloo only supports one collective at a time",
            "Because collectives are matched by their position in each rank's sequence: out of order, "
            "ranks would add up different buckets or wait forever",
            "Because the optimizer needs the first layer's gradient first",
            "It does not matter; all-reduce is commutative",
        ],
        "answer": 1,
        "why": "The n-th collective on one rank pairs with the n-th on every other rank.",
    },
    {
        "q": "With `bucket_mb=None` (one bucket), when can the all-reduce start?",
        "choices": [
            "As soon as the last layer's gradient is ready",
            "Only after every gradient is ready, so nothing overlaps backward",
            "Before backward starts",
            "Never: one bucket is not allowed",
        ],
        "answer": 1,
        "why": "A bucket is sent when all its gradients are final; one bucket holds them all.",
    },
    {
        "q": "Inside `with model.no_sync():` you run two backward passes, then a third outside. How many "
             "bucket all-reduces happen in total (the model has 3 buckets)?",
        "choices": ["9", "6", "3", "0"],
        "answer": 2,
        "why": "Only the synchronised backward communicates: one all-reduce per bucket of the accumulated sum.",
    },
]

MNEMONIC = (
    "**Split, start equal, average, overlap, bucket.** "
    "Split the batch; broadcast once; average every step; send while backward runs; send in few, early buckets."
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("Data parallelism splits the batch, not the model, and broadcasts rank zero's parameters so that every "
     "rank starts equal.",
     "Like several choirs singing from photocopies of one score: copy the score once, then each choir sings its part."),
    ("Averaging the gradients after backward keeps the replicas equal forever.",
     "Like branch offices that all apply the same memo from head office: their rule books never diverge."),
    ("Gradients are ready one layer at a time, from the output back to the input, so communication can "
     "start while backward is still running.",
     "Like posting finished chapters of a book to the editor while you are still writing the first chapter."),
    ("Buckets balance few big messages against early starts; they are filled in the order gradients arrive.",
     "Like a delivery van that leaves as soon as it is full, instead of one trip per parcel or one trip at the end."),
    ("no_sync skips the all-reduce for the micro-batches before the last one; the last backward carries the sum.",
     "Like collecting receipts all week and sending one expense report on Friday."),
]

CARDS = [
    ("Why must every rank start its gradient buckets' all-reduces in the same order?",
     "Collectives are matched by order: a different order pairs up the wrong tensors (or hangs)."),
    ("With no_sync, which backward passes communicate when you accumulate over 4 micro-batches?",
     "Only the last: the first 3 run inside no_sync (gradients stay local), the 4th runs outside it and its "
     "all-reduce carries the sum of all 4."),
]
