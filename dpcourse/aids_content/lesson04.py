"""Learning aids for lesson 04: the naive and the ring all-reduce, the alpha-beta model, bandwidths."""

TITLE = "Lesson 04 - all-reduce, written by hand"

SUMMARY = {
    "Basic": (
        "An all-reduce can be built from plain messages. The **naive** way sends every tensor to rank 0, "
        "adds them there and sends the sum back: simple, but rank 0 does all the work and the time "
        "grows with the number of ranks. The **ring** cuts the tensor into one chunk per rank and "
        "passes chunks between neighbours, everyone at once: each rank sends about twice the tensor "
        "size in total, however many ranks there are."
    ),
    "Medium": (
        "The ring is a **reduce-scatter** (N-1 steps in which each chunk collects one more rank's "
        "contribution, until each rank owns one complete chunk) followed by an **all-gather** (N-1 "
        "steps that pass the complete chunks round). Each rank sends 2(N-1)/N of the data, the "
        "minimum any all-reduce needs, which is why NCCL and gloo use rings for large tensors. The "
        "**alpha-beta model** prices a message of b bytes at alpha + beta*b: alpha (latency) "
        "dominates small tensors, beta (inverse bandwidth) large ones. Fitted to measurements it "
        "predicts both algorithms' curves."
    ),
    "Detailed": (
        "Naive: T = 2(N-1)(alpha + beta*S); ring: T = 2(N-1)(alpha + beta*S/N). The ring's 2(N-1) "
        "sequential steps make it latency-bound for small tensors, where libraries switch to trees. "
        "**Algorithm bandwidth** is S/T; **bus bandwidth** multiplies it by 2(N-1)/N so that it can be "
        "compared with a link's speed independently of N. On one CPU machine every transfer is a "
        "memory copy through the kernel's TCP stack, so memory copy bandwidth is the ceiling, and "
        "ranks that share cores do not get independent links: the model's assumptions break, and "
        "the measured curves show where. A careful ring posts isend and irecv together, receives "
        "into a preallocated buffer, adds in place on a flat contiguous view, and handles sizes that "
        "do not divide by N (uneven or empty chunks)."
    ),
}

TERMS = {
    "naive all-reduce": "gather every tensor at one rank, sum there, send the sum back to all",
    "ring all-reduce": "reduce-scatter then all-gather around a ring of neighbours, one chunk per step",
    "reduce-scatter phase": "N-1 steps after which each rank holds the full sum of one chunk",
    "all-gather phase": "N-1 steps that copy each complete chunk to every rank",
    "bandwidth-optimal": "sends the fewest bytes possible per rank: 2(N-1)/N of the data for all-reduce",
    "alpha (latency)": "fixed cost of one message, whatever its size",
    "beta": "cost per byte; 1/beta is the bandwidth",
    "algorithm bandwidth": "tensor size divided by all-reduce time",
    "bus bandwidth": "algorithm bandwidth times 2(N-1)/N, comparable with a link's speed",
}

QUIZ = [
    {
        "q": "With 8 ranks and a tensor of S bytes, how many bytes does each rank send in a ring all-reduce?",
        "choices": ["S/8", "2S", "7S/4", "14S"],
        "answer": 2,
        "why": "2(N-1)/N * S = 14/8 S = 7S/4.",
    },
    {
        "q": "After the reduce-scatter phase of a ring on N ranks, what does each rank hold?",
        "choices": ["the full sum", "the complete sum of exactly one chunk", "nothing new", "rank 0's tensor"],
        "answer": 1,
        "why": "Each chunk has passed N-1 ranks and collected all contributions at one rank; all-gather shares it.",
    },
    {
        "q": "For a 1 KB tensor, which term of the alpha-beta model dominates?",
        "choices": ["alpha, the per-message latency", "beta, the per-byte cost", "neither",
                    "the number of chunks squared"],
        "answer": 0,
        "why": "beta*b is tiny for 1 KB; the fixed cost of each of the 2(N-1) messages dominates.",
    },
    {
        "q": "Why report bus bandwidth rather than algorithm bandwidth when comparing with hardware?",
        "choices": ["it is always larger",
                    "it counts the bytes each rank must actually move, so it does not depend on N",
                    "it includes the memory bandwidth", "nccl-tests cannot measure algorithm bandwidth"],
        "answer": 1,
        "why": "busbw = algbw * 2(N-1)/N: the data rate per rank, to be set against the link speed.",
    },
]

MNEMONIC = (
    "**Pass right, receive left, add; then pass right, receive left, copy.** "
    "N-1 steps twice, 2(N-1)/N of the data each."
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("The naive all-reduce funnels every tensor through rank zero, so its time grows with the number of ranks.",
     "Like a class where every student hands homework to one teacher, who grades it all and hands it back."),
    ("The ring cuts the tensor into one chunk per rank and passes chunks between neighbours, all at once.",
     "Like a bucket brigade: everyone passes a bucket to the right at the same moment, so no one stands idle."),
    ("Each rank in a ring sends two times N minus one over N of the tensor, less than twice the tensor, "
     "however many ranks there are.",
     "Adding people to a bucket brigade does not make anyone carry more water."),
    ("A message costs a fixed latency plus its size over the bandwidth: latency rules small tensors, "
     "bandwidth rules large ones.",
     "Like a lorry: every trip costs the drive, whatever the load; only a big load makes the loading time matter."),
    ("Bus bandwidth counts the bytes each rank really moved, so it can be compared with a link's speed.",
     "A courier's speed is the parcels she carried per hour, not how soon your one parcel arrived."),
]

CARDS = [
    ("A float32 gradient has 25 million elements. How many bytes does it hold, and which number goes "
     "into a bandwidth formula?",
     "100 MB (elements x element_size, 4 bytes each; 2 for bf16). Bandwidth formulas take bytes, not "
     "elements: mixing them up is off by 4x."),
    ("4 ranks all-reduce a 100 MB tensor in 0.1 s. Algorithm bandwidth? Bus bandwidth?",
     "Algorithm bandwidth = 100 MB / 0.1 s = 1 GB/s; bus bandwidth = 1 GB/s x 2(N-1)/N = 1.5 GB/s."),
    ("Which bandwidth do you compare with a link's data-sheet speed: algorithm or bus bandwidth?",
     "Bus bandwidth: it counts the bytes each rank must actually move, so it does not depend on N."),
    ("How many bytes does each rank send in a ring all-reduce of S bytes on N ranks?",
     "2(N-1)/N x S: just under 2S, whatever N is. The naive version's rank 0 moves 2(N-1) x S."),
]
