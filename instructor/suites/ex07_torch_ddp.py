"""Hidden tests of exercise 07 (kept out of the package learners install; see instructor/README.md)."""


def extend(suite, visible):
    suite.add("3 ranks with accumulation (hidden)", visible.run, visible._judge_no_sync, points=2, visible=False,
              timeout=90, params={"world_size": 3, "configs": [{"accumulate": 2, "epochs": 2}]})
