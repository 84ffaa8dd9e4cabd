"""The autograder: exercises generated from solutions, self-checks in notebooks, and class grading.

* ``dpcourse release`` (``release.py``) turns ``solutions/NN_*.ipynb`` into ``exercises/NN_*.ipynb``:
  each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes ``raise NotImplementedError``.
* ``check("04", ring_all_reduce)`` (``check.py``) runs an exercise's visible tests on the learner's
  live code from inside the notebook and prints one line per test.
* ``dpcourse grade NB.ipynb ...`` (``grade.py``) grades submissions with every test, hidden ones too,
  and writes Gradescope-shaped ``results.json`` files and a ``grades.csv``.

Every test runs in a sandboxed child (``sandbox.py``: a shield process and a runner in their own
session, wall-clock and memory limits, capped output, nothing left behind). The child returns raw
outputs only; the grader computes references and scores in its own process (``verdict.py``).

Adding a suite
--------------
Create ``dpcourse/grading/suites/exNN.py`` (``NN`` = the exercise id, as in ``solutions/NN_slug.ipynb``)
defining ``SUITE``; it is found automatically::

    from dpcourse.grading.framework import Context, Fail, Suite, calls, reset_calls

    SUITE = Suite("07", names=("train_ddp",), title="DDP training")

    def _worker(train_ddp, seed):              # runs on every rank, in the child
        reset_calls()                           # count collectives from here on
        params = train_ddp(seed=seed)           # the learner's function
        return {"params": params, "calls": calls()}   # raw outputs: numbers, arrays, tensors, dicts

    def _run(learner, params, ctx: Context):    # child side: learner.<name> is the learner's object
        return ctx.launch(_worker, params["world_size"], learner.train_ddp, ctx.seed)

    def _judge(raw, params, seed):             # grader side: compute the reference here, compare
        want = my_reference(seed)              # never trust anything computed in the child
        if not close(raw[0]["params"], want):
            raise Fail("parameters differ from single-process training after 5 steps")

    SUITE.add("2 ranks match one process", _run, _judge, params={"world_size": 2},
              points=2, visible=True, hint="average the gradients, don't sum them.")

Rules: worker functions live at module level of the suite (they reach the ranks by ``fork``);
``run`` returns data only (``sandbox.encode`` carries ``None``, numbers, strings, lists, dicts, numpy
arrays and CPU tensors); ``judge`` raises :class:`~dpcourse.grading.framework.Fail` with a message
a learner can act on; ``visible=False`` keeps a test out of ``check`` (it counts in ``grade`` only).
``Suite(reference_modules=...)`` lists the course modules a submission may not use (they are hidden
in the child and imports of them in graded cells score 0). Then add planted wrong submissions to
``tests/planted/`` (see ``tests/test_grading.py``).
"""

from dpcourse.grading.check import CheckResult, check

__all__ = ["check", "CheckResult"]
