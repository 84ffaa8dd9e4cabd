"""Learning aids for lesson 11: when data parallelism goes wrong, a field guide."""

TITLE = "Lesson 11 - When data parallelism goes wrong: a field guide"

SUMMARY = {
    "Basic": (
        "Most data-parallel bugs come from one rank doing something the others do not. Some hang, some crash "
        "far from the cause, and some quietly train the wrong model. For each kind there is a tool that "
        "names the rank, the step and the collective: read what the tool says before you guess."
    ),
    "Medium": (
        "A hang from a collective called on one rank only shows in the launcher's stuck-rank report as two "
        "ranks waiting in different collectives; TORCH_DISTRIBUTED_DEBUG=DETAIL turns it into an error that "
        "names the sequence number and each rank's operation, and the flight recorder (on gloo too, in this "
        "torch) lists what every rank enqueued. Replicas that drift apart are caught by a checksum per "
        "parameter compared across ranks every k steps. Averaging twice leaves the ranks in agreement, so "
        "compare one step with one process. Data-order bugs show in per-rank logs of what each step reads. "
        "Uneven inputs need Join; checkpoint races need an atomic write and a barrier."
    ),
    "Detailed": (
        "Each family was run for real. A rank-0-only barrier hung until the timeout; the stuck-rank report "
        "showed rank 0 in the barrier and rank 1 in the gradient all-reduce. DETAIL raised at once, at the "
        "sequence number that six parameter broadcasts plus one all-reduce per step predict; the flight "
        "recorder, which counts from one, put its first disagreement one number higher. Unfreezing a layer "
        "without adding it to the averaged list made the divergence detector report that layer's weight at "
        "the unfreeze step; checking every four steps only bracketed it. ReduceOp.AVG followed by a division "
        "made every update exactly one over world size of the right one while the replicas agreed. Without "
        "set_epoch, epoch one repeated epoch zero; a seed per rank made the shards overlap. Without Join, the "
        "rank with more data hung in backward and the short rank was missing from the report; with Join the "
        "result matched one process summing the ranks that still had data and dividing by the world. A "
        "reader without a barrier crashed on a half-written checkpoint; an atomic rename and a barrier fixed it."
    ),
}

TERMS = {
    "mismatched collectives": "ranks calling different collectives (or a different number of them): a hang or a crash",
    "stuck-rank report": "the launcher's stacks of every rank still running when the timeout hits",
    "TORCH_DISTRIBUTED_DEBUG=DETAIL": "checks each collective's fingerprint across ranks first and raises at "
                                      "the first mismatch",
    "sequence number": "the position of a collective in its process group's order; DETAIL counts from 0, the "
                       "flight recorder from 1",
    "flight recorder": "a per-rank ring buffer of the last collectives enqueued (TORCH_FR_BUFFER_SIZE), dumped "
                       "when a job hangs",
    "divergence detector": "per-parameter checksums all-gathered every k steps; names the first step and "
                           "parameter where ranks split",
    "double averaging": "dividing by the world size twice (ReduceOp.AVG and a division, or a scaled loss on top "
                        "of DDP)",
    "Join": "lets a rank that ran out of data shadow the others' collectives until every rank is done",
    "checkpoint race": "a rank reading a checkpoint another rank is still writing; fixed by an atomic rename "
                       "and a barrier",
}

QUIZ = [
    {"q": "The stuck-rank report shows rank 0 in dist.barrier() and rank 1 in an all-reduce. What is the bug?",
     "choices": ["A slow network", "A collective called on one rank only", "Too small a timeout", "A deadlock "
                                                                                                  "inside gloo"],
     "answer": 1,
     "why": "Two ranks waiting in two different collectives: they will never meet. Look for an `if rank == ...` "
            "around a collective."},
    {"q": "DETAIL reports SequenceNumber=9. What number does the flight recorder give the same collective?",
     "choices": ["9", "10", "8", "It cannot know"],
     "answer": 1,
     "why": "DETAIL counts a group's collectives from 0, the flight recorder from 1."},
    {"q": "All ranks hold identical parameters, yet the model differs from one process on the global batch. "
          "Which family?",
     "choices": ["Divergence between ranks", "Wrong averaging", "A hang", "A checkpoint race"],
     "answer": 1,
     "why": "Every rank makes the same mistake, so they agree; only a comparison with one process shows the factor."},
    {"q": "A divergence detector that checks every 4 steps reports a split at step 8. When did the ranks split?",
     "choices": ["At step 8", "After step 4 and by step 8", "Before step 4", "At step 0"],
     "answer": 1,
     "why": "It last saw them agree at step 4; the split happened somewhere after that check and by step 8."},
    {"q": "Rank 1 has fewer batches than rank 0 under DDP. Which rank does the stuck-rank report list?",
     "choices": ["Rank 1", "Rank 0", "Both", "Neither: DDP handles it"],
     "answer": 1,
     "why": "Rank 1 finished its loop; rank 0 waits in backward for an all-reduce rank 1 will never join. Use Join."},
]

MNEMONIC = ("**H**ang, **D**rift, **A**verage, **O**rder, **U**neven, **R**ace - *Hard Days Are Over Use Reports*: "
            "the report first (stuck stacks, DETAIL, flight recorder), then checksums, one-process comparison "
            "and logs.")

KEY_POINTS = [
    ("A collective completes only when every rank calls the same one; a collective inside an if on one rank hangs.",
     "Like a meeting that starts only when everyone is in the room: one person waiting in the wrong room keeps "
     "everybody waiting."),
    ("The stuck-rank report shows where each rank waits; two ranks in two different collectives is a mismatch.",
     "Like asking every lost hiker for their position: two of them at different trailheads explains why they "
     "never met."),
    ("TORCH_DISTRIBUTED_DEBUG equals DETAIL compares each collective's fingerprint first and names the first "
     "one that differs.",
     "Like checking everyone's ticket at the gate instead of discovering the wrong train at the last stop."),
    ("A checksum per parameter, compared across ranks every few steps, names the step and the layer where "
     "replicas split.",
     "Like comparing the copies of a document page by page until the first page that differs."),
    ("If all ranks agree but differ from one process, the averaging is wrong, usually by a factor of the world size.",
     "Like every clerk in an office making the same conversion mistake: they agree with each other, and are all "
     "wrong."),
]

CARDS = [
    ("Rank 0 logs and calls dist.barrier() inside `if rank == 0`. What happens?",
     "A hang (or an error under DETAIL): rank 0 waits in the barrier while the others wait in the next all-reduce."),
    ("How do you find the step and layer where replicas split?",
     "A divergence detector: per-parameter checksums all-gathered every k steps; the first step and parameter "
     "where a rank "
     "differs from rank 0."),
    ("The replicas agree but training is slower than one process with the same global batch. First suspect?",
     "Averaging twice (ReduceOp.AVG and a division, or a loss divided by the world size on top of DDP)."),
    ("How do you make a checkpoint safe to read from other ranks?",
     "One rank writes to a temporary name and os.replace's it; a barrier before anyone reads, and another "
     "before the next write."),
]
