"""Boosted Contrastive Learning: per-pair NT-Xent vs the official nt_xent, the momentum tracker
(first epoch raw, then EMA), the strength normalisation, state_dict and 2 ranks."""

import pytest
import torch
import torch.nn.functional as F

import tailwise
from dist_harness import run_distributed, shard
from tailwise.functional import boosted_cl_loss


def nt_xent_official(x, t=0.2):
    """MediaBrain-SJTU/BCL losses/nt_xent.py (average=False), re-expressed on CPU.

    ``x`` is (2B, D) with rows 2i, 2i+1 the two views of sample i."""
    out = F.normalize(x, dim=-1)
    b = out.shape[0] // 2
    out = out.view(b, 2, -1)
    o1, o2 = out[:, 0], out[:, 1]
    out = torch.cat([o1, o2], 0)
    neg = torch.exp(out @ out.t() / t)
    mask = torch.ones(b, 2 * b, dtype=torch.bool)
    for i in range(b):
        mask[i, i] = False
        mask[i, i + b] = False
    mask = torch.cat([mask, mask], 0)
    neg = neg.masked_select(mask).view(2 * b, -1)
    pos = torch.exp((o1 * o2).sum(-1) / t)
    pos = torch.cat([pos, pos], 0)
    loss = -torch.log(pos / (pos + neg.sum(-1)))
    return loss.view(2, b).mean(0)


def test_matches_official_nt_xent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2, 5, generator=g, dtype=torch.float64)
    ref = nt_xent_official(x.reshape(14, 5))
    torch.testing.assert_close(boosted_cl_loss(x, normalize=True, reduction="none"), ref)
    torch.testing.assert_close(boosted_cl_loss(x, normalize=True), ref.mean())
    xr = x.clone().requires_grad_(True)
    g1, = torch.autograd.grad(boosted_cl_loss(xr, normalize=True), xr)
    g2, = torch.autograd.grad(nt_xent_official(xr.reshape(14, 5)).mean(), xr)
    torch.testing.assert_close(g1, g2)


def test_gradcheck_and_errors():
    x = F.normalize(torch.randn(3, 2, 4, dtype=torch.float64), dim=-1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: boosted_cl_loss(z, normalize=True), (x,))
    with pytest.raises(ValueError, match="two views"):
        boosted_cl_loss(torch.randn(3, 3, 4), normalize=True)
    with pytest.raises(ValueError, match="normalised"):
        boosted_cl_loss(torch.randn(3, 2, 4) * 3)
    with pytest.raises(ValueError, match="temperature"):
        boosted_cl_loss(x, temperature=0.0)


def test_tracker_first_epoch_raw_then_ema_and_weights():
    tr = tailwise.MomentumLossTracker(num_samples=5, momentum=0.9)
    assert torch.equal(tr.weights, torch.zeros(5))
    tr.update(torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    tr.update(torch.tensor([1]), torch.tensor([7.0]))  # within the first epoch: overwrite
    torch.testing.assert_close(tr.momentum_loss, torch.tensor([1.0, 7.0, 3.0, 4.0, 5.0]))
    w = tr.end_epoch()
    m = torch.tensor([1.0, 7.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    u = (m - m.mean()) / m.std()
    torch.testing.assert_close(w, (u / (2 * u.abs().max()) + 0.5).float())
    tr.update(torch.tensor([0, 2]), torch.tensor([11.0, 3.0]))
    torch.testing.assert_close(tr.momentum_loss[[0, 2]], torch.tensor([0.1 * 11 + 0.9 * 1, 3.0]))
    other = tailwise.MomentumLossTracker(num_samples=5, momentum=0.9)
    other.load_state_dict(tr.state_dict())
    other.update(torch.tensor([4]), torch.tensor([0.0]))
    assert other.momentum_loss[4].item() == pytest.approx(0.9 * 5.0)  # restored past the first epoch
    assert torch.all((w >= 0) & (w <= 1))
    torch.testing.assert_close(tailwise.momentum_weights(torch.ones(4)), torch.full((4,), 0.5))


def test_module_records_in_training_only():
    crit = tailwise.BoostedCLLoss(num_samples=10, normalize=True)
    x, idx = torch.randn(4, 2, 6), torch.tensor([3, 5, 7, 9])
    loss = crit(x, idx)
    torch.testing.assert_close(crit.tracker.momentum_loss[idx], boosted_cl_loss(x, normalize=True, reduction="none"))
    torch.testing.assert_close(loss, boosted_cl_loss(x, normalize=True))
    crit.eval()
    crit(x, torch.tensor([0, 1, 2, 4]))
    assert crit.tracker.momentum_loss[[0, 1, 2, 4]].abs().sum() == 0


def _tracker_worker(rank, world, x, idx):
    crit = tailwise.BoostedCLLoss(num_samples=12, normalize=True, gather_distributed=True)
    crit(shard(x, rank, world), shard(idx, rank, world))
    crit.tracker.end_epoch()
    return {"m": crit.tracker.momentum_loss, "w": crit.tracker.weights}


@pytest.mark.distributed
def test_tracker_two_ranks_equal_one_process():
    g = torch.Generator().manual_seed(3)
    x, idx = torch.randn(8, 2, 6, generator=g), torch.tensor([0, 2, 4, 6, 8, 10, 11, 1])
    res = run_distributed(_tracker_worker, 2, x, idx)
    full = tailwise.BoostedCLLoss(num_samples=12, normalize=True)
    full(x, idx)
    full.tracker.end_epoch()
    for r in res:
        torch.testing.assert_close(r["m"], full.tracker.momentum_loss)
        torch.testing.assert_close(r["w"], full.tracker.weights)
