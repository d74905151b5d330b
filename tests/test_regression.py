"""Regression family: values, official formulas, naive loops, gradients, errors, properties."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from torch.distributions import MultivariateNormal as MVN

import tailwise
from tailwise import functional as TF

D64 = torch.float64


# ---------------------------------------------------------------- independent references
# Transcriptions of the formulas in jiawei-ren/BalancedMSE (imdb-wiki-dir/balanaced_mse.py and
# synthetic_benchmark/loss.py), written from the paper's definitions for this test.
def official_bmc_1d(pred, target, var):
    logits = -0.5 * (pred - target.T).pow(2) / var
    return F.cross_entropy(logits, torch.arange(pred.shape[0])) * (2 * var).detach()


def official_bmc_md(pred, target, var):
    eye = torch.eye(pred.shape[-1], dtype=pred.dtype)
    logits = MVN(pred.unsqueeze(1), var * eye).log_prob(target.unsqueeze(0))
    return F.cross_entropy(logits, torch.arange(pred.shape[0])) * (2 * var).detach()


def official_gai_1d(pred, target, means, variances, weights, var):
    n = pred.shape[0]
    m, v, w = (x.reshape(1, -1).expand(n, -1) for x in (means, variances, weights))
    mse = (pred - target).pow(2) / 2 / var + 0.5 * var.log()
    s = v + var
    bal = torch.logsumexp(-0.5 * s.log() - 0.5 * (pred - m).pow(2) / s + w.log(), -1, keepdim=True)
    return ((mse + bal) * (2 * var).detach()).mean()


def official_gai_md(pred, target, means, covs, weights, var):
    eye = torch.eye(pred.shape[-1], dtype=pred.dtype)
    mse = -MVN(pred, var * eye).log_prob(target)
    bal = torch.logsumexp(MVN(means, covs + var * eye).log_prob(pred.unsqueeze(1)) + weights.log(), 1)
    return ((mse + bal) * (2 * var).detach()).mean()


def official_bni_1d(pred, target, var, centers, weights):
    mse = (pred - target).pow(2) / 2 / var
    bal = -0.5 * (pred.expand(-1, centers.shape[0]) - centers[None]).pow(2) / var + weights[None].log()
    return ((mse + torch.logsumexp(bal, -1, keepdim=True)) * (2 * var).detach()).mean()


# naive per-sample loops in float64 python math
def naive_bmc(pred, target, sigma):
    n, out = len(pred), []
    v = sigma ** 2
    for i in range(n):
        logits = [-sum((a - b) ** 2 for a, b in zip(pred[i], target[j])) / (2 * v) for j in range(n)]
        mx = max(logits)
        lse = mx + math.log(sum(math.exp(x - mx) for x in logits))
        out.append(2 * v * (lse - logits[i]))
    return out


def naive_gai_diag(pred, target, sigma, means, variances, weights):
    v, out = sigma ** 2, []
    for p, t in zip(pred, target):
        d = len(p)
        mse = sum((a - b) ** 2 for a, b in zip(p, t)) / (2 * v) + 0.5 * d * math.log(v)
        dens = 0.0
        for mu, var_k, w in zip(means, variances, weights):
            logn = sum(-0.5 * math.log(vk + v) - 0.5 * (a - m) ** 2 / (vk + v) for a, m, vk in zip(p, mu, var_k))
            dens += w * math.exp(logn)
        out.append(2 * v * (mse + math.log(dens)))
    return out


def naive_bni(pred, target, sigma, centers, weights):
    v, out = sigma ** 2, []
    for p, t in zip(pred, target):
        s = sum(w * math.exp(-(p - c) ** 2 / (2 * v)) for c, w in zip(centers, weights))
        out.append((p - t) ** 2 + 2 * v * math.log(s))
    return out


def naive_balanced_l1(pred, target, b):
    n, out = len(pred), []
    for i in range(n):
        logits = [-sum(abs(x - y) for x, y in zip(pred[i], target[j])) / b for j in range(n)]
        out.append(b * (math.log(sum(math.exp(x) for x in logits)) - logits[i]))
    return out


# ---------------------------------------------------------------- hand-computed values
def test_hand_values_basic():
    p, t = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 0.0, 0.0])
    assert TF.l1_loss(p, t).item() == pytest.approx(3.5 / 3)
    assert TF.mse_loss(p, t).item() == pytest.approx((1 + 4 + 0.25) / 3)
    # smooth l1 beta=1: 0.5 (|d|=1 -> 1 - 0.5), 1.5, 0.125
    assert TF.smooth_l1_loss(p, t, reduction="sum").item() == pytest.approx(0.5 + 1.5 + 0.125)
    torch.testing.assert_close(TF.smooth_l1_loss(p, t, beta=0.5, reduction="none"),
                               F.smooth_l1_loss(p, t, beta=0.5, reduction="none"))


def test_hand_values_balanced():
    # BMC, 2 samples at 0 and 2, sigma 1, perfect predictions:
    # CE_i = log(1 + exp(-4/2)), times 2 sigma^2 = 2
    p = torch.tensor([0.0, 2.0])
    assert TF.bmc_loss(p, p, 1.0).item() == pytest.approx(2 * math.log(1 + math.exp(-2)), rel=1e-6)
    # GAI, one component N(0, 1), sigma 1, pred 1, target 0:
    # 2 * [1/2 + 0 + log N(1; 0, 2) + 0.5 log 2pi] = 2 * [0.5 - 0.5 log 2 - 1/4]
    g = TF.gai_loss(torch.tensor([1.0]), torch.tensor([0.0]), 1.0, torch.tensor([0.0]), torch.tensor([1.0]),
                    torch.tensor([1.0]))
    assert g.item() == pytest.approx(2 * (0.5 - 0.5 * math.log(2) - 0.25), rel=1e-6)
    # BNI, one bin at 0 weight 1: 2 * [(1-0)^2/2 - 1/2] = 0 for pred 1, target 0
    b = TF.bni_loss(torch.tensor([1.0]), torch.tensor([0.0]), 1.0, torch.tensor([0.0]), torch.tensor([1.0]))
    assert b.item() == pytest.approx(0.0, abs=1e-7)
    # balanced L1, targets 0 and 3, b = 1: log(1 + e^-3)
    q = torch.tensor([0.0, 3.0])
    assert TF.balanced_l1_loss(q, q, 1.0).item() == pytest.approx(math.log(1 + math.exp(-3)), rel=1e-6)


# ---------------------------------------------------------------- official formulas
@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_matches_official_formulas_1d(sigma):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(32, 1, generator=g, dtype=D64) * 3, torch.rand(32, 1, generator=g, dtype=D64) * 10
    var = torch.tensor(sigma, dtype=D64) ** 2
    torch.testing.assert_close(TF.bmc_loss(pred, target, sigma), official_bmc_1d(pred, target, var))
    torch.testing.assert_close(TF.bmc_loss(pred[:, 0], target[:, 0], sigma), official_bmc_1d(pred, target, var))
    torch.testing.assert_close(TF.bmc_loss(pred, target, sigma), official_bmc_md(pred, target, var))
    means, variances, weights = (torch.tensor([2.0, 5.0, 8.0], dtype=D64), torch.tensor([0.5, 1.0, 4.0], dtype=D64),
                                 torch.tensor([0.2, 0.5, 0.3], dtype=D64))
    ref = official_gai_1d(pred, target, means, variances, weights, var)
    torch.testing.assert_close(TF.gai_loss(pred, target, sigma, means, variances, weights), ref)
    # sklearn-shaped (K, 1) means and (K, 1, 1) covariances, through the MD transcription too
    ref_md = official_gai_md(pred, target, means[:, None], variances[:, None, None], weights, var)
    torch.testing.assert_close(ref, ref_md)
    torch.testing.assert_close(TF.gai_loss(pred, target, sigma, means[:, None], variances[:, None, None], weights), ref)
    centers, bw = torch.linspace(0, 10, 11, dtype=D64), torch.rand(11, generator=g, dtype=D64) + 0.1
    torch.testing.assert_close(TF.bni_loss(pred, target, sigma, centers, bw),
                               official_bni_1d(pred, target, var, centers, bw))


def test_matches_official_formulas_md():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(24, 3, generator=g, dtype=D64), torch.randn(24, 3, generator=g, dtype=D64)
    var = torch.tensor(0.8, dtype=D64) ** 2
    torch.testing.assert_close(TF.bmc_loss(pred, target, 0.8), official_bmc_md(pred, target, var))
    a = torch.randn(4, 3, 3, generator=g, dtype=D64)
    covs = a @ a.transpose(1, 2) + 0.5 * torch.eye(3, dtype=D64)
    means, weights = torch.randn(4, 3, generator=g, dtype=D64), torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D64)
    torch.testing.assert_close(TF.gai_loss(pred, target, 0.8, means, covs, weights),
                               official_gai_md(pred, target, means, covs, weights, var))
    # diagonal variances (K, D) == the same covariances written as diagonal matrices
    diag = torch.rand(4, 3, generator=g, dtype=D64) + 0.1
    torch.testing.assert_close(TF.gai_loss(pred, target, 0.8, means, diag, weights),
                               official_gai_md(pred, target, means, torch.diag_embed(diag), weights, var))


# ---------------------------------------------------------------- naive loops
def test_naive_loops_random():
    g = torch.Generator().manual_seed(3)
    for d in (1, 2):
        pred, target = torch.randn(9, d, generator=g, dtype=D64), torch.randn(9, d, generator=g, dtype=D64)
        pl, tl = pred.tolist(), target.tolist()
        torch.testing.assert_close(TF.bmc_loss(pred, target, 0.7, reduction="none"),
                                   torch.tensor(naive_bmc(pl, tl, 0.7), dtype=D64))
        torch.testing.assert_close(TF.balanced_l1_loss(pred, target, 0.6, reduction="none"),
                                   torch.tensor(naive_balanced_l1(pl, tl, 0.6), dtype=D64))
        means, variances = torch.randn(3, d, generator=g, dtype=D64), torch.rand(3, d, generator=g, dtype=D64) + 0.2
        weights = torch.tensor([0.5, 0.3, 0.2], dtype=D64)
        torch.testing.assert_close(
            TF.gai_loss(pred, target, 1.3, means, variances, weights, reduction="none"),
            torch.tensor(naive_gai_diag(pl, tl, 1.3, means.tolist(), variances.tolist(), weights.tolist()), dtype=D64))
    p, t = torch.randn(7, dtype=D64), torch.randn(7, dtype=D64)
    c, w = torch.linspace(-2, 2, 5, dtype=D64), torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0], dtype=D64)
    torch.testing.assert_close(TF.bni_loss(p, t, 0.9, c, w, reduction="none"),
                               torch.tensor(naive_bni(p.tolist(), t.tolist(), 0.9, c.tolist(), w.tolist()), dtype=D64))


# ---------------------------------------------------------------- gradients
def _gc(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def _unscaled(fn, power=2):
    """The official losses multiply by a *detached* 2 sigma^2 (b for balanced L1), so their
    autograd sigma-gradient is, by design, not the derivative of the value. Dividing by the same
    detached factor gives a function whose true derivative autograd must reproduce in sigma and pred."""
    def wrapped(x, s):
        return fn(x, s) / ((2 * s.detach() ** 2) if power == 2 else s.detach())
    return wrapped


def test_gradcheck_all_losses_including_sigma():
    g = torch.Generator().manual_seed(4)
    p = torch.randn(6, 2, generator=g, dtype=D64, requires_grad=True)
    t = torch.randn(6, 2, generator=g, dtype=D64)
    sig = torch.tensor(0.9, dtype=D64, requires_grad=True)
    w = torch.rand(6, 2, generator=g, dtype=D64) + 0.5
    _gc(lambda x: TF.l1_loss(x, t + 0.05, sample_weight=w), p)  # shift keeps |d| away from the kink
    _gc(lambda x: TF.mse_loss(x, t, sample_weight=w), p)
    _gc(lambda x: TF.smooth_l1_loss(x, t, beta=0.7), p)
    _gc(_unscaled(lambda x, s: TF.bmc_loss(x, t, s)), p, sig)
    _gc(_unscaled(lambda x, s: TF.bmc_loss(x[:, :1], t[:, :1], s)), p, sig)
    _gc(_unscaled(lambda x, s: TF.balanced_l1_loss(x, t, s), power=1), p, sig)
    means = torch.randn(3, 2, generator=g, dtype=D64)
    a = torch.randn(3, 2, 2, generator=g, dtype=D64)
    covs = a @ a.transpose(1, 2) + 0.3 * torch.eye(2, dtype=D64)
    wts = torch.tensor([0.2, 0.3, 0.5], dtype=D64)
    _gc(_unscaled(lambda x, s: TF.gai_loss(x, t, s, means, covs, wts)), p, sig)
    _gc(_unscaled(lambda x, s: TF.gai_loss(x[:, 0], t[:, 0], s, means[:, 0], covs[:, 0, 0], wts)), p, sig)
    c, bw = torch.linspace(-2, 2, 6, dtype=D64), torch.rand(6, generator=g, dtype=D64) + 0.1
    _gc(_unscaled(lambda x, s: TF.bni_loss(x[:, 0], t[:, 0], s, c, bw)), p, sig)
    c2 = torch.randn(6, 2, dtype=D64, generator=g)
    _gc(_unscaled(lambda x, s: TF.bni_loss(x, t, s, c2, bw)), p, sig)
    # and the scaled loss's pred gradient is exactly 2 sigma^2 times the unscaled one
    _gc(lambda x: TF.bmc_loss(x, t, sig.detach()), p)


def test_module_sigma_is_learnable_and_scale_detached():
    crit = tailwise.BMCLoss(init_noise_sigma=2.0)
    pred = torch.randn(8, requires_grad=True)
    target = torch.randn(8)
    crit(pred, target).backward()
    assert crit.noise_sigma.grad is not None and torch.isfinite(crit.noise_sigma.grad)
    # the detached 2 sigma^2 factor: the pred gradient equals 2 sigma^2 * d CE / d pred
    var = torch.tensor(4.0)
    p2 = pred.detach().clone().requires_grad_(True)
    logits = -((p2[:, None] - target[None]) ** 2) / (2 * var)
    (F.cross_entropy(logits, torch.arange(8)) * 2 * var).backward()
    torch.testing.assert_close(pred.grad, p2.grad)


# ---------------------------------------------------------------- reduction, weight, empty
def test_reduction_weight_and_empty():
    p, t = torch.randn(5, requires_grad=True), torch.randn(5)
    w = torch.rand(5)
    for fn in (TF.bmc_loss, TF.balanced_l1_loss):
        none = fn(p, t, 1.0, reduction="none")
        assert none.shape == (5,)
        torch.testing.assert_close(fn(p, t, 1.0, sample_weight=w, reduction="sum"), (none * w).sum())
        torch.testing.assert_close(fn(p, t, 1.0), none.mean())
    for fn in (TF.l1_loss, TF.mse_loss, TF.smooth_l1_loss):
        e = fn(torch.zeros(0, requires_grad=True), torch.zeros(0))
        assert e.item() == 0 and e.grad_fn is not None
        torch.testing.assert_close(fn(p, t, sample_weight=w, reduction="sum"), (fn(p, t, reduction="none") * w).sum())
    e = TF.gai_loss(torch.zeros(0, 1, requires_grad=True), torch.zeros(0, 1), 1.0, torch.zeros(1), torch.ones(1),
                    torch.ones(1))
    assert e.item() == 0 and e.grad_fn is not None
    e = TF.bni_loss(torch.zeros(0, requires_grad=True), torch.zeros(0), 1.0, torch.zeros(1), torch.ones(1))
    e.backward()


# ---------------------------------------------------------------- errors
def test_errors_name_the_argument():
    p = torch.randn(4)
    with pytest.raises(ValueError, match=r"target must have the same shape as pred \(4,\)"):
        TF.bmc_loss(p, torch.randn(5), 1.0)
    with pytest.raises(TypeError, match="target must be a floating-point tensor"):
        TF.gai_loss(p, torch.arange(4), 1.0, torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="target must be finite, got nan at index 2"):
        TF.bni_loss(p, torch.tensor([0.0, 1.0, float("nan"), 2.0]), 1.0, torch.zeros(1), torch.ones(1))
    with pytest.raises(ValueError, match="at least 2 samples.*GAILoss.*BNILoss"):
        TF.bmc_loss(torch.randn(1, 1), torch.randn(1, 1), 1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        tailwise.BalancedL1Loss()(torch.randn(1), torch.randn(1))
    with pytest.raises(ValueError, match="noise_sigma must be a finite number > 0, got 0.0"):
        TF.bmc_loss(p, p, 0.0)
    with pytest.raises(ValueError, match="noise_sigma must be a finite number > 0, got -1.0"):
        TF.gai_loss(p, p, torch.tensor(-1.0), torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="init_noise_sigma must be > 0"):
        tailwise.BMCLoss(init_noise_sigma=-0.5)
    with pytest.raises(ValueError, match="weights must be strictly positive, got 0.0 at index 1"):
        tailwise.GAILoss(torch.zeros(2), torch.ones(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="variances must be strictly positive, got -1.0"):
        TF.gai_loss(p, p, 1.0, torch.zeros(2), torch.tensor([1.0, -1.0]), torch.ones(2))
    with pytest.raises(ValueError, match="variances must be positive definite"):
        TF.gai_loss(torch.randn(4, 2), torch.randn(4, 2), 1.0, torch.zeros(1, 2),
                    torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]), torch.ones(1))
    with pytest.raises(ValueError, match=r"means must be \(2, 3\)"):
        TF.gai_loss(torch.randn(4, 3), torch.randn(4, 3), 1.0, torch.zeros(2), torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="bin_weights must be strictly positive, got -0.5"):
        tailwise.BNILoss(torch.zeros(2), torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match=r"bin_centers must be \(3,\) or \(3, 1\)"):
        TF.bni_loss(p, p, 1.0, torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="pred must be"):
        TF.bmc_loss(torch.randn(2, 2, 2), torch.randn(2, 2, 2), 1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        TF.smooth_l1_loss(p, p, beta=0.0)
    with pytest.raises(ValueError, match="n_components"):
        tailwise.fit_gmm(torch.randn(3), 5)


# ---------------------------------------------------------------- properties
finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=12),
       st.floats(1e-3, 1e3, allow_nan=False))
def test_finite_on_extreme_inputs(pairs, sigma):
    p = torch.tensor([a for a, _ in pairs], requires_grad=True)
    t = torch.tensor([b for _, b in pairs])
    losses = [TF.bmc_loss(p, t, sigma), TF.balanced_l1_loss(p, t, sigma),
              TF.gai_loss(p, t, sigma, torch.tensor([0.0, 100.0]), torch.tensor([1e-3, 1e4]), torch.tensor([0.5, 0.5])),
              TF.bni_loss(p, t, sigma, torch.linspace(-10, 10, 7), torch.full((7,), 1 / 7))]
    for loss in losses:
        (g,) = torch.autograd.grad(loss, p)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


def _nearest_excess(p, t):
    """The sigma -> 0 limit of 2 sigma^2 * BMC: squared error minus the squared distance to the
    nearest batch label (0 when the sample's own label is the nearest)."""
    d2 = (p[:, None, :] - t[None]).square().sum(-1)
    return d2.diagonal() - d2.min(1).values


@given(st.integers(0, 10_000), st.integers(1, 3))
def test_tiny_sigma_bmc_is_mse_relative_to_nearest_label(seed, d):
    g = torch.Generator().manual_seed(seed)
    p, t = torch.randn(8, d, generator=g, dtype=D64) * 2, torch.randn(8, d, generator=g, dtype=D64) * 2
    torch.testing.assert_close(TF.bmc_loss(p, t, 1e-4, reduction="none"), _nearest_excess(p, t), atol=1e-6, rtol=0)


@given(st.integers(0, 10_000), st.floats(0.0, 5.0), st.floats(0.0, 5.0))
def test_tiny_sigma_bmc_ranks_like_mse_along_rays(seed, s1, s2):
    """With a tiny sigma, moving a prediction further from its label along any ray never lowers
    its BMC loss: BMC orders such predictions exactly as MSE does (the limit is convex in the
    prediction and 0 at the label)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(6, 2, generator=g, dtype=D64) * 2
    u = torch.randn(6, 2, generator=g, dtype=D64)
    lo, hi = sorted((s1, s2))
    l_lo = TF.bmc_loss(t + lo * u, t, 1e-3, reduction="none")
    l_hi = TF.bmc_loss(t + hi * u, t, 1e-3, reduction="none")
    assert bool((l_hi >= l_lo - 1e-6).all())


def test_large_sigma_breaks_mse_ranking():
    """The ray property above is specific to small sigma: with a large sigma BMC prefers a
    prediction pushed away from the batch's other labels over the exact label (falsifiable check)."""
    t = torch.tensor([[0.0], [1.0], [1.2], [0.9]], dtype=D64)
    away = t.clone()
    away[0, 0] = -0.5  # sample 0 moved away from the dense labels
    big = TF.bmc_loss(away, t, 5.0, reduction="none")[0] < TF.bmc_loss(t, t, 5.0, reduction="none")[0]
    small = TF.bmc_loss(away, t, 1e-3, reduction="none")[0] < TF.bmc_loss(t, t, 1e-3, reduction="none")[0]
    assert big and not small


def test_gai_tiny_sigma_approaches_mse():
    p, t = torch.randn(20, dtype=D64), torch.randn(20, dtype=D64)
    loss = TF.gai_loss(p, t, 1e-5, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]), torch.tensor([0.4, 0.6]),
                       reduction="none")
    torch.testing.assert_close(loss, (p - t) ** 2, atol=1e-8, rtol=0)


