"""Contrastive family: hand values, official-formula transcriptions, naive loops, gradcheck, edge cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import tailwise
from tailwise.functional import (bcl_loss, byol_loss, dcl_loss, dclw_loss, info_nce_loss, paco_loss,
                                 supcon_loss)


def unit(*shape, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


# ---------------------------------------------------------------- transcriptions of official code
def official_supcon(features, labels=None, mask=None, temperature=0.07, contrast_mode="all",
                    base_temperature=0.07):
    """HobbitLong/SupContrast losses.py SupConLoss.forward, dense float masks (reference semantics)."""
    bsz = features.shape[0]
    if labels is None and mask is None:
        mask = torch.eye(bsz, dtype=features.dtype)
    elif labels is not None:
        mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).to(features.dtype)
    else:
        mask = mask.to(features.dtype)
    cc = features.shape[1]
    cf = torch.cat(torch.unbind(features, dim=1), dim=0)
    af, ac = (features[:, 0], 1) if contrast_mode == "one" else (cf, cc)
    adc = af @ cf.T / temperature
    logits = adc - adc.max(1, keepdim=True)[0].detach()
    mask = mask.repeat(ac, cc)
    lmask = torch.scatter(torch.ones_like(mask), 1, torch.arange(bsz * ac).view(-1, 1), 0)
    mask = mask * lmask
    log_prob = logits - torch.log((torch.exp(logits) * lmask).sum(1, keepdim=True))
    mpp = mask.sum(1)
    mpp = torch.where(mpp < 1e-6, torch.ones_like(mpp), mpp)
    loss = -(temperature / base_temperature) * (mask * log_prob).sum(1) / mpp
    return loss.view(ac, bsz).mean()


def official_paco(features, labels, sup_logits, weight, alpha, beta, gamma, temperature, base_temperature,
                  num_classes, K=0, smooth=0.0, supt=1.0):
    """GPaCo/LT/losses.py PaCoLoss.forward (features = cat(q, k, queue), K queue rows)."""
    batch_size = features.shape[0] - K
    labels = labels.view(-1, 1)
    mask = torch.eq(labels[:batch_size], labels.T).to(features.dtype)
    adc = features[:batch_size] @ features.T / temperature
    if weight is not None:
        adc = torch.cat(((sup_logits + torch.log(weight + 1e-9)) / supt, adc), dim=1)
    else:
        adc = torch.cat((sup_logits / supt, adc), dim=1)
    logits = adc - adc.max(1, keepdim=True)[0].detach()
    lmask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size).view(-1, 1), 0)
    mask = mask * lmask
    oh = F.one_hot(labels[:batch_size].view(-1), num_classes).to(features.dtype)
    oh = smooth / (num_classes - 1) * (1 - oh) + (1 - smooth) * oh
    mask = torch.cat((oh * beta, mask * alpha), dim=1)
    lmask = torch.cat((torch.ones(batch_size, num_classes, dtype=features.dtype), gamma * lmask), dim=1)
    log_prob = logits - torch.log((torch.exp(logits) * lmask).sum(1, keepdim=True) + 1e-12)
    mlpp = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(temperature / base_temperature) * mlpp).mean()


def official_bcl(centers1, features, targets, num_classes, temperature):
    """FlamieZhu/Balanced-Contrastive-Learning loss/contrastive.py BalSCL.forward."""
    bs = features.shape[0]
    targets = targets.view(-1, 1)
    tc = torch.arange(num_classes).view(-1, 1)
    targets = torch.cat([targets.repeat(2, 1), tc], dim=0)
    count = torch.eye(num_classes)[targets].sum(dim=0).squeeze()
    mask = torch.eq(targets[:2 * bs], targets.T).to(features.dtype)
    lmask = torch.scatter(torch.ones_like(mask), 1, torch.arange(bs * 2).view(-1, 1), 0)
    mask = mask * lmask
    f = torch.cat(torch.unbind(features, dim=1), dim=0)
    f = torch.cat([f, centers1], dim=0)
    logits = f[:2 * bs].mm(f.T) / temperature
    logits = logits - logits.max(1, keepdim=True)[0].detach()
    exp_logits = torch.exp(logits) * lmask
    piw = torch.tensor([count[i] for i in targets], dtype=features.dtype).view(1, -1).expand(
        2 * bs, 2 * bs + num_classes) - mask
    log_prob = logits - torch.log(exp_logits.div(piw).sum(1, keepdim=True))
    return (-(mask * log_prob).sum(1) / mask.sum(1)).view(2, bs).mean()


def official_dcl(z1, z2, temperature=0.1, weight_fn=None):
    """raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py (both directions summed)."""
    def one_way(a, b):
        pos = -(a * b).sum(1) / temperature
        if weight_fn is not None:
            pos = pos * weight_fn(a, b)
        neg_sim = torch.cat((a @ a.t(), a @ b.t()), 1) / temperature
        neg_mask = torch.eye(a.size(0), dtype=a.dtype).repeat(1, 2)
        return (pos + torch.logsumexp(neg_sim + neg_mask * np.log(1e-45), 1)).mean()
    return one_way(z1, z2) + one_way(z2, z1)


# ---------------------------------------------------------------- naive loops (written differently)
def naive_supcon(feats, pos, t, tb, anchors_views):
    """feats (N, V, D); pos(i, j) -> positive weight between samples; loops over anchors."""
    n, v, _ = feats.shape
    total = []
    for a_v in anchors_views:
        for i in range(n):
            za = feats[i, a_v]
            logits, weights = [], []
            for c_v in range(v):
                for j in range(n):
                    if (c_v, j) == (a_v, i):
                        continue
                    logits.append(float(za @ feats[j, c_v]) / t)
                    weights.append(pos(i, j))
            logits = np.array(logits)
            lse = np.log(np.exp(logits).sum())
            w = np.array(weights, dtype=float)
            total.append(0.0 if w.sum() < 1e-12 else -(t / tb) * float((w * (logits - lse)).sum() / w.sum()))
    return float(np.mean(total))


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_supcon_matches_official_and_naive(views, mode):
    z = unit(9, views, 5)
    y = torch.randint(0, 3, (9,))
    m = (torch.rand(9, 9) > 0.4).double()
    anchors = [0] if mode == "one" else list(range(views))
    for kw, pos in ((dict(labels=y), lambda i, j: float(y[i] == y[j])), ({}, lambda i, j: float(i == j)),
                    (dict(mask=m), lambda i, j: float(m[i, j]))):
        ours = supcon_loss(z, temperature=0.3, base_temperature=0.5, contrast_mode=mode, chunk_size=4, **kw)
        ref = official_supcon(z, temperature=0.3, base_temperature=0.5, contrast_mode=mode, **kw)
        torch.testing.assert_close(ours, ref)
        assert ours.item() == pytest.approx(naive_supcon(z, pos, 0.3, 0.5, anchors), rel=1e-9)


def test_supcon_hand_value():
    # A's two views = e1, B's two views = e2, SimCLR positives, tau = 1: each anchor sees
    # positive e^1 among e^1 + 2 e^0, so the loss is log(1 + 2/e)
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    assert supcon_loss(z, temperature=1.0, base_temperature=1.0).item() == pytest.approx(math.log(1 + 2 / math.e))
    # info_nce is the same NT-Xent
    assert info_nce_loss(z, temperature=1.0).item() == pytest.approx(math.log(1 + 2 / math.e))


def test_supcon_no_positives_is_zero_with_finite_grad():
    z = unit(4, 1, 3).requires_grad_()
    loss = supcon_loss(z, torch.arange(4))  # V=1, all labels distinct: nobody has a positive
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    # mixed: the lone sample contributes 0 but counts in the mean (reference behaviour)
    z = unit(3, 1, 3)
    y = torch.tensor([0, 0, 1])
    torch.testing.assert_close(supcon_loss(z, y), official_supcon(z, y))


def test_supcon_v1_defined():
    z = unit(6, 4)  # (N, D) means one view
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(supcon_loss(z, y), official_supcon(z[:, None], y))


def test_bad_inputs():
    z = unit(4, 2, 3)
    with pytest.raises(ValueError, match="features must be L2-normalised"):
        supcon_loss(z * 2, torch.arange(4))
    torch.testing.assert_close(supcon_loss(z * 2, torch.arange(4), normalize=True), supcon_loss(z, torch.arange(4)))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        supcon_loss(z, torch.arange(5))
    with pytest.raises(TypeError, match="labels must hold integer"):
        supcon_loss(z, torch.zeros(4))
    with pytest.raises(ValueError, match="features must be 2-D or 3-D"):
        supcon_loss(torch.ones(4))
    with pytest.raises(ValueError, match="not both"):
        supcon_loss(z, torch.arange(4), torch.eye(4))
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 4\)"):
        supcon_loss(z, mask=torch.eye(3))
    with pytest.raises(ValueError, match="contrast_mode"):
        supcon_loss(z, contrast_mode="two")
    with pytest.raises(ValueError, match=r"features must have shape \(N, 2, D\)"):
        info_nce_loss(unit(4, 3, 3))
    with pytest.raises(ValueError, match=r"sup_logits must have shape"):
        paco_loss(z, torch.arange(4), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"centers must have shape \(C, 3\)"):
        bcl_loss(z, torch.arange(4) % 2, unit(2, 4))
    with pytest.raises(ValueError, match=r"labels must be class indices"):
        bcl_loss(z, torch.arange(4), unit(2, 3))
    with pytest.raises(ValueError, match="target must have the same shape"):
        byol_loss(torch.randn(3, 2), torch.randn(3, 4))


def test_paco_matches_official():
    n, v, c, d, k = 7, 2, 4, 5, 6
    z = unit(n, v, d)
    y = torch.randint(0, c, (n,))
    queue, ql = unit(k, d), torch.randint(0, c, (k,))
    sup = torch.randn(n * v, c, dtype=torch.float64)
    counts = torch.tensor([50.0, 20.0, 5.0, 1.0], dtype=torch.float64)
    prior = (counts / counts.sum()).view(1, c)
    for kw in (dict(alpha=0.05, beta=1.0, gamma=1.0, smooth=0.0), dict(alpha=0.5, beta=0.7, gamma=0.3, smooth=0.1)):
        feats_off = torch.cat([z[:, 0], z[:, 1], queue])
        labels_off = torch.cat([y, y, ql])
        ref = official_paco(feats_off, labels_off, sup, prior, kw["alpha"], kw["beta"], kw["gamma"], 0.2, 0.3, c,
                            K=k, smooth=kw["smooth"])
        ours = paco_loss(z, y, sup.view(v, n, c).transpose(0, 1), class_counts=counts, alpha=kw["alpha"],
                         beta=kw["beta"], gamma=kw["gamma"], temperature=0.2, base_temperature=0.3,
                         smoothing=kw["smooth"], queue=queue, queue_labels=ql, chunk_size=3)
        # the official adds 1e-9 to the prior and 1e-12 inside the log
        torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-7)


def test_bcl_matches_official_and_no_nan_singletons():
    n, c, d = 8, 5, 6
    z = unit(n, 2, d)
    centers = unit(c, d)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0])  # class 4 absent: its prototype is a negative only
    torch.testing.assert_close(bcl_loss(z, y, centers, temperature=0.1, chunk_size=5),
                               official_bcl(centers, z, y, c, 0.1))
    loss = bcl_loss(z, torch.arange(n) % c, centers)
    assert torch.isfinite(loss)


def test_dcl_matches_official():
    z = unit(6, 2, 4)
    torch.testing.assert_close(dcl_loss(z, temperature=0.2), official_dcl(z[:, 0], z[:, 1], 0.2))
    n = z.shape[0]
    # paper weight (mean 1): 2 - N softmax; the official repo omits N
    wfn = lambda a, b: 2 - n * torch.softmax((a * b).sum(1) / 0.5, 0)  # noqa: E731
    torch.testing.assert_close(dclw_loss(z, temperature=0.2), official_dcl(z[:, 0], z[:, 1], 0.2, wfn))


def test_info_nce_queue_is_moco_cross_entropy():
    z = unit(5, 2, 4)
    queue = unit(7, 4)
    logits = torch.cat([(z[:, 0] * z[:, 1]).sum(1, keepdim=True), z[:, 0] @ queue.T], 1) / 0.07
    ref = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(info_nce_loss(z, queue), ref)


def test_byol_values():
    p = torch.randn(5, 3, dtype=torch.float64)
    z = torch.randn(5, 3, dtype=torch.float64)
    ref = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1).mean()
    torch.testing.assert_close(byol_loss(p, z), ref)
    assert byol_loss(p, p).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0)


def test_gradcheck_all():
    torch.manual_seed(1)
    y = torch.tensor([0, 1, 0, 1, 2])
    z = unit(5, 2, 3).requires_grad_()
    sup = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    cen = unit(3, 3).requires_grad_()
    q = unit(4, 3)
    # normalize=True keeps perturbed inputs valid
    checks = [
        lambda x: supcon_loss(x, y, normalize=True, temperature=0.5, chunk_size=3),
        lambda x: supcon_loss(x, normalize=True, temperature=0.5, contrast_mode="one"),
        lambda x: info_nce_loss(x, q, normalize=True, temperature=0.5),
        lambda x: dcl_loss(x, normalize=True, temperature=0.5, chunk_size=4),
        lambda x: dclw_loss(x, normalize=True, temperature=0.5),
    ]
    for fn in checks:
        assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradcheck(
        lambda x, s: paco_loss(x, y, s, class_counts=[3, 2, 1], alpha=0.3, normalize=True, chunk_size=2), (z, sup))
    assert torch.autograd.gradcheck(
        lambda x, c: bcl_loss(x, y, c, normalize=True, temperature=0.5, chunk_size=3), (z, cen))
    assert torch.autograd.gradcheck(lambda a, b: byol_loss(a, b), (sup, sup.detach().flip(0).requires_grad_()))


@pytest.mark.parametrize("fn", ["supcon", "info_nce", "dcl", "dclw", "paco", "bcl"])
def test_bf16_autocast_and_huge_logits_finite(fn):
    z = unit(6, 2, 4, dtype=torch.float32).requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    cen = F.normalize(torch.randn(3, 4), dim=-1)
    call = {
        "supcon": lambda x: supcon_loss(x, y, temperature=1e-3),
        "info_nce": lambda x: info_nce_loss(x, temperature=1e-3),
        "dcl": lambda x: dcl_loss(x, temperature=1e-3),
        "dclw": lambda x: dclw_loss(x, temperature=1e-3, sigma=1e-3),
        "paco": lambda x: paco_loss(x, y, 1e4 * torch.randn(6, 3), temperature=1e-3),
        "bcl": lambda x: bcl_loss(x, y, cen, temperature=1e-3),
    }[fn]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = call(z.bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_empty_batch():
    z = torch.zeros(0, 2, 4, requires_grad=True)
    for loss in (supcon_loss(z, torch.zeros(0, dtype=torch.long)), info_nce_loss(z), dcl_loss(z)):
        assert loss.item() == 0.0
        loss.backward()


def test_reduction_none_and_weight():
    z = unit(6, 2, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    per = supcon_loss(z, y, reduction="none")
    assert per.shape == (6,)
    torch.testing.assert_close(per.mean(), supcon_loss(z, y))
    w = torch.rand(6, dtype=torch.float64)
    torch.testing.assert_close(supcon_loss(z, y, sample_weight=w, reduction="sum"), (per * w).sum())


def test_registry_and_modules():
    z = unit(6, 2, 4, dtype=torch.float32)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    assert {"info_nce", "supcon", "dcl", "dclw", "paco", "bcl", "byol"} <= set(tailwise.list_losses())
    torch.testing.assert_close(tailwise.build_loss("supcon", temperature=0.1)(z, y), supcon_loss(z, y, temperature=0.1))
    torch.testing.assert_close(tailwise.build_loss("dclw")(z), dclw_loss(z))
    torch.testing.assert_close(tailwise.build_loss("info_nce")(z), info_nce_loss(z))
    cen = F.normalize(torch.randn(3, 4), dim=-1)
    torch.testing.assert_close(tailwise.build_loss("bcl")(z, y, cen), bcl_loss(z, y, cen))


def test_paco_module_state_dict_and_grad():
    crit = tailwise.PaCoLoss(num_classes=3, in_features=4, class_counts=[5, 3, 1], alpha=0.2)
    z = F.normalize(torch.randn(6, 2, 4), dim=-1)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = crit(z, y)
    loss.backward()
    assert crit.centers.grad is not None and torch.isfinite(crit.centers.grad).all()
    other = tailwise.PaCoLoss(num_classes=3, in_features=4, class_counts=[5, 3, 1], alpha=0.2)
    other.load_state_dict(crit.state_dict())
    torch.testing.assert_close(other(z, y), loss.detach())
    ref = paco_loss(z, y, z @ crit.centers.detach().T + crit.bias.detach(), class_counts=[5, 3, 1], alpha=0.2)
    torch.testing.assert_close(loss.detach(), ref)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 9), v=st.integers(1, 3), chunk=st.integers(1, 7))
def test_hypothesis_supcon_chunking_and_permutation(seed, n, v, chunk):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, v, 4, generator=g, dtype=torch.float64), dim=-1)
    y = torch.randint(0, 3, (n,), generator=g)
    full = supcon_loss(z, y)
    torch.testing.assert_close(supcon_loss(z, y, chunk_size=chunk), full)
    torch.testing.assert_close(full, official_supcon(z, y))
    perm = torch.randperm(n, generator=g)
    torch.testing.assert_close(supcon_loss(z[perm], y[perm]), full)
    # relabelling classes does not matter
    torch.testing.assert_close(supcon_loss(z, 7 - 2 * y), full)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 7))
def test_hypothesis_bcl_paco_dcl(seed, n):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, 2, 3, generator=g, dtype=torch.float64), dim=-1)
    y = torch.randint(0, 3, (n,), generator=g)
    cen = F.normalize(torch.randn(3, 3, generator=g, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(bcl_loss(z, y, cen, chunk_size=2), official_bcl(cen, z, y, 3, 0.07))
    sup = torch.randn(2 * n, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        paco_loss(z, y, sup.view(2, n, 3).transpose(0, 1), alpha=0.3),
        official_paco(torch.cat([z[:, 0], z[:, 1]]), torch.cat([y, y]), sup, None, 0.3, 1.0, 1.0, 0.2, 0.2, 3),
        rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(dcl_loss(z, chunk_size=3), official_dcl(z[:, 0], z[:, 1]))
