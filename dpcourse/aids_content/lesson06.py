"""Learning aids for lesson 06: nn.DataParallel."""

TITLE = "Lesson 06 - nn.DataParallel: one process, many devices"

SUMMARY = {
    "Basic": (
        "`nn.DataParallel` splits each batch across the GPUs of one machine from a single Python process. "
        "It gives the same result as one device on the whole batch, but PyTorch recommends "
        "`DistributedDataParallel` because it is faster and scales further."
    ),
    "Medium": (
        "Every forward call runs four phases: **scatter** the batch into chunks, **replicate** the model "
        "onto every device, **parallel_apply** the replicas in threads, **gather** the outputs on device 0. "
        "In backward the replicas' gradients are summed into the original model on device 0, where the "
        "optimizer runs. On a CPU or a single GPU the wrapper just calls the module, silently. Parameter "
        "names gain a `module.` prefix."
    ),
    "Detailed": (
        "Three costs make `DataParallel` lose to DDP. (1) One process: replicas run in threads that share "
        "the GIL, so Python-heavy models  (2) The model is "
        "re-replicated on every step, a cost that grows with the parameter count; DDP copies once and keeps "
        "replicas equal by applying equal averaged gradients. (3) Device 0 holds the whole batch, the "
        "gathered outputs, the loss, the summed gradients and all optimizer state, so it runs out of memory "
        "first and does more work; under DDP every rank is alike. DataParallel also cannot span machines."
    ),
}

TERMS = {
    "scatter": "cut a batch along its first dimension and send chunk i to device i",
    "replicate": "copy a module's parameters and buffers onto several devices",
    "parallel_apply": "run replica i on input i, each in its own Python thread",
    "gather": "bring outputs from every device to one device and concatenate them",
    "GIL": "the global interpreter lock: one thread of a Python process runs Python code at a time",
    "reduce-add": "sum tensors from several devices onto one; how replica gradients reach device 0",
    "module. prefix": "DataParallel and DDP keep the model as `.module`, so state_dict keys start with `module.`",
}

QUIZ = [
    {"q": "On a machine with no GPU, what does `nn.DataParallel(model)(x)` do?",
     "choices": ["Splits x over CPU cores in threads", "Raises an error", "Calls model(x) directly, silently",
                 "Starts one process per core"],
     "answer": 2,
     "why": "With no devices, device_ids is empty and forward falls through to the wrapped module."},
    {"q": "Why does DataParallel copy the model to every GPU on every step?",
     "choices": ["To save memory", "Only the original on device 0 is updated by the optimizer",
                 "Because threads cannot share tensors", "To shuffle the data"],
     "answer": 1,
     "why": "The replicas are throw-away copies; the optimizer updates the original, so fresh copies are needed."},
    {"q": "Which model gains least from running two replicas in two threads of one process?",
     "choices": ["Three 1024-wide linear layers on a batch of 256", "A forward pass that loops over numbers in Python",
                 "Both gain equally", "Neither runs in threads"],
     "answer": 1,
     "why": "Python code holds the GIL, so the threads take turns; big matrix multiplies release it."},
    {"q": "Where does the optimizer state live under DataParallel?",
     "choices": ["Split evenly over the GPUs", "On every GPU", "Only on device 0", "On the CPU"],
     "answer": 2,
     "why": "The optimizer updates the original model, which sits on device 0."},
]

MNEMONIC = ("**S**ome **R**eplicas **P**ass **G**radients home: Scatter, Replicate, Parallel_apply, Gather - then sum "
            "on GPU 0.")

# The audiobook track (dpcourse audio): each key point, then its analogy, said as plain sentences.
KEY_POINTS = [
    ("DataParallel scatters the batch, replicates the model, runs replicas in threads and gathers the outputs "
     "onto device zero, on every step.",
     "Like a manager who photocopies the whole manual for every helper every morning, then collects all the work "
     "himself."),
    ("On a machine without GPUs, DataParallel silently does nothing except add a module prefix to every name.",
     "Like a sign that says team meeting on a door with nobody behind it: the work is still done by one person."),
    ("Threads of one process share the interpreter lock, so Python-heavy models do not run in parallel.",
     "Several cooks, one knife: they only work at once while each is stirring, not while cutting."),
    ("Device zero holds the batch, outputs, loss, gradients and optimizer state: it runs out of memory first.",
     "Like the one colleague whose desk holds everybody's paperwork."),
]

CARDS = [
    ("nn.DataParallel(model) on a CPU-only machine: what changes?",
     "Nothing runs in parallel (device_ids is empty, forward calls the model); only state_dict keys gain 'module.'."),
    ("Why does DataParallel copy the model every step while DDP copies it once?",
     "Only the original on device 0 is updated by the optimizer; DDP keeps its replicas equal with identical "
     "averaged gradients instead."),
]