def test_bni_value_is_negative_in_dense_region():
    # a perfect prediction where the bins are dense has a negative loss (see the docstring)
    loss = TF.bni_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0, torch.tensor([0.0, 5.0]),
                       torch.tensor([0.9, 0.1]))
    assert loss.item() < 0


def test_bmc_translation_invariant():
    p, t = torch.randn(10, 2, dtype=D64), torch.randn(10, 2, dtype=D64)
    shift = torch.tensor([3.0, -7.0], dtype=D64)
    torch.testing.assert_close(TF.bmc_loss(p + shift, t + shift, 0.5), TF.bmc_loss(p, t, 0.5))


# ---------------------------------------------------------------- modules, state, precision
def test_registry_and_modules():
    for name, cls in [("l1", tailwise.L1Loss), ("mse", tailwise.MSELoss), ("smooth_l1", tailwise.SmoothL1Loss),
                      ("bmc", tailwise.BMCLoss), ("balanced_l1", tailwise.BalancedL1Loss)]:
        assert isinstance(tailwise.build_loss(name), cls)
    assert isinstance(tailwise.build_loss("gai", means=[0.0], variances=[1.0], weights=[1.0]), tailwise.GAILoss)
    assert isinstance(tailwise.build_loss("bni", bin_centers=[0.0], bin_weights=[1.0]), tailwise.BNILoss)
    p, t = torch.randn(6, 1), torch.randn(6, 1)
    torch.testing.assert_close(tailwise.BMCLoss(0.7)(p, t), TF.bmc_loss(p, t, 0.7))


