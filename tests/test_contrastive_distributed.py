"""2-rank gloo: gathered contrastive losses equal one process on the full batch.

Convention (simulated DDP): the full-batch loss is the mean of the per-rank losses (equal shards),
so the full-batch gradient of a rank's input rows is that rank's local gradient divided by the
world size (``all_gather_with_grad`` sums every rank's gradient into the local shard; DDP then
averages parameter gradients over ranks, which is this division).
"""

import pytest
import torch
import torch.nn.functional as F

from dist_harness import run_distributed, shard
from tailwise import MemoryQueue
from tailwise.functional import bcl_loss, dcl_loss, info_nce_loss, paco_loss, supcon_loss

pytestmark = pytest.mark.distributed


def _losses(z, y, sup, cen, gather):
    kw = dict(gather_distributed=gather)
    return {
        "info_nce": lambda: info_nce_loss(z["info_nce"], temperature=0.2, **kw),
        "supcon": lambda: supcon_loss(z["supcon"], y, temperature=0.2, chunk_size=3, **kw),
        "paco": lambda: paco_loss(z["paco"], y, sup, class_counts=[4, 3, 1], alpha=0.3, **kw),
        "bcl": lambda: bcl_loss(z["bcl"], y, cen, temperature=0.2, **kw),
        "dcl": lambda: dcl_loss(z["dcl"], **kw),
    }


def _leaves(feats, sup, cen):
    z = {k: feats.clone().requires_grad_() for k in ("info_nce", "supcon", "paco", "bcl", "dcl")}
    return z, sup.clone().requires_grad_(), cen.clone().requires_grad_()


def _worker(rank, world, feats, labels, sup, cen):
    z, s, c = _leaves(shard(feats, rank, world), shard(sup, rank, world), cen)
    y = shard(labels, rank, world)
    out = {}
    for name, fn in _losses(z, y, s, c, True).items():
        loss = fn()
        loss.backward()
        out[name] = (loss.detach(), z[name].grad)
    out["sup_grad"], out["cen_grad"] = s.grad, c.grad
    q = MemoryQueue(6, feats.shape[-1])
    q.enqueue(z["supcon"][:, 0], y)  # gathered: both ranks store all 8 keys, oldest 2 dropped
    out["queue"] = (q.keys.clone(), q.labels.clone())
    return out


def test_gathered_losses_equal_full_batch():
    torch.manual_seed(0)
    n, world = 8, 2
    feats = F.normalize(torch.randn(n, 2, 5), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 1, 0])
    sup = torch.randn(n, 3)
    cen = F.normalize(torch.randn(3, 5), dim=-1)
    res = run_distributed(_worker, world, feats, labels, sup, cen)

    z, s, c = _leaves(feats, sup, cen)
    for name, fn in _losses(z, labels, s, c, False).items():
        full = fn()
        full.backward()
        per_rank = torch.stack([r[name][0] for r in res])
        torch.testing.assert_close(per_rank.mean(), full.detach(), msg=name)
        local = torch.cat([r[name][1] for r in res]) / world
        torch.testing.assert_close(local, z[name].grad, msg=name)
    torch.testing.assert_close(torch.cat([r["sup_grad"] for r in res]) / world, s.grad)
    # centres are replicated parameters: DDP averages their grads
    torch.testing.assert_close(sum(r["cen_grad"] for r in res) / world, c.grad)
    for r in res:
        keys, lab = r["queue"]
        assert keys.shape == (6, 5)
        # one gathered enqueue of 8 rows into 6 slots keeps the newest 6, in order
        torch.testing.assert_close(keys, feats[2:8, 0])
        torch.testing.assert_close(lab, labels[2:8])
