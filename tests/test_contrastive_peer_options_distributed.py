"""2-rank gloo: SupCon's reference set and ``zero_if_no_negatives`` under ``gather_distributed``
equal one process on the full batch (same convention as test_contrastive_distributed.py: the
full-batch loss is the mean of the per-rank losses, a rank's gradient divided by the world size is
the full-batch gradient of its rows)."""

import pytest
import torch
import torch.nn.functional as F

from dist_harness import run_distributed, shard
from tailwise.functional import supcon_loss

pytestmark = pytest.mark.distributed


def _cases(z, y, r, ry, second, mask, y_local_only, gather):
    """name -> (loss thunk, tensors whose gradients are compared)."""
    kw = dict(gather_distributed=gather, temperature=0.2)
    return {
        # local anchors against the gathered reference set
        "ref": lambda: supcon_loss(z["ref"], y, ref_features=r["ref"], ref_labels=ry, chunk_size=3, **kw),
        # ref_labels is labels: the reference row of the sample itself (its second view) is left out
        "ref_self": lambda: supcon_loss(z["ref_self"][:, 0], y, ref_features=second["ref_self"], ref_labels=y,
                                        **kw),
        # one rank's labels are all the same: the global batch still has negatives
        "zero_labels": lambda: supcon_loss(z["zero_labels"], y_local_only, zero_if_no_negatives=True, **kw),
        "zero_mask": lambda: supcon_loss(z["zero_mask"], mask=mask, zero_if_no_negatives=True, **kw),
        "zero_ref": lambda: supcon_loss(z["zero_ref"], y_local_only, ref_features=r["zero_ref"],
                                        ref_labels=y_local_only[:3], zero_if_no_negatives=True, **kw),
        # no negative anywhere: every rank returns 0
        "zero_none": lambda: supcon_loss(z["zero_none"], torch.zeros_like(y), zero_if_no_negatives=True, **kw),
    }


NAMES = ["ref", "ref_self", "zero_labels", "zero_mask", "zero_ref", "zero_none"]


def _leaves(feats, ref):
    z = {k: feats.clone().requires_grad_() for k in NAMES}
    r = {k: ref.clone().requires_grad_() for k in NAMES}
    second = {k: feats[:, 1].clone().requires_grad_() for k in NAMES}
    return z, r, second


def _worker(rank, world, feats, labels, ref, ref_labels, mask, y_one):
    z, r, second = _leaves(shard(feats, rank, world), shard(ref, rank, world))
    y = shard(labels, rank, world)
    out = {}
    for name, fn in _cases(z, y, r, shard(ref_labels, rank, world), second, shard(mask, rank, world),
                           shard(y_one, rank, world), True).items():
        loss = fn()
        loss.backward()
        out[name] = (loss.detach(), z[name].grad, r[name].grad, second[name].grad)
    return out


def test_ref_and_zero_option_gathered_equal_full_batch():
    torch.manual_seed(0)
    n, world = 8, 2
    feats = F.normalize(torch.randn(n, 2, 5), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 1, 0])
    ref = F.normalize(torch.randn(6, 5), dim=-1)
    ref_labels = torch.tensor([0, 1, 2, 1, 0, 1])
    mask = torch.ones(n, n)
    mask[5, 1] = 0.0  # the only zero-weight column, on rank 1: rank 0's rows have no negative locally
    y_one = torch.tensor([0, 0, 0, 0, 0, 0, 1, 0])  # rank 0 sees one label only
    res = run_distributed(_worker, world, feats, labels, ref, ref_labels, mask, y_one)

    z, r, second = _leaves(feats, ref)
    # the single-process reference set of zero_ref is the two ranks' 3-row label slices
    y_ref_full = torch.cat([y_one[:3], y_one[4:7]])
    full_cases = _cases(z, labels, r, ref_labels, second, mask, y_one, False)
    full_cases["zero_ref"] = lambda: supcon_loss(z["zero_ref"], y_one, ref_features=r["zero_ref"],
                                                 ref_labels=y_ref_full, zero_if_no_negatives=True, temperature=0.2)
    for name, fn in full_cases.items():
        full = fn()
        full.backward()
        per_rank = torch.stack([res_r[name][0] for res_r in res])
        torch.testing.assert_close(per_rank.mean(), full.detach(), msg=name)
        if name == "zero_none":
            assert full.item() == 0.0 and (per_rank == 0).all()
        else:
            assert full.item() > 0 and (per_rank > 0).all(), name  # the global negatives count on every rank
        for k, leaf in ((1, z[name]), (2, r[name]), (3, second[name])):
            if leaf.grad is None:
                assert all(res_r[name][k] is None for res_r in res), name
                continue
            local = torch.cat([res_r[name][k] for res_r in res]) / world
            torch.testing.assert_close(local, leaf.grad, msg=f"{name} grad {k}")
