# exercise: 10
# expect: full
# A correct top-k hook with error feedback: the solution's graded cell.
class TopKState:
    """What topk_hook keeps between steps: the share of entries to send and, per bucket, the residual."""

    def __init__(self, fraction: float):
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
        self.fraction = fraction
        self.residuals: dict[int, torch.Tensor] = {}  # bucket index -> what was not sent last step

    def k_for(self, numel: int) -> int:
        """How many entries a bucket of numel entries sends (at least one)."""
        return max(1, int(numel * self.fraction))


def topk_hook(state: TopKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Send the k largest entries of (gradient + residual) with their indices; keep the rest for later."""
    world = dist.get_world_size()
    grad = bucket.buffer()
    residual = state.residuals.get(bucket.index())
    corrected = grad + residual if residual is not None else grad.clone()
    k = state.k_for(corrected.numel())
    indices = corrected.abs().topk(k, sorted=False).indices
    values = corrected[indices]
    state.residuals[bucket.index()] = corrected.index_fill(0, indices, 0.0)

    all_values = values.new_empty(world * k)
    all_indices = indices.new_empty(world * k)
    works = [dist.all_gather_single(all_values, values, async_op=True),
             dist.all_gather_single(all_indices, indices, async_op=True)]

    def average(_):
        dense = torch.zeros_like(grad)
        for r in range(world):
            dense.index_add_(0, all_indices[r * k:(r + 1) * k], all_values[r * k:(r + 1) * k])
        return dense / world

    return torch.futures.collect_all([w.get_future() for w in works]).then(average)
