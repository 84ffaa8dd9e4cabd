"""Learning aids for lesson 09: sharded data parallelism (ZeRO and FSDP)."""

TITLE = "Lesson 09 - sharded data parallelism: ZeRO by hand, then FSDP"

SUMMARY = {
    "Basic": (
        "DDP keeps a full copy of the parameters, gradients and optimizer state on every rank. ZeRO "
        "removes that redundancy: each rank keeps only its 1/N shard of the optimizer state (ZeRO-1), "
        "also of the gradients (ZeRO-2), and also of the parameters (ZeRO-3, which PyTorch calls FSDP). "
        "It is still the same training as one process; what changes is the memory per rank and the "
        "communication."
    ),
    "Medium": (
        "With mixed-precision Adam a parameter costs 2 bytes (bf16 weight) + 2 (bf16 gradient) + 12 "
        "(fp32 master copy and two moments): the optimizer state is 12 of the 16 bytes. ZeRO-1 replaces "
        "DDP's all-reduce by its two halves: a reduce-scatter gives each rank the summed gradient of its "
        "shard, the rank steps that shard with its shard of the state, and an all-gather returns the "
        "updated parameters to everyone. The bytes on the wire equal an all-reduce's, so the saving is "
        "free. ZeRO-2 reduce-scatters layer by layer during backward; ZeRO-3 also all-gathers each "
        "layer's parameters before its forward and again before its backward, which is 1.5 times DDP's "
        "traffic. Activations are never sharded, which is why ZeRO saves less than people expect."
    ),
    "Detailed": (
        "ZeroOptimizer puts all parameters in one flat buffer (each parameter a view into it), padded "
        "to N equal shards so that any parameter count works. Each rank cuts its shard at parameter "
        "boundaries into pieces and hands them, in their parameters' groups, to the wrapped torch "
        "optimizer, so elementwise optimizers (SGD with momentum, Adam, AdamW) take exactly the "
        "unsharded step and per-group options reach the right elements. Measured: optimizer state per "
        "rank falls as 1/N while parameters and gradients stay full. FSDP2's fully_shard makes each "
        "layer a unit of DTensor shards; reshard_after_forward=True is ZeRO-3, False keeps the "
        "gathered parameters until backward ends (the ZeRO-2 strategy). In the alpha-beta model a ring "
        "all-gather of S bytes takes (N-1) alpha + (N-1)/N S beta; ZeRO-3's extra all-gather hides "
        "behind compute only when the per-rank batch B exceeds B* = (N-1)/N F beta / 2 (F = compute "
        "rate), so ZeRO-3 fits inside fast nodes and hurts over slow links. torch.distributed.checkpoint "
        "saves one file per rank plus metadata and reloads on a different number of ranks."
    ),
}

TERMS = {
    "ZeRO": "Zero Redundancy Optimizer: shard training state across data-parallel ranks instead of replicating it",
    "ZeRO-1": "shard the optimizer state; gradients and parameters stay full on every rank",
    "ZeRO-2": "shard the optimizer state and the gradients (reduce-scatter during backward)",
    "ZeRO-3 / FSDP": "shard parameters too: all-gather each layer just before it is used, free it after",
    "reduce-scatter": "a collective that sums tensors over ranks and leaves each rank one shard of the sum",
    "all-gather": "a collective that concatenates every rank's shard so that all ranks hold the whole tensor",
    "optimizer state": "what an optimizer keeps between steps: momentum, Adam's two moments, fp32 master weights",
    "master weights": "an fp32 copy of bf16 parameters, kept by the optimizer so that small updates are not lost",
    "flat buffer": "all parameters laid end to end in one tensor, so that one collective moves them all",
    "DTensor": "a tensor whose pieces live on several ranks; FSDP2's parameters are DTensors sharded on dim 0",
    "DCP": "torch.distributed.checkpoint: sharded checkpoints, one file per rank, reloadable on other world sizes",
}

