"""Learning aids for lesson 00: setting up, and starting workers that know their rank."""

TITLE = "Lesson 00 - setup, workers and ranks"

SUMMARY = {
    "Basic": (
        "Data-parallel training runs the same program in several **worker processes**. Each worker "
        "gets a number, its **rank**, from 0 to world size - 1, and uses it to decide which part of "
        "the data is its own. `dpcourse doctor` tells you what this machine can run; "
        "`dpcourse.launch(fn, n)` starts `n` workers from a notebook cell and hands back what each returned."
    ),
    "Medium": (
        "A process group is a set of workers that can talk to each other: they meet at a **rendezvous** "
        "(an address and port held by a small key-value store), then a **backend** carries their messages "
        "(gloo on CPUs, NCCL between GPUs). Without a cluster we still get real processes and real "
        "messages by running several workers on one machine: each worker plays a *virtual node*. With "
        "more workers than cores the machine is **oversubscribed**: the program is correct, but timings "
        "say little about speed. The launcher prints each worker's output behind `[rank r]`, raises "
        "the error of the first worker that fails and stops the others, and stops everything after a "
        "timeout, because a distributed bug more often hangs than crashes."
    ),
    "Detailed": (
        "`dpcourse.launch` forks one child per rank (fork lets a function defined in a notebook cell "
        "run in the children; spawn would need to pickle it, and fails). Each child sets one intra-op "
        "thread first (OpenMP is not fork-safe), joins the default process group through a TCP store "
        "whose port the operating system picked, runs `fn(*args)` and sends back its result or "
        "traceback. The parent watches all pipes at once: a worker that raises turns into a "
        "`WorkerError` naming its rank; a worker that dies turns into a `LaunchError` with how it died; "
        "workers still running at the deadline print their stacks and turn into a `LaunchTimeout` that "
        "names them. In every case the whole group of processes is killed and reaped, so nothing is "
        "left running. In production the same roles are played by `torchrun` (one process per GPU, "
        "environment variables `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) and a cluster scheduler."
    ),
}

TERMS = {
    "worker": "one process that runs a copy of the training program",
    "rank": "a worker's number in the group, 0 to world size - 1; rank 0 usually prints and saves",
    "world size": "how many workers there are in the process group",
    "process group": "the set of workers that take part in collective operations together",
    "backend": "the library that moves the messages: gloo on CPU, NCCL on NVIDIA GPUs",
    "rendezvous": "how workers find each other at start-up: a known address and port, here a TCP store",
    "virtual node": "a worker process standing in for a machine of a cluster, so one computer can rehearse many",
    "oversubscription": "more busy workers than CPU cores: still correct, but they take turns and timings mislead",
    "timeout": "a wall-clock limit after which the launcher stops hung workers instead of waiting forever",
}

QUIZ = [
    {
        "q": "Four workers are launched. Which ranks exist?",
        "choices": ["1, 2, 3, 4", "0, 1, 2, 3", "0 and 1 twice each", "it depends on the number of cores"],
        "answer": 1,
        "why": "Ranks are numbered from 0 to world size - 1, whatever the hardware.",
    },
    {
        "q": "You run 4 workers on a 2-core laptop and training is not faster than with 2. What does that tell you?",
        "choices": ["data parallelism does not work", "there is a bug in the all-reduce",
                    "little: the machine is oversubscribed, so the workers share the 2 cores",
                    "that gloo is slower than NCCL"],
        "answer": 2,
        "why": "Four workers on two cores take turns: the results are still correct, but speed needs one core (or GPU) "
               "per worker.",
    },
    {
        "q": "Rank 1 waits for a message that rank 0 never sends. What does `dpcourse.launch` do?",
        "choices": ["waits forever",
                    ("raises LaunchTimeout when the timeout runs out, after printing where each hung rank is stuck, "
                     "and kills the workers"),
                    "restarts rank 1", "returns None for rank 1"],
        "answer": 1,
        "why": "A hang is the usual symptom of a distributed bug, so every launch has a deadline and cleans up after "
               "itself.",
    },
    {
        "q": "Why does the launcher fork workers instead of starting fresh Python processes?",
        "choices": [("fork lets a function defined in a notebook cell run in the workers, "
                     "and starts them in a fraction of a second"),
                    "fresh processes cannot use gloo", "fork uses less memory on GPUs", "torchrun requires fork"],
        "answer": 0,
        "why": "A fresh interpreter would have to import the function by name, and a notebook cell's function has no "
               "importable name.",
    },
]

MNEMONIC = (
    "**Same script, different rank.** Picture a rowing crew: every rower does the same stroke, "
    "each sits in a numbered seat, and the cox (the launcher) stops the boat if anyone drops an oar "
    "or stops rowing.\n\n"
    "```\n"
    "launch(fn, 4) ->  [rank 0] [rank 1] [rank 2] [rank 3]   same fn, own slice of data\n"
    "                      \\________ process group ________/\n"
    "```"
)

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("A worker is one process running the training program; its rank is its number, and the world size "
     "is how many workers there are.",
     "Think of a relay team with numbered bibs: every runner does the same job, and the number says who "
     "hands over to whom."),
    ("The launcher returns each worker's result in rank order, but printed lines arrive in whatever order "
     "the workers reach them.",
     "Like exam papers: collected in seat order at the end, although the students finished at different times."),
    ("When one worker fails, the launcher stops all of them and reports that worker's error.",
     "Like a climbing rope team: when one climber falls, the whole team stops, and everyone hears who fell."),
    ("A deadlock is every worker waiting for another one; a timeout ends it and shows where each waited.",
     "Two people on the phone, each waiting for the other to speak first. The timeout is hanging up and "
     "writing down who was waiting for what."),
]

# Review cards beyond the key terms (dpcourse review): questions learners get wrong.
CARDS = [
    ("dpcourse.launch returns [r0, r1, r2]. Are the workers' printed lines also in rank order?",
     "No. Results come back in rank order; printed lines arrive in whatever order the workers print them."),
    ("Four workers on a two-core laptop: why are its timings poor evidence of speed?",
     "The machine is oversubscribed: the workers take turns on the cores, so timings measure the scheduler."),
]
