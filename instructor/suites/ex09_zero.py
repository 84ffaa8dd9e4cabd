"""Hidden tests of exercise 09 (kept out of the package learners install; see instructor/README.md)."""


def extend(suite, visible):
    base = visible.BASE
    suite.add("SGD with momentum, 3 ranks, odd parameter count (hidden)", visible._run, visible._judge_training,
              params={**base, "optimizer": "sgd", "world_size": 3}, visible=False,
              hint="shards are ceil(numel / N) long; the last one is partly padding.")
    suite.add("world size 1 (hidden)", visible._run, visible._judge_training, params={**base, "world_size": 1},
              visible=False, hint="with one rank the shard is the whole buffer.")
    suite.add("state_dict round trip with SGD momentum on 3 ranks (hidden)", visible._run, visible._judge_training,
              params={**base, "optimizer": "sgd", "world_size": 3, "steps": 4, "round_trip_at": 2}, visible=False,
              hint="the momentum buffers of your shard must survive the round trip.")
    suite.add("optimizer state per rank with SGD momentum on 3 ranks (hidden)", visible._run, visible._judge_state,
              params={**base, "kind": "wide", "optimizer": "sgd", "world_size": 3, "steps": 1}, visible=False,
              hint="give the wrapped optimizer only the pieces of your shard, never all parameters.")