def test_state_dict_round_trip():
    labels = torch.cat([torch.randn(300), torch.randn(100) * 0.3 + 4])
    gai = tailwise.GAILoss.from_labels(labels, n_components=3, init_noise_sigma=1.3)
    bni = tailwise.BNILoss.from_labels(labels, bins=20, init_noise_sigma=0.7)
    bmc = tailwise.BMCLoss(init_noise_sigma=0.4)
    with torch.no_grad():
        gai.noise_sigma.fill_(2.2)
    for src, fresh in [(gai, tailwise.GAILoss(torch.zeros(3), torch.ones(3), torch.ones(3))),
                       (bni, tailwise.BNILoss(torch.zeros(len(bni.bin_weights)), torch.ones(len(bni.bin_weights)))),
                       (bmc, tailwise.BMCLoss())]:
        sd = src.state_dict()
        assert "noise_sigma" in sd
        fresh.load_state_dict(sd)
        for k, v in sd.items():
            torch.testing.assert_close(fresh.state_dict()[k], v)
        p, t = torch.randn(5), torch.randn(5)
        torch.testing.assert_close(fresh(p, t), src(p, t))
    assert {"means", "variances", "weights"} <= set(gai.state_dict())
    assert {"bin_centers", "bin_weights"} <= set(bni.state_dict())


