"""Hidden tests of exercise 02 (kept out of the package learners install; see instructor/README.md)."""


def extend(suite, visible):
    add = lambda name, batch, k, **kw: suite.add(  # noqa: E731
        name, visible._run, visible._judge, visible=False,
        params={"batch": batch, "micro_batches": k, "task": kw.get("task", "classification"),
                "stale": kw.get("stale", False)})
    add("regression, 7 samples in 4 micro-batches", 7, 4, task="regression")
    add("one sample per micro-batch", 5, 5)
    suite.add("regression, 13 samples in 5 micro-batches: one at a time", visible._run_sizes, visible._judge_sizes,
              visible=False, params={"batch": 13, "micro_batches": 5, "task": "regression"})
    suite.add("micro_batches of 9, -3, 0 or 1.5 for 8 samples raise ValueError", visible._run_bad_input,
              visible._judge_bad_input, visible=False,
              params={"batch": 8, "task": "regression", "bad": [9, -3, 0, 1.5]})
