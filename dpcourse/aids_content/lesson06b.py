"""Learning aids for lesson 06b: TensorFlow's MirroredStrategy."""

TITLE = "Lesson 06b - the same idea in TensorFlow: MirroredStrategy"

SUMMARY = {
    "Basic": (
        "TensorFlow's `MirroredStrategy` trains one Keras model on several devices of one machine: each "
        "device holds a copy of the variables and works on a slice of every batch. With 4 replicas the "
        "model ends with the same weights as with 1."
    ),
    "Medium": (
        "Variables created in `strategy.scope()` are mirrored (one copy per device). Each step, the global "
        "batch is split across the replicas, each computes gradients of its scaled loss, an all-reduce sums "
        "them, and every replica applies the same update. Without GPUs, "
        "`tf.config.set_logical_device_configuration` splits the CPU into logical devices for practice."
    ),
    "Detailed": (
        "Compared with PyTorch: like `DataParallel` it is one process, but the step runs as a traced graph "
        "(no GIL contention), variables are mirrored once rather than copied every step, and gradients are "
        "all-reduced like DDP's, with the optimizer running on every replica. It stays on one machine; "
        "`MultiWorkerMirroredStrategy` is the multi-machine variant, closer to DDP. Logical CPU devices "
        "share the same cores, so they show correctness, not speed: this lesson measured 4 replicas on 2 "
        "cores and compared the weights with 1 replica."
    ),
}

TERMS = {
    "MirroredStrategy": "TensorFlow's synchronous data parallelism over the devices of one machine",
    "mirrored variable": "a variable with one copy per replica, kept equal by identical updates",
    "replica": "one copy of the model and its step, on one device",
    "num_replicas_in_sync": "how many replicas a strategy runs in each step",
    "logical device": "a slice of a physical device that TensorFlow treats as a separate device",
    "strategy.scope()": "context in which created variables are distributed by the strategy",
}

QUIZ = [
    {"q": "Why must `set_logical_device_configuration` be called before anything else in TensorFlow?",
     "choices": ["It downloads drivers", "Devices are fixed once the runtime has initialised",
                 "It needs a GPU", "It resets the random seed"],
     "answer": 1,
     "why": "After TensorFlow has initialised its devices the configuration can no longer change."},
    {"q": "With a global batch of 64 on 4 replicas, what does each replica process per step?",
     "choices": ["64 samples", "16 samples", "4 samples", "256 samples"],
     "answer": 1,
     "why": "The strategy splits the global batch evenly across the replicas."},
    {"q": "Which PyTorch design is MirroredStrategy's gradient combination closest to?",
     "choices": ["DataParallel's reduce-add on device 0", "DDP's all-reduce", "No combination", "Parameter server"],
     "answer": 1,
     "why": "Gradients are all-reduced and every replica applies the same update, as in DDP."},
]

MNEMONIC = "A hall of mirrors: every device shows the same model, and every step moves all reflections together."

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("MirroredStrategy keeps one copy of every variable on each device and all-reduces the gradients before "
     "every replica applies the same update.",
     "Like mirrors in a dance studio: every copy moves exactly when the original moves."),
    ("Each replica's loss is scaled by one over the number of replicas and the gradients are summed, which "
     "gives the gradient of the global mean.",
     "Like four people each paying a quarter of the bill: add the quarters and the bill is paid exactly once."),
    ("Four logical devices on a few CPU cores are slower than one; the design pays off on real GPUs.",
     "Four checkout lanes staffed by one cashier running between them is slower than one lane."),
]

CARDS = [
    ("MirroredStrategy with 4 replicas: how are the replicas' gradients combined?",
     "Each replica's loss is scaled by 1/4 and the gradients are summed with an all-reduce: the gradient "
     "of the global mean, when every replica got the same number of samples."),
]
