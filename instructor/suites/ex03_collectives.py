"""Hidden tests of exercise 03 (kept out of the package learners install; see instructor/README.md)."""


def extend(suite, visible):
    suite.add("broadcast: 4 ranks, 2x3 matrix from rank 1", visible.run_broadcast, visible.judge_broadcast,
              visible=False, params={"world_size": 4, "shape": [2, 3], "dtype": "float64", "src": 1})
    suite.add("broadcast: 1 rank", visible.run_broadcast, visible.judge_broadcast, visible=False,
              params={"world_size": 1, "shape": [3], "dtype": "float32", "src": 0})
    suite.add("broadcast: 3 ranks, int64 from rank 1", visible.run_broadcast, visible.judge_broadcast,
              visible=False, params={"world_size": 3, "shape": [7], "dtype": "int64", "src": 1})
    suite.add("broadcast: a src of 3 or -1 with 3 ranks raises ValueError", visible.run_bad_src,
              visible.judge_bad_src, visible=False, params={"world_size": 3}, inputs=None)
    suite.add("all_gather: 4 ranks, 2x2 matrices", visible.run_gather, visible.judge_gather, visible=False,
              params={"world_size": 4, "shape": [2, 2], "dtype": "float32"})
    suite.add("all_gather: 1 rank", visible.run_gather, visible.judge_gather, visible=False,
              params={"world_size": 1, "shape": [3], "dtype": "float64"})