QUIZ = [
    {
        "q": "Mixed-precision Adam, Ψ parameters, 8 ranks. How many bytes per rank does ZeRO-1 need for "
             "parameters, gradients and optimizer state?",
        "choices": ["16Ψ", "2Ψ + 2Ψ + 12Ψ/8 = 5.5Ψ", "16Ψ/8 = 2Ψ", "2Ψ + (2Ψ + 12Ψ)/8 = 3.75Ψ"],
        "answer": 1,
        "why": "ZeRO-1 shards only the 12Ψ of optimizer state; bf16 parameters and gradients stay full.",
    },
    {
        "q": "Why does ZeRO-1 cost no extra communication compared with DDP?",
        "choices": [
            "It sends compressed gradients",
            "An all-reduce is a reduce-scatter followed by an all-gather; ZeRO-1 runs the same two halves "
            "with the optimizer step in between",
            "It only communicates every other step",
            "It uses broadcast instead of all-reduce",
        ],
        "answer": 1,
        "why": "Both move 2(N-1)/N of the gradient's bytes per rank.",
    },
    {
        "q": "How many all-gathers of each layer does ZeRO-3 (FSDP with reshard_after_forward=True) run per step?",
        "choices": ["None", "One, before forward", "Two: before forward and again before backward",
                    "One per optimizer parameter group"],
        "answer": 2,
        "why": "The gathered parameters are freed after forward, and backward needs them again.",
    },
    {
        "q": "A model with 10 parameters is sharded over 4 ranks by a flat buffer. What happens to the "
             "two elements that do not divide evenly?",
        "choices": [
            "Training fails: the parameter count must divide by the world size",
            "The buffer is padded to 12 so every shard has 3 elements; the padding is never stepped",
            "Rank 0 takes the extra elements without padding",
            "They are dropped",
        ],
        "answer": 1,
        "why": "Reduce-scatter and all-gather need equal shards; the padding just rides along.",
    },
    {
        "q": "When is ZeRO-3's extra all-gather most likely to make a step slower than ZeRO-2?",
        "choices": [
            "Large batches per rank on an NVLink node",
            "Small batches per rank over a slow Ethernet link",
            "Never: FSDP always overlaps it",
            "Only on CPUs",
        ],
        "answer": 1,
        "why": "It hides behind compute only when B > B* = (N-1)/N F beta / 2; slow links (large beta) "
               "and small batches push B below B*.",
    },
]

MNEMONIC = (
    "**Scatter, step, gather.** Reduce-scatter the gradients, step only your shard, all-gather the "
    "parameters. Then: 1 shards the state, 2 the gradients, 3 the weights, and 3 gathers twice."
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("With mixed-precision Adam a parameter costs sixteen bytes, and twelve of them are optimizer state.",
     "Like a library where every book comes with three thick binders of notes: the notes, not the books, fill "
     "the shelves."),
    ("DDP gives every rank a full copy of that state; ZeRO gives each rank only its own share of it.",
     "Like four flatmates who each used to buy the whole cookbook collection, and now each keeps one shelf of it."),
    ("An all-reduce is a reduce-scatter followed by an all-gather. ZeRO-1 puts the optimizer step in between, "
     "so it saves memory without sending a single extra byte.",
     "Like a relay race in which each runner repaints their own leg of the track while holding the baton."),
    ("ZeRO-3 shards the parameters too, so each layer is gathered before forward and again before backward: "
     "half as much traffic again as DDP.",
     "Like borrowing a ladder from the neighbours each time you need it, instead of owning one: less clutter, more "
     "trips."),
    ("The extra gathering is free only while it hides behind compute: with small batches or slow links it shows.",
     "Like a kitchen that fetches each ingredient as the cook needs it: fine while the cook is slower than the "
     "runner."),
    ("A sharded checkpoint is one file per rank plus a map, so it can be reloaded on a different number of ranks.",
     "Like a jigsaw shipped in labelled bags with a picture on the lid: any number of people can share the bags out "
     "again."),
]

CARDS = [
    ("Mixed-precision Adam: bytes per parameter for weights, gradients and optimizer state?",
     "2 (bf16 weights) + 2 (bf16 gradients) + 12 (fp32 master, momentum, variance) = 16."),
    ("Which collectives does one ZeRO-1 step use, and how do their bytes compare with DDP's all-reduce?",
     "One reduce-scatter of the gradients and one all-gather of the parameters: together exactly an all-reduce's "
     "bytes."),
    ("What does ZeRO-2 shard that ZeRO-1 does not, and what does ZeRO-3 add?",
     "ZeRO-2 also shards the gradients; ZeRO-3 (FSDP) also shards the parameters, gathering each layer when it is "
     "used."),
    ("Why is the flat buffer padded to N * ceil(numel / N)?",
     "Reduce-scatter and all-gather need equal shards; the padding rides along and is never stepped."),
    ("What does ZeRO never shard, and why does that matter?",
     "The activations: every rank computes its own samples, so they stay whatever the world size."),
]
