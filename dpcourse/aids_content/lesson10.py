"""Learning aids for lesson 10: gradient compression with DDP communication hooks."""

TITLE = "Lesson 10 - fewer bytes: gradient compression"

SUMMARY = {
    "Basic": (
        "When the network is slow, the all-reduce of the gradients takes most of a training step, and the "
        "only way to make it faster is to send fewer bytes. DDP lets you replace its all-reduce with a "
        "communication hook: cast the gradients to 16 bits (half the bytes), approximate each gradient "
        "matrix with a low-rank product (PowerSGD), or send only the largest entries (top-k). The last two "
        "need error feedback: keep what was not sent and add it to the next step. Compression pays on slow "
        "links and can cost time on fast ones, because it adds computation."
    ),
    "Medium": (
        "A hook `hook(state, bucket)` receives a `GradBucket` (`bucket.buffer()` is this rank's flat "
        "gradients) and returns a future whose value is the averaged bucket; the identity hook (scale by "
        "1/N, all-reduce) reproduces default DDP bit for bit. bf16 keeps float32's exponent range and loses "
        "precision only; fp16 keeps more digits but flushes small gradients to zero (hence loss scaling). "
        "PowerSGD does one power-iteration step per matrix, P = orth(M Q), Q = M^T P, and all-reduces P and "
        "Q: (n + m) r numbers instead of n m. Top-k picks different indices on every rank, so it cannot use "
        "all-reduce, which adds position by position; it all-gathers (value, index) pairs instead."
    ),
    "Detailed": (
        "Bytes per rank per step: a ring all-reduce of n float32 values sends 2 (N-1)/N * 4n; bf16 half of "
        "that; PowerSGD the same formula over (n + m) r per compressed matrix plus the small tensors it "
        "leaves uncompressed; top-k an all-gather of (N-1) k pairs, which grows with N and pays for the "
        "indices too. Error feedback keeps the residual e = (g + e) - C(g + e) per rank and bucket; without "
        "it, the directions a compressor drops are never learned, and the lesson's curves show slower "
        "convergence. The alpha-beta model gives each method's step time as c_m + K_m alpha + S_m / B, with "
        "c_m its computation, K_m its messages and S_m its bytes, so compression beats plain DDP below the "
        "crossover bandwidth B* = (S_0 - S_m) / ((c_m - c_0) + (K_m - K_0) alpha). With several buckets on "
        "gloo, torch's PowerSGD hook starts collectives from future callbacks, which can interleave "
        "differently on different ranks; the lesson uses one bucket. Across nodes, real systems mostly "
        "communicate in bf16 and overlap; stronger compression is used where links are slow."
    ),
}

TERMS = {
    "communication hook": "a function DDP calls per gradient bucket instead of its all-reduce; returns a future "
                          "of the average",
    "GradBucket": "what a hook receives: the flat buffer of this rank's gradients of a bucket, its index and "
                  "parameters",
    "bfloat16": "16-bit float with float32's 8 exponent bits and 7 mantissa bits: full range, about 3 digits",
    "float16": "16-bit float with 5 exponent bits and 10 mantissa bits: more digits, but small values underflow",
    "PowerSGD": "low-rank gradient compression: one power-iteration step per matrix, P and Q all-reduced",
    "top-k sparsification": "send only the k entries of largest magnitude, with their indices",
    "error feedback": "keep what compression did not send (the residual) and add it to the next step's gradient",
    "compression ratio": "bytes of the uncompressed all-reduce divided by the bytes a method sends",
    "crossover bandwidth": "the link bandwidth above which a compression method makes a step slower, not faster",
}

