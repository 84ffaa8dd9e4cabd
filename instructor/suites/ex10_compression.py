"""Hidden tests of exercise 10 (kept out of the package learners install; see instructor/README.md)."""


def extend(suite, visible):
    base = visible._BASE
    suite.add("3 ranks: values, error feedback and identical parameters (hidden)", visible._run, visible._judge_values,
              params={**base, "world_size": 3, "steps": 4}, visible=False,
              hint="divide by dist.get_world_size(); add the ranks' pieces in rank order on every rank.")
    suite.add("3 ranks: bytes (hidden)", visible._run, visible._judge_bytes,
              params={**base, "world_size": 3, "steps": 4, "fraction": 0.05}, visible=False,
              hint="all-gather sends (N-1) pieces of k values and k indices per rank.")
    suite.add("world size 1: the bucket's top k, residual kept (hidden)", visible._run, visible._judge_values,
              params={**base, "world_size": 1, "steps": 3}, visible=False,
              hint="with one rank the average is this rank's top k; error feedback still applies.")
