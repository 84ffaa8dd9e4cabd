"""Learning aids for lesson 03: processes, point-to-point messages and collectives."""

TITLE = "Lesson 03 - processes that talk: ranks, messages and collectives"

SUMMARY = {
    "Basic": (
        "A distributed job is several separate processes. Each knows its **rank** (its number, from 0) "
        "and the **world size** (how many there are). They share no memory, so tensors travel as "
        "messages: `send`/`recv` between two ranks, or **collectives** that every rank calls together. "
        "`all_reduce` gives every rank the sum of everyone's tensor: that is how data-parallel workers "
        "agree on one gradient."
    ),
    "Medium": (
        "The **backend** moves the bytes: gloo for CPU tensors over TCP, NCCL for NVIDIA GPUs. "
        "`send`/`recv` block; `isend`/`irecv` return a request to `wait()` on, so a rank can send and "
        "receive at once. The collectives: broadcast (one to all), reduce (sum to one), all_reduce "
        "(sum to all), all_gather (everyone's pieces to all), reduce_scatter (each rank keeps one "
        "slice of the sum) and barrier (wait for everyone). all_reduce equals reduce_scatter followed "
        "by all_gather. Collectives are matched by the order in which ranks call them: if two ranks "
        "call them in different orders, both wait forever."
    ),
    "Detailed": (
        "A receiver must allocate a tensor of the right shape and dtype first: a message carries bytes, "
        "not their description. A collective returns when this rank's part is done, so every "
        "collective waits for the slowest rank, which the barrier experiment makes visible. On reduce "
        "only the destination's result is defined. A deadlock shows up as silence, not as an error: "
        "bound every run with a timeout (the launcher's wall clock, and the process group's own "
        "`timeout=`), print where each rank is stuck (faulthandler, py-spy), and turn on "
        "`TORCH_DISTRIBUTED_DEBUG=DETAIL`, which makes each collective first compare the operation "
        "and shapes across ranks and raise a clear mismatch error. That setting is read when "
        "torch.distributed starts up and adds an exchange per call, so it is for debugging only."
    ),
}

TERMS = {
    "rank": "a process's number in the group, 0 to world size - 1",
    "world size": "how many processes take part",
    "process group": "the set of ranks that call collectives together, with a backend and a timeout",
    "backend": "the library that moves the bytes: gloo (CPU, TCP) or NCCL (NVIDIA GPUs)",
    "point-to-point": "one rank sends, one named rank receives (send/recv, isend/irecv)",
    "collective": "an operation every rank of the group calls, in the same order",
    "all_reduce": "every rank ends with the element-wise sum (or max, ...) of all ranks' tensors",
    "reduce_scatter": "the sum is split into slices and rank r keeps slice r",
    "all_gather": "every rank ends with every rank's tensor, in rank order",
    "deadlock": "ranks waiting for each other forever, e.g. collectives called in different orders",
}

QUIZ = [
    {
        "q": "Rank 1 calls `dist.recv(x, src=0)`. What must be true of `x` beforehand?",
        "choices": ["nothing: recv creates the tensor", "it must have the sender's shape and dtype",
                    "it must hold zeros", "it must be on rank 0"],
        "answer": 1,
        "why": "A message carries only bytes; the receiver provides a buffer of the right size and type.",
    },
    {
        "q": "Which collective do data-parallel workers use to agree on one gradient?",
        "choices": ["broadcast", "reduce", "all_reduce", "barrier"],
        "answer": 2,
        "why": "Every rank needs the summed gradient, so the sum must arrive at all ranks.",
    },
    {
        "q": "reduce_scatter followed by all_gather gives the same result as ...",
        "choices": ["broadcast", "all_reduce", "reduce", "nothing useful"],
        "answer": 1,
        "why": "Each rank first gets one slice of the sum, then all the slices are shared: the full sum everywhere.",
    },
    {
        "q": "Rank 0 calls broadcast then all_reduce; rank 1 calls all_reduce then broadcast. What happens?",
        "choices": ["an immediate error", "the calls are reordered automatically",
                    "both ranks wait forever unless a timeout ends it", "it works, more slowly"],
        "answer": 2,
        "why": "Collectives are matched by order; each rank waits for messages the other never sends.",
    },
    {
        "q": "In the barrier experiment rank 3 arrives 0.6 s after rank 0. When does rank 0 leave?",
        "choices": ["at once", "after about 0.6 s, when rank 3 arrives", "after 0.2 s", "never"],
        "answer": 1,
        "why": "Nobody leaves a barrier before the last rank has entered it.",
    },
]

MNEMONIC = (
    "**Same calls, same order, every rank.** Broadcast sends one out; reduce brings sums in; "
    "all_reduce does both; reduce_scatter + all_gather = all_reduce."
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("Processes share no memory: everything they agree on travels as explicit messages through a backend.",
     "Like colleagues in different offices: nothing on your desk reaches theirs unless you post it."),
    ("A receiver must allocate a tensor of the right shape and type before the message arrives.",
     "Like holding out a box of the right size: the courier brings the contents, not the box."),
    ("All-reduce gives everyone the sum, and it equals a reduce-scatter followed by an all-gather.",
     "Like a potluck: each guest finishes one dish from everyone's ingredients, then every dish is shared round."),
    ("Collectives are matched by order: when ranks call them in different orders they wait forever.",
     "Like a dance where partners count steps: if one starts with the waltz and the other with the tango, "
     "both stand still waiting."),
]

CARDS = [
    ("After reduce_scatter on 4 ranks, what does each rank hold?",
     "Its own quarter of the element-wise sum; together the ranks hold the whole sum."),
    ("Rank 0 calls broadcast then all_reduce; rank 1 calls all_reduce then broadcast. What happens?",
     "A hang: collectives are matched by order, so each waits for messages the other never sends."),
]
