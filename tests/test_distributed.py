import pytest
import torch

from dist_harness import run_distributed
from tailwise import distributed as twd

pytestmark = pytest.mark.distributed


def _gather_worker(rank, world_size, full):
    # unequal shards: rank 0 gets 3 rows, rank 1 gets 5
    sizes = [3, 5]
    start = sum(sizes[:rank])
    local = full[start:start + sizes[rank]].clone().requires_grad_(True)
    gathered, offset = twd.all_gather_with_grad(local, return_offset=True)
    weights = torch.arange(1.0, gathered.numel() + 1).view_as(gathered)
    # a rank-dependent loss so the summed backward is observable
    loss = (gathered * weights).sum() * (rank + 1)
    loss.backward()
    labels = twd.all_gather_no_grad(torch.full((sizes[rank],), rank))
    stats = twd.all_reduce_sum(torch.tensor([float(rank + 1)]))
    mean = twd.all_reduce_mean(torch.tensor([float(rank + 1)]))
    return {"gathered": gathered.detach(), "offset": offset, "grad": local.grad, "labels": labels,
            "stats": stats, "mean": mean, "world": twd.get_world_size(), "rank": twd.get_rank()}


def test_all_gather_with_grad_unequal_shards():
    full = torch.randn(8, 2)
    res = run_distributed(_gather_worker, 2, full)
    weights = torch.arange(1.0, 17).view(8, 2)
    for rank, r in enumerate(res):
        torch.testing.assert_close(r["gathered"], full)
        assert r["offset"] == [0, 3][rank]
        assert r["world"] == 2 and r["rank"] == rank
        torch.testing.assert_close(r["labels"], torch.tensor([0, 0, 0, 1, 1, 1, 1, 1]))
        torch.testing.assert_close(r["stats"], torch.tensor([3.0]))
        torch.testing.assert_close(r["mean"], torch.tensor([1.5]))
    # d/dx of sum_r (r+1) * <w, gathered> is (1 + 2) * w, sliced to each rank's rows
    torch.testing.assert_close(res[0]["grad"], 3 * weights[:3])
    torch.testing.assert_close(res[1]["grad"], 3 * weights[3:])


def test_helpers_are_noops_outside_distributed():
    x = torch.randn(4, 3, requires_grad=True)
    assert not twd.is_dist_initialized()
    assert twd.get_world_size() == 1 and twd.get_rank() == 0
    assert twd.all_gather_with_grad(x) is x
    assert twd.all_gather_with_grad(x, return_offset=True) == (x, 0)
    assert twd.all_reduce_sum(x) is x
    assert twd.gather_sizes(4) == [4]
