"""The autograder: exercises generated from solutions, self-checks in notebooks, and class grading.

* ``dpcourse release`` (``release.py``) turns ``solutions/NN_*.ipynb`` into ``exercises/NN_*.ipynb``:
  each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes ``raise NotImplementedError``.
* ``check("04", ring_all_reduce)`` (``check.py``) runs an exercise's visible tests on the learner's
  live code from inside the notebook and prints one line per test.
* ``dpcourse grade NB.ipynb ...`` (``grade.py``) grades submissions with every test, hidden ones too,
  and writes Gradescope-shaped ``results.json`` files and a ``grades.csv``.

Every test runs in a harness process (``sandbox.py``) that never runs learner code: it starts one
process per rank, each in a sandbox where Linux allows it (``isolate.py``: no network, read-only
files, its own PIDs), hands each rank only its own input (drawn in the grader from ``os.urandom``),
and carries the ranks' process-group traffic itself (``relay.py``): only what the exercise allows,
every operation and byte counted out of the learner's reach. The grader judges the raw outputs and
those counts in its own process (``verdict.py``) and names the common wrong patterns that fit them.
Hidden tests live outside the package (``hidden.py``, ``instructor/suites/``).

Adding a suite
--------------
Create ``dpcourse/grading/suites/exNN_slug.py`` (``NN_slug`` as in ``solutions/NN_slug.ipynb``)
defining ``SUITE``; it is found automatically::

    from dpcourse.grading.framework import Context, Fail, Judged, Suite
    from dpcourse.grading.suites._common import compare_rel, normal_inputs, tolerance

    SUITE = Suite("08", names=("my_all_reduce",), title="...",
                  defaults={"per_rank": True, "inputs": normal_inputs})   # inputs drawn in the grader

    def run(learner, params, ctx: Context):    # on every rank: ctx.rank, ctx.world_size, ctx.input
        t = torch.from_numpy(ctx.input.copy())
        learner.my_all_reduce(t)
        return {"tensor": t}                    # raw outputs: numbers, arrays, tensors, dicts

    def judge(raw, params, ctx: Judged):       # in the grader: raw[r] per rank, ctx.inputs, ctx.stats
        want = sum(ctx.inputs)
        for r, out in enumerate(raw):
            compare_rel(f"rank {r}", out["tensor"], want, tolerance(params["dtype"], params["world_size"]))

    @SUITE.diagnose("sum vs average", "divide ... / don't divide ...")   # shown only when it fits
    def _averaged(raw, params, ctx): return ...

    SUITE.add("2 ranks", run, judge, params={"world_size": 2, "shape": [8], "dtype": "float64"})

``allowed=frozenset({...})`` in ``defaults`` restricts what the ranks' process group carries;
``shared_scratch=True`` gives the ranks one folder to share (checkpoints). Hidden tests go to
``instructor/suites/exNN_slug.py`` (``extend(suite, visible)``, reusing ``run`` halves of this module).
Older suites (``per_rank=False``) run ``run`` once, start ranks with ``ctx.launch`` and judge with
``judge(raw, params, seed)``. Then add planted wrong submissions to ``tests/planted/`` (see
``tests/test_grading.py``).
"""

from dpcourse.grading.check import CheckResult, check

__all__ = ["check", "CheckResult"]
