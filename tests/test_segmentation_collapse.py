"""Tests of the CeCo-style neural-collapse regulariser and its simplex ETF."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tailwise
from dist_harness import run_distributed
from tailwise.functional import neural_collapse_loss, simplex_etf


def _naive(features, target, num_classes, etf, *, scale=5.0, class_counts=None, smoothing=0.0,
           ignore_index=-100):
    """float64 numpy: pixel loops for the centres, explicit CE per present class."""
    f = features.detach().double().numpy()
    t = target.numpy()
    m = etf.double().numpy()
    n, d = f.shape[:2]
    f = f.reshape(n, d, -1)
    t = t.reshape(n, -1)
    sums = np.zeros((num_classes, d))
    counts = np.zeros(num_classes)
    for i in range(n):
        for j in range(f.shape[2]):
            if t[i, j] == ignore_index:
                continue
            sums[t[i, j]] += f[i, :, j]
            counts[t[i, j]] += 1
    losses = {}
    for c in range(num_classes):
        if counts[c] == 0:
            continue
        mu = sums[c] / counts[c]
        mu = mu / np.linalg.norm(mu)
        z = scale * (m @ mu)
        if class_counts is not None:
            prior = np.asarray(class_counts, dtype=np.float64)
            z = z + np.log(prior / prior.sum())
        logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        q = np.full(num_classes, smoothing / (num_classes - 1))
        q[c] = 1 - smoothing
        losses[c] = -(q * logp).sum()
    return losses


def test_simplex_etf_geometry_and_seed():
    for k, d in [(2, 2), (5, 5), (7, 32)]:
        m = simplex_etf(k, d, seed=3, dtype=torch.float64)
        assert m.shape == (k, d)
        gram = m @ m.T
        expected = torch.full((k, k), -1.0 / (k - 1), dtype=torch.float64)
        expected.fill_diagonal_(1.0)
        torch.testing.assert_close(gram, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(m.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(simplex_etf(4, 9, seed=1), simplex_etf(4, 9, seed=1))
    assert not torch.allclose(simplex_etf(4, 9, seed=1), simplex_etf(4, 9, seed=2))
    with pytest.raises(ValueError, match=r"dim must be an int >= num_classes \(5\)"):
        simplex_etf(5, 4)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        simplex_etf(1, 4)


def test_hand_value_two_classes():
    # K = 2, D = 2: ETF rows are +-v; a centre aligned with its own row gets logits (s, -s)
    etf = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    feats = torch.tensor([[[[2.0, 4.0]], [[0.0, 0.0]]]], dtype=torch.float64)  # (1, 2, 1, 2): both class 0
    target = torch.tensor([[[0, 0]]])
    got = neural_collapse_loss(feats, target, 2, etf=etf, scale=5.0)
    assert got.item() == pytest.approx(np.log1p(np.exp(-10.0)), rel=1e-12)
    # orthogonal centre: logits (0, 0) -> log 2
    feats = torch.tensor([[[[0.0]], [[3.0]]]], dtype=torch.float64)
    got = neural_collapse_loss(feats, torch.tensor([[[1]]]), 2, etf=etf)
    assert got.item() == pytest.approx(np.log(2.0), rel=1e-12)


@pytest.mark.parametrize("opts", [{}, {"class_counts": [50, 5, 20, 1, 9]}, {"label_smoothing": 0.2},
                                  {"scale": 1.3, "class_counts": [3, 3, 1, 1, 2], "label_smoothing": 0.1}])
def test_matches_naive(opts):
    k, d = 5, 8
    feats = torch.randn(3, d, 4, 5, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 4, 5))  # class 4 absent
    target[0, 0] = -100
    etf = simplex_etf(k, d, seed=0, dtype=torch.float64)
    ref = _naive(feats, target, k, etf, scale=opts.get("scale", 5.0), class_counts=opts.get("class_counts"),
                 smoothing=opts.get("label_smoothing", 0.0))
    got = neural_collapse_loss(feats, target, k, **opts)
    assert got.item() == pytest.approx(np.mean(list(ref.values())), rel=1e-10)
    assert neural_collapse_loss(feats, target, k, reduction="sum", **opts).item() == pytest.approx(
        sum(ref.values()), rel=1e-10)
    per = neural_collapse_loss(feats, target, k, reduction="none", **opts)
    assert per.shape == (k,)
    for c in range(k):
        assert per[c].item() == pytest.approx(ref.get(c, 0.0), rel=1e-10, abs=1e-15)


def test_absent_classes_are_skipped_and_invariances():
    k, d = 6, 10
    feats = torch.randn(2, d, 3, 3, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 3, 3))  # only classes 0, 1
    loss = neural_collapse_loss(feats, target, k)
    ref = _naive(feats, target, k, simplex_etf(k, d, dtype=torch.float64))
    assert set(ref) == {0, 1}
    assert loss.item() == pytest.approx(np.mean(list(ref.values())), rel=1e-10)
    # invariant to the pixel order and to a positive rescaling of all features (centres are normalised)
    perm = torch.randperm(18)
    f2 = feats.flatten(2).permute(0, 2, 1).reshape(18, d)[perm].T.reshape(1, d, 18)
    t2 = target.reshape(18)[perm].reshape(1, 18)
    torch.testing.assert_close(neural_collapse_loss(f2, t2, k), loss)
    torch.testing.assert_close(neural_collapse_loss(7.5 * feats, target, k), loss)
    # ignored pixels do not matter, whatever their features
    t3 = target.clone()
    t3[:, 0] = 255
    f3 = feats.clone()
    f3[:, :, 0] = 1e3 * torch.randn(2, d, 3, dtype=torch.float64)
    torch.testing.assert_close(neural_collapse_loss(f3, t3, k, ignore_index=255),
                               neural_collapse_loss(feats, t3, k, ignore_index=255))


def test_gradcheck():
    feats = torch.randn(2, 6, 3, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 2))
    target[0, 0, 0] = -100
    assert torch.autograd.gradcheck(
        lambda f: neural_collapse_loss(f, target, 5, class_counts=[1, 2, 3, 4, 5], label_smoothing=0.1), (feats,))
    assert torch.autograd.gradcheck(lambda f: neural_collapse_loss(f, target, 5, normalize=False, scale=0.5),
                                    (feats,))


def test_edge_cases():
    # all pixels ignored: 0 with a gradient of zeros
    feats = torch.randn(2, 8, 3, 3, requires_grad=True)
    loss = neural_collapse_loss(feats, torch.full((2, 3, 3), -100), 4)
    loss.backward()
    assert loss.item() == 0.0 and (feats.grad == 0).all()
    # single pixel, 3-D volume, zero features (normalisation of a zero centre)
    for f, t in [(torch.randn(1, 8, 1, 1), torch.tensor([[[3]]])),
                 (torch.randn(2, 8, 2, 3, 2), torch.randint(0, 4, (2, 2, 3, 2))),
                 (torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))]:
        f.requires_grad_(True)
        loss = neural_collapse_loss(f, t, 4)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(f.grad).all()
    # bf16 autocast
    conv = torch.nn.Conv2d(8, 8, 1)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = conv(x)
        loss = neural_collapse_loss(z, torch.randint(0, 4, (2, 4, 4)), 4)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_errors():
    f = torch.randn(2, 8, 3, 3)
    t = torch.randint(0, 4, (2, 3, 3))
    with pytest.raises(ValueError, match=r"target must be class indices of shape \(2, 3, 3\)"):
        neural_collapse_loss(f, t[:, :2], 4)
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 3\]"):
        neural_collapse_loss(f, t + 1, 4)
    with pytest.raises(TypeError, match="features must be a floating-point tensor"):
        neural_collapse_loss(f.long(), t, 4)
    with pytest.raises(ValueError, match=r"dim must be an int >= num_classes \(9\)"):
        neural_collapse_loss(f, t, 9)
    with pytest.raises(ValueError, match=r"etf must have shape \(num_classes, D\) = \(4, 8\)"):
        neural_collapse_loss(f, t, 4, etf=torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(4\)"):
        neural_collapse_loss(f, t, 4, class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        neural_collapse_loss(f, t, 4, label_smoothing=1.0)


def test_module_registry_state_dict():
    mod = tailwise.build_loss("neural_collapse", num_classes=4, feat_dim=8, class_counts=[4, 3, 2, 1], seed=5)
    f = torch.randn(2, 8, 3, 3)
    t = torch.randint(0, 4, (2, 3, 3))
    torch.testing.assert_close(mod(f, t), neural_collapse_loss(f, t, 4, seed=5, class_counts=[4, 3, 2, 1]))
    fresh = tailwise.NeuralCollapseLoss(4, 8, class_counts=[1, 1, 1, 1], seed=0)
    fresh.load_state_dict(mod.state_dict())
    torch.testing.assert_close(fresh(f, t), mod(f, t))
    assert set(mod.state_dict()) == {"etf", "class_counts"}


@given(n=st.integers(1, 3), k=st.integers(2, 6), extra=st.integers(0, 4), h=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_property_sweep(n, k, extra, h, seed):
    g = torch.Generator().manual_seed(seed)
    d = k + extra
    feats = torch.randn(n, d, h, 2, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(-1, k, (n, h, 2), generator=g)
    loss = neural_collapse_loss(feats, target, k, ignore_index=-1)
    ref = _naive(feats, target, k, simplex_etf(k, d, dtype=torch.float64), ignore_index=-1)
    expect = np.mean(list(ref.values())) if ref else 0.0
    assert loss.item() == pytest.approx(expect, rel=1e-9, abs=1e-12)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    # bounded below by the loss of a perfectly collapsed centre: log(1 + (K-1) exp(-s K/(K-1)))
    assert not ref or loss.item() >= np.log1p((k - 1) * np.exp(-5.0 * k / (k - 1))) - 1e-9


# ---------------------------------------------------------------- distributed
def _model_loss(proj, x, t, k, gather=True):
    feats = torch.einsum("ed,ndhw->nehw", proj, x)
    return neural_collapse_loss(feats, t, k, class_counts=[5, 4, 3, 2, 1], gather_distributed=gather)


def _dist_worker(rank, world_size, proj, x, t, k, sizes):
    start = sum(sizes[:rank])
    xl = x[start:start + sizes[rank]].clone().requires_grad_(True)
    p = proj.clone().requires_grad_(True)
    loss = _model_loss(p, xl, t[start:start + sizes[rank]], k)
    loss.backward()
    # simulate DDP: average parameter gradients over ranks
    g = p.grad.clone()
    torch.distributed.all_reduce(g)
    g /= world_size
    local_only = _model_loss(proj, xl.detach(), t[start:start + sizes[rank]], k, gather=False)
    return {"loss": loss.detach(), "param_grad": g, "x_grad": xl.grad, "local_only": local_only}


def test_distributed_matches_full_batch():
    k, d = 5, 6
    proj = torch.randn(d, d, dtype=torch.float64)
    x = torch.randn(5, d, 3, 3, dtype=torch.float64)
    t = torch.randint(0, 3, (5, 3, 3))
    t[4] = torch.randint(3, 5, (3, 3))  # classes 3, 4 only on rank 1
    t[0, 0] = -100
    sizes = [2, 3]  # unequal shards
    p = proj.clone().requires_grad_(True)
    xf = x.clone().requires_grad_(True)
    full = _model_loss(p, xf, t, k)
    full.backward()
    res = run_distributed(_dist_worker, 2, proj, x, t, k, sizes)
    for rank, r in enumerate(res):
        torch.testing.assert_close(r["loss"], full.detach())
        torch.testing.assert_close(r["param_grad"], p.grad)
        start = sum(sizes[:rank])
        # each rank's features get the sum over ranks' (identical) losses: W times the full gradient
        torch.testing.assert_close(r["x_grad"] / 2, xf.grad[start:start + sizes[rank]])
    # without gathering, rank 0 sees only classes 0..2: a different (per-GPU, official) loss
    assert not torch.allclose(res[0]["local_only"], full.detach())
