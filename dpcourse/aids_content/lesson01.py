"""Learning aids for lesson 01: one device, one training loop, measured."""

TITLE = "Lesson 01 - one device, measured"

SUMMARY = {
    "Basic": (
        "A training step has four parts: fetch a **batch** (data), compute predictions and loss "
        "(forward), compute gradients (backward), and update the parameters (optimizer). We measure "
        "speed as **throughput**, training samples per second, and we write it down as a **baseline**: "
        "every later speedup is a ratio against a number like this one, measured on the same machine."
    ),
    "Medium": (
        "On a CPU one process can already use several cores through intra-op threads, so a fair "
        "baseline for two one-thread workers is one process with two threads, not only one thread. "
        "Timing the phases of a step shows that forward and backward dominate for models with real "
        "arithmetic, while a tiny model is dominated by fixed costs. A larger batch raises throughput "
        "until the hardware is saturated, but it also means fewer updates per epoch, so per sample "
        "seen it can learn more slowly unless the learning rate is raised with it."
    ),
    "Detailed": (
        "`throughput` times whole steps after warm-up steps (the first steps pay for memory "
        "allocation and one-off set-up). `time_step_phases` takes the median of each phase over "
        "several steps; on a GPU it calls `torch.cuda.synchronize()` at each boundary, because CUDA "
        "work runs asynchronously and an unsynchronised timer charges it to whichever line waits "
        "first. Those syncs cost a little, so the phase sum is slightly above the step time that "
        "`throughput` sees. Extra threads can slow a CPU run down when other programs occupy the "
        "cores (threads wait for each other at every operation). Mixed precision (`amp=True`) runs "
        "forward and backward in bfloat16 or float16 under `torch.autocast` on a GPU, with a gradient "
        "scaler for float16. Data parallelism will split forward and backward across workers and add "
        "a communication cost that grows with the number of parameters, which is why the phase picture "
        "predicts which models gain."
    ),
}

TERMS = {
    "batch (mini-batch)": "the samples whose average loss gives one gradient estimate and one update",
    "epoch": "one pass over the whole training set",
    "throughput": "training samples processed per second, timed over whole steps",
    "baseline": "the measured single-device number a speedup is divided by; name it with every ratio",
    "warm-up": "untimed first steps that absorb one-off costs such as memory allocation",
    "step phases": "data, forward, backward and optimizer: the four parts of one training step",
    "intra-op threads": "threads PyTorch uses to split one operation across CPU cores (torch.set_num_threads)",
    "synchronise": "wait until the GPU has finished queued work, so a timer measures that work",
    "mixed precision": "forward and backward in 16-bit floats (autocast) to save memory traffic on a GPU",
}

QUIZ = [
    {
        "q": "Two one-thread workers on a 2-core machine reach 1.6x the throughput of one thread. What is the fair "
             "conclusion?",
        "choices": ["data parallelism gives 1.6x here",
                    "compare with one process using both cores before claiming any speedup",
                    "the second core is broken",
                    "throughput cannot be compared across process counts"],
        "answer": 1,
        "why": "One process can use both cores through intra-op threads; that is the baseline to beat.",
    },
    {
        "q": "On a GPU you time `loss = model(x)` without synchronising and it looks almost free. Why?",
        "choices": ["GPUs compute forward passes instantly",
                    "the call only queues the work; the time shows up later in whichever line waits for it",
                    "autocast skips the forward pass",
                    "the timer has too little resolution"],
        "answer": 1,
        "why": "CUDA calls return before the GPU finishes; torch.cuda.synchronize() makes the timer honest.",
    },
    {
        "q": "Which phase usually takes longest for a model with real arithmetic?",
        "choices": ["data", "forward", "backward", "optimizer"],
        "answer": 2,
        "why": "Backward computes gradients for both weights and activations: more arithmetic than the forward "
               "pass (the lesson prints the ratio it measured).",
    },
    {
        "q": "You raise the batch from 16 to 256 at the same learning rate and train for the same number of epochs. "
             "What do you expect?",
        "choices": ["the same accuracy, faster",
                    "higher throughput, but fewer updates, so often lower accuracy per sample seen",
                    "lower throughput and higher accuracy",
                    "no change at all"],
        "answer": 1,
        "why": "256 / 16 = 16 times fewer samples per step (15x fewer steps on 1,438 digits, since the last batch "
               "is partial); raising the learning rate with the batch is the usual way to win some of it back.",
    },
]

MNEMONIC = (
    "**D-F-B-O**: *Data, Forward, Backward, Optimizer*, and no ratio without its baseline.\n\n"
    "```\nstep = [data][forward][ backward  ][opt]\n```"
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("A training step has four parts: data, forward, backward and the optimizer step. Data parallelism "
     "adds a fifth, communication, between backward and the step.",
     "Like a kitchen: fetch the ingredients, cook, taste and correct, then write the recipe change down. "
     "Several kitchens must also phone each other before changing the recipe."),
    ("Throughput, samples per second, is the number to compare, and every speedup needs a measured baseline.",
     "A new car is only faster than something: say which car, on the same road, on the same day."),
    ("The fair baseline for two one-thread workers is one process using both cores, not one thread.",
     "Two cooks beat one cook with one hand tied, but the fair race is against one cook using both hands."),
    ("A bigger batch is faster per sample but takes fewer steps per epoch, so it may learn less per sample "
     "unless the learning rate follows the batch.",
     "Fewer, longer strides cover the distance in fewer steps, but only if each stride is lengthened to match."),
]

CARDS = [
    ("Which baseline must a two-worker data-parallel run on a two-core machine be compared with?",
     "One process using both cores (two threads), measured in the same run, not one thread."),
    ("For a larger model, which phase of a step is usually biggest: forward or backward?",
     "Backward: it computes gradients for both weights and activations, so it has more arithmetic than the "
     "forward pass (lesson 01 prints the ratio it measured)."),
]
