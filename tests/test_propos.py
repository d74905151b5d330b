"""ProPos: PSA + PSL vs a transcription of the official BYOLWrapper, spherical k-means, 2 ranks."""

import pytest
import torch
import torch.nn.functional as F

import tailwise
from dist_harness import run_distributed, shard
from tailwise.functional import propos_loss


def official_centers(x, labels, k):
    weight = torch.zeros(k, x.shape[0], dtype=x.dtype)
    weight[labels, torch.arange(x.shape[0])] = 1
    weight = F.normalize(weight, p=1, dim=1)
    return F.normalize(weight @ x, dim=1)


def official_cluster_loss(qc, kc, t, labels, k):
    d_q = qc @ qc.T / t
    d_k = (qc * kc).sum(1) / t
    d_q = d_q.clone()
    d_q[torch.arange(k), torch.arange(k)] = d_k
    zero = torch.arange(k)[F.one_hot(torch.unique(labels), k).sum(0) == 0]
    mask = torch.zeros(k, k, dtype=torch.bool)
    mask[:, zero] = True
    d_q = d_q.masked_fill(mask, -10)
    pos = d_q.diag()
    offdiag = torch.ones(k, k).fill_diagonal_(0).bool()
    neg = d_q[offdiag].reshape(-1, k - 1)
    loss = -pos + torch.logsumexp(torch.cat([pos.reshape(k, 1), neg], 1), 1)
    loss[zero] = 0.0
    return loss.sum() / (k - len(zero))


def official(q, p, kk, labels, k, t=0.5, lam=0.1):
    kn = F.normalize(kk, dim=1)
    psa = -2 * F.cosine_similarity(p, kn).mean()
    qn = F.normalize(q, dim=1)
    psl = official_cluster_loss(official_centers(qn, labels, k), official_centers(kn, labels, k), t, labels, k)
    return psa + lam * psl


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1], [0, 1, 0, 1, 4, 4, 0, 1, 4, 0]])
def test_matches_official(labels):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    kk = torch.randn(10, 6, generator=g, dtype=torch.float64)
    lab = torch.tensor(labels)
    ours = propos_loss(q, p, kk, lab, 5)
    ref = official(q, p, kk, lab, 5)
    torch.testing.assert_close(ours, ref)
    g1 = torch.autograd.grad(ours, (q, p))
    g2 = torch.autograd.grad(ref, (q, p))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_gradcheck_and_invariances():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    kk = torch.randn(8, 4, generator=g, dtype=torch.float64)
    lab = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert torch.autograd.gradcheck(lambda a, b: propos_loss(a, b, kk, lab, 3), (q, p))
    # scale invariance of every term (cosines and normalised centres)
    torch.testing.assert_close(propos_loss(3 * q, 2 * p, 5 * kk, lab, 3), propos_loss(q, p, kk, lab, 3))
    # relabelling clusters by a permutation leaves the loss unchanged
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(propos_loss(q, p, kk, perm[lab], 3), propos_loss(q, p, kk, lab, 3))


def test_errors_and_perturb():
    q = torch.randn(4, 3)
    lab = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="pseudo_labels"):
        propos_loss(q, q, q, torch.tensor([0, 1, 5, 1]), 3)
    with pytest.raises(ValueError, match="p and k"):
        propos_loss(q, q[:3], q, lab, 2)
    with pytest.raises(ValueError, match="num_clusters"):
        propos_loss(q, q, q, lab, 1)
    torch.manual_seed(0)
    noisy = tailwise.propos_perturb(q, 1e-3)
    assert 0 < (noisy - q).abs().max() < 1e-2


def _kmeans_naive(x, centers, iters=100):
    x = F.normalize(x, dim=1)
    for _ in range(iters):
        lab = (x @ centers.T).argmax(1)
        centers = torch.stack([F.normalize(x[lab == c].mean(0), dim=0) if (lab == c).any() else centers[c]
                               for c in range(centers.shape[0])])
    return lab, centers


def test_spherical_kmeans_recovers_directions_and_is_lloyd_fixed_point():
    g = torch.Generator().manual_seed(2)
    dirs = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    x = torch.cat([d + 0.1 * torch.randn(30, 8, generator=g) for d in dirs])
    res = tailwise.spherical_kmeans(x, 4, n_init=3, seed=1)
    truth = torch.arange(4).repeat_interleave(30)
    # each true group maps to one cluster, bijectively
    pairs = set(zip(truth.tolist(), res.labels.tolist()))
    assert len(pairs) == 4
    lab2, cen2 = _kmeans_naive(x, res.centers)
    assert torch.equal(lab2, res.labels)
    torch.testing.assert_close(cen2, res.centers, atol=1e-5, rtol=1e-5)
    xn = F.normalize(x, dim=1)
    assert res.inertia.item() == pytest.approx((1 - (xn * res.centers[res.labels]).sum(1)).sum().item(), rel=1e-5)
    again = tailwise.spherical_kmeans(x, 4, n_init=3, seed=1)
    assert torch.equal(again.labels, res.labels)
    with pytest.raises(ValueError, match="num_clusters"):
        tailwise.spherical_kmeans(x, 0)


def _propos_worker(rank, world, q, p, kk, lab):
    qs = shard(q, rank, world).clone().requires_grad_(True)
    ps = shard(p, rank, world).clone().requires_grad_(True)
    loss = propos_loss(qs, ps, shard(kk, rank, world), shard(lab, rank, world), 4, gather_distributed=True)
    loss.backward()
    return {"loss": loss.detach(), "gq": qs.grad, "gp": ps.grad}


@pytest.mark.distributed
def test_two_ranks_equal_one_process():
    g = torch.Generator().manual_seed(3)
    q, p, kk = (torch.randn(10, 5, generator=g) for _ in range(3))
    # cluster 3 lives only on rank 1: the absent mask must come from the gathered labels
    lab = torch.tensor([0, 1, 2, 0, 1, 3, 3, 0, 1, 2])
    res = run_distributed(_propos_worker, 2, q, p, kk, lab)
    qf, pf = q.clone().requires_grad_(True), p.clone().requires_grad_(True)
    full = propos_loss(qf, pf, kk, lab, 4)
    full.backward()
    torch.testing.assert_close((res[0]["loss"] + res[1]["loss"]) / 2, full.detach())
    # all_gather_with_grad sums the replicated PSL gradient over ranks; DDP averages: W x full
    torch.testing.assert_close(torch.cat([r["gq"] for r in res]) / 2, qf.grad)
    torch.testing.assert_close(torch.cat([r["gp"] for r in res]) / 2, pf.grad)