def test_bf16_autocast_finite():
    p = torch.randn(16, 1, dtype=torch.bfloat16, requires_grad=True)
    t = torch.rand(16, 1) * 5
    gai = tailwise.GAILoss.from_labels(t[:, 0], n_components=2)
    bni = tailwise.BNILoss.from_labels(t, bins=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for loss in (tailwise.BMCLoss()(p, t.bfloat16()), gai(p, t), bni(p, t), tailwise.BalancedL1Loss()(p, t),
                     tailwise.MSELoss()(p, t), tailwise.SmoothL1Loss()(p, t)):
            assert loss.dtype == torch.float32 and torch.isfinite(loss)
            (g,) = torch.autograd.grad(loss, p)
            assert torch.isfinite(g.float()).all()


# ---------------------------------------------------------------- GMM fitter and bins
def test_fit_gmm_recovers_known_mixture():
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([3000, 1000])
    y = torch.cat([torch.randn(3000, generator=g, dtype=D64) * 0.5 + 1.0,
                   torch.randn(1000, generator=g, dtype=D64) * 2.0 + 8.0])
    fit = tailwise.fit_gmm(y, 2, seed=0)
    order = fit.means.argsort()
    torch.testing.assert_close(fit.means[order], torch.tensor([1.0, 8.0], dtype=D64), atol=0.15, rtol=0)
    torch.testing.assert_close(fit.variances[order], torch.tensor([0.25, 4.0], dtype=D64), rtol=0.15, atol=0)
    torch.testing.assert_close(fit.weights[order], n.double() / 4000, atol=0.02, rtol=0)
    assert fit.converged
    again = tailwise.fit_gmm(y, 2, seed=0)
    torch.testing.assert_close(again.means, fit.means)  # deterministic for a seed


def test_fit_gmm_full_covariance_2d():
    g = torch.Generator().manual_seed(1)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=D64)
    chol = torch.linalg.cholesky(cov)
    a = torch.randn(4000, 2, generator=g, dtype=D64) @ chol.T + torch.tensor([5.0, -5.0], dtype=D64)
    b = torch.randn(2000, 2, generator=g, dtype=D64) * 0.3
    fit = tailwise.fit_gmm(torch.cat([a, b]), 2)
    k = int(fit.means[:, 0].argmax())
    torch.testing.assert_close(fit.means[k], torch.tensor([5.0, -5.0], dtype=D64), atol=0.1, rtol=0)
    torch.testing.assert_close(fit.variances[k], cov, atol=0.1, rtol=0)
    assert abs(float(fit.weights[k]) - 2 / 3) < 0.02


