# %% [markdown]
# # dpcourse — course map
#
# A hands-on course on data-parallel training with PyTorch, from one device to thousands of GPUs.
# Work through the lessons in order; each one ends with a summary at three depths, key terms,
# flashcards, a short quiz and a memory aid. Most lessons have an **exercise** (a notebook with
# gaps for you to fill, and self-checks) and a **solution** (the same notebook, filled in).
#
# The path:
#
# 1. **00 Setup** — your machine, worker processes, ranks, and a launcher that survives crashes and hangs.
# 2. **01 One device** — a training loop, measured: the baseline every speedup is compared with.
# 3. **02 Mini-batch arithmetic** — why the average of shard gradients is the gradient of the batch.
# 4. **03 Processes and collectives** — broadcast, reduce, all-reduce between real processes.
# 5. **04 A hand-written all-reduce** — naive versus ring, and the α-β cost model.
# 6. **05 DDP by hand** — gradient averaging, buckets, overlap with the backward pass.
# 7. **06 `nn.DataParallel`** — the single-process way, and why it is no longer recommended.
#    (**06b**, optional: the same idea in TensorFlow, `MirroredStrategy`.)
# 8. **07 DDP and `torchrun`** — the production path.
# 9. **08 Scaling** — strong and weak scaling, predictions for 8 to 4096 GPUs, large batches, stragglers.
# 10. **09 Sharded data parallelism** — where training memory goes, ZeRO-1 by hand, ZeRO-2/3 with FSDP2, their
#     communication cost, and sharded checkpoints that resume on another number of ranks.
# 11. **10 Fewer bytes** — gradient compression as DDP communication hooks: bf16, PowerSGD, top-k with error
#     feedback; bytes, accuracy and step time measured on simulated cluster links, and where compression pays.
# 12. **11 When it goes wrong** — a field guide to six families of data-parallel bugs (hangs, drifting
#     replicas, double averaging, data order, uneven inputs, checkpoint races), each run for real with the
#     tool that finds it; then a graded debugging lab.
#
# The table below is built from the notebooks present in this checkout, so it is always current.
# Exercises are generated from the solutions by `dpcourse release`.

# %%
import json
import re
from pathlib import Path

from IPython.display import Markdown, display

ROOT = Path("..") if Path("../lessons").is_dir() else Path(".")


def title(notebook: Path) -> str:
    """The first heading of a notebook, without its leading '#'s."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return notebook.stem


def by_number(folder: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted((ROOT / folder).glob("[0-9][0-9]*_*.ipynb")):  # 06b_... is an optional extra
        found.setdefault(path.name.split("_")[0], []).append(path)
    return found


def link(path: Path) -> str:
    return f"[{path.stem}]({path.relative_to(ROOT).as_posix() if ROOT == Path('.') else '../' + path.relative_to(ROOT).as_posix()})"


lessons, exercises, solutions = by_number("lessons"), by_number("exercises"), by_number("solutions")
rows = ["| # | lesson | exercise | solution |", "|---|---|---|---|"]
for number in sorted(set(lessons) | set(solutions)):
    lesson = " ".join(f"[{title(p)}]({link(p).split('](')[1]}" for p in lessons.get(number, [])) or "—"
    exercise = ", ".join(link(p) for p in exercises.get(number, [])) or "—"
    solution = ", ".join(link(p) for p in solutions.get(number, [])) or "—"
    rows.append(f"| {number} | {lesson} | {exercise} | {solution} |")
display(Markdown("\n".join(rows)))

# %%
assert "00" in lessons, "lessons/00_setup.ipynb is missing: is this the course folder?"
for folder in (lessons, exercises, solutions):  # every link in the table points at a file that exists
    for paths in folder.values():
        assert all(p.is_file() for p in paths)

# %% [markdown]
# **Tools that come with the course** (in a terminal):
#
# - `dpcourse doctor` — what this machine can run, and what to expect from it;
# - `dpcourse lab` — JupyterLab on the whole course, opened on this map; any `jupyter lab` option passes on
#   (`dpcourse lab --no-browser --ip=0.0.0.0 --port=8888` serves a class);
# - `dpcourse bench allreduce|ddp|launch` — benchmarks that measure side by side;
# - `dpcourse demo --workers 1,2,4 --model small,medium` — the live scaling demo for a class
#   (throughput, speedup and efficiency plotted as runs finish; `demo.png` and `demo.csv` saved);
# - `dpcourse grade exercises/04_allreduce.ipynb` — grade your own exercise with every test, hidden
#   ones too (an instructor passes a whole class: files or folders).