QUIZ = [
    {
        "q": "What must the future returned by a DDP communication hook hold when it completes?",
        "choices": [
            "One tensor shaped like bucket.buffer(), holding the average of the gradients over all ranks",
            "The sum of the gradients over all ranks",
            "A list with one tensor per parameter",
            "Nothing: DDP reads the result from bucket.buffer()",
        ],
        "answer": 0,
        "why": "DDP copies the future's tensor into the parameters' .grad; averaging is the hook's job.",
    },
    {
        "q": "Why does top-k sparsification use all-gather instead of all-reduce?",
        "choices": [
            "All-gather sends fewer bytes than all-reduce",
            "Each rank picks different indices, and all-reduce adds tensors position by position",
            "All-reduce cannot carry integer indices",
            "gloo does not support all-reduce of small tensors",
        ],
        "answer": 1,
        "why": "Position j of rank 0's values and position j of rank 1's are different gradient entries.",
    },
    {
        "q": "Training with fp16 gradients stalls when the loss is multiplied by 1e-6, while bf16 and fp32 are "
             "unaffected. Why?",
        "choices": [
            "fp16 has fewer mantissa bits than bf16",
            "fp16's 5 exponent bits cannot represent such small values: they become zero",
            "The learning rate is too large for fp16",
            "All-reduce in fp16 overflows",
        ],
        "answer": 1,
        "why": "Below about 6e-8 float16 has nothing but zero; bf16 keeps float32's exponent range.",
    },
    {
        "q": "What does error feedback add to this step's gradient before compressing it?",
        "choices": [
            "The gradient of the last step",
            "What the last step's compression did not send",
            "The average of all ranks' residuals",
            "Random noise of the size of the compression error",
        ],
        "answer": 1,
        "why": "Nothing is lost, only delayed: over many steps the applied updates track the true gradients.",
    },
    {
        "q": "A method sends 50x fewer bytes than fp32 DDP but adds 4 ms of computation per step. On which "
             "links does it pay?",
        "choices": [
            "On every link, since it sends fewer bytes",
            "On no link, since it adds computation",
            "On links slow enough that the wire time saved exceeds 4 ms (below a crossover bandwidth)",
            "Only when there are more than two ranks",
        ],
        "answer": 2,
        "why": "The saving (S_0 - S_m)/B shrinks as B grows; the computation costs the same on every link.",
    },
]

MNEMONIC = (
    "**Cast, factor, pick, remember, compare.** "
    "Cast to bf16 for a free half; factor into P and Q; pick the top k over all-gather; "
    "remember the residual; compare the time saved on the wire with the time spent compressing."
)

KEY_POINTS = [
    ("A communication hook gets this rank's bucket of gradients and must return a future of their average; "
     "the identity hook reproduces DDP exactly.",
     "Like replacing the postal service: any courier will do, as long as the same parcel arrives."),
    ("Casting to bfloat16 halves the bytes for almost no computation; float16 loses small gradients.",
     "Like writing prices rounded to the nearest cent: fine for groceries, useless for fractions of a cent."),
    ("PowerSGD sends two thin matrices instead of each gradient matrix, and error feedback carries what they missed.",
     "Like describing a photo by its main strokes, and adding back next time what the sketch left out."),
    ("Top-k sends only the largest entries with their indices; since every rank picks different ones, it needs "
     "all-gather, not all-reduce.",
     "Like each reporter filing only their top stories: the editor must know which stories, not just how long "
     "they are."),
    ("Compression pays below a crossover bandwidth, where the wire time saved exceeds the time spent compressing.",
     "Like packing a suitcase tightly: worth it for a flight with strict limits, not for a drive to the next street."),
]

CARDS = [
    ("Top-k keeps k of n float32 entries with int32 indices on 2 ranks. Below what k does it send fewer bytes "
     "than the fp32 all-reduce?",
     "k < n/2: the all-gather sends k (4 + 4) bytes per rank, the all-reduce 2 (N-1)/N * 4n = 4n bytes."),
    ("Why does the identity hook multiply by 1/N instead of dividing by N?",
     "DDP multiplies by 1/N; g / 3 and g * (1/3) can differ in the last bit, so only the multiplication is "
     "bit-identical."),
]