def test_fit_gmm_against_sklearn_loglik():
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    g = torch.Generator().manual_seed(5)
    y = torch.distributions.Exponential(2.0).sample((3000,)).double()
    fit = tailwise.fit_gmm(y, 4)
    sk = sklearn_mixture.GaussianMixture(4, random_state=0).fit(y[:, None].numpy())
    # both are local optima of the same likelihood; ours must be as good up to a small margin
    assert fit.log_likelihood >= sk.score(y[:, None].numpy()) - 0.02
    del g


def test_label_bins():
    y = torch.tensor([0.0, 0.0, 1.0, 4.0])
    centers, weights = tailwise.label_bins(y, bins=4)
    # numpy's rule: [0,1) [1,2) [2,3) [3,4]; the empty [2,3) bin is dropped
    torch.testing.assert_close(centers, torch.tensor([0.5, 1.5, 3.5], dtype=D64))
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.25, 0.25], dtype=D64))
    import numpy as np
    z = torch.randn(500, dtype=D64).exp()
    counts, edges = np.histogram(z.numpy(), bins=17)
    c, w = tailwise.label_bins(z, bins=17)
    keep = counts > 0
    np.testing.assert_allclose(c.numpy(), ((edges[:-1] + edges[1:]) / 2)[keep])
    np.testing.assert_allclose(w.numpy(), (counts / counts.sum())[keep])
    c, w = tailwise.label_bins(torch.full((3,), 2.0), bins=5)
    assert c.tolist() == [2.0] and w.tolist() == [1.0]
