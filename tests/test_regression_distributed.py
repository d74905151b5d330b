"""BMC / balanced L1 under 2 gloo ranks == one process on the full batch."""

import pytest
import torch

import tailwise
from dist_harness import run_distributed

pytestmark = pytest.mark.distributed


def _bmc_worker(rank, world_size, pred, target, sizes):
    """Both losses, equal and unequal shards, in one spawn (each spawn costs seconds)."""
    out = {}
    for tag, shard_sizes in (("equal", [len(pred) // 2] * 2), ("unequal", sizes)):
        start = sum(shard_sizes[:rank])
        rows = slice(start, start + shard_sizes[rank])
        for name, cls in (("bmc", tailwise.BMCLoss), ("bl1", tailwise.BalancedL1Loss)):
            crit = cls(0.8)
            local = pred[rows].clone().requires_grad_(True)
            loss = crit(local, target[rows])
            loss.backward()
            param = next(crit.parameters())
            out[f"{tag}_{name}"] = {"loss": loss.detach(), "pred_grad": local.grad,
                                    "sigma_grad": param.grad.clone(),
                                    "per_sample": crit.__class__(0.8, reduction="none")(local.detach(),
                                                                                        target[rows])}
    return out


def test_bmc_two_ranks_equal_full_batch():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(12, 3, generator=g, dtype=torch.float64)
    target = torch.randn(12, 3, generator=g, dtype=torch.float64)
    sizes = [5, 7]
    res = run_distributed(_bmc_worker, 2, pred, target, sizes)
    for name, cls in (("bmc", tailwise.BMCLoss), ("bl1", tailwise.BalancedL1Loss)):
        crit = cls(0.8)
        full = pred.clone().requires_grad_(True)
        loss = crit(full, target)
        loss.backward()
        sigma_grad = next(crit.parameters()).grad
        per_sample = cls(0.8, reduction="none")(pred, target)
        # equal shards: mean of rank losses == full loss; DDP-averaged grads == full-batch grads
        r0, r1 = res[0][f"equal_{name}"], res[1][f"equal_{name}"]
        torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, loss.detach())
        torch.testing.assert_close((r0["sigma_grad"] + r1["sigma_grad"]) / 2, sigma_grad)
        torch.testing.assert_close(torch.cat([r0["pred_grad"], r1["pred_grad"]]) / 2, full.grad)
        # unequal shards: every sample's loss is the full-batch one (all targets are MC samples)
        u0, u1 = res[0][f"unequal_{name}"], res[1][f"unequal_{name}"]
        torch.testing.assert_close(torch.cat([u0["per_sample"], u1["per_sample"]]), per_sample)
        # size-weighted rank losses recover the full mean
        torch.testing.assert_close((5 * u0["loss"] + 7 * u1["loss"]) / 12, loss.detach())
