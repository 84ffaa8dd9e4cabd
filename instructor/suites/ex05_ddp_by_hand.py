"""Hidden tests of exercise 05 (kept out of the package learners install; see instructor/README.md)."""


def extend(suite, visible):
    for spec in [
        visible.average("average_gradients: 3 ranks", 3, visible=False),
        visible.ddp("BucketedDDP: 3 ranks, default bucket size, AdamW", 3, visible=False, bucket_mb="default",
                    steps=4, optimizer="adamw"),
        visible.ddp("BucketedDDP: 4 ranks, shared buckets of 0.5 kB, momentum and weight decay", 4, visible=False,
                    bucket_mb=0.0005, optimizer="momentum", steps=3),
        visible.ddp("BucketedDDP: world size 1", 1, visible=False, bucket_mb=None, steps=2, optimizer="momentum"),
    ]:
        spec = dict(spec)
        suite.add(spec.pop("name"), spec.pop("run"), spec.pop("judge"), **spec)
