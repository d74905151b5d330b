"""Regression tests for the defects of the adversarial input sweep (issue: reliability).

Each test pins one case that used to crash, return NaN/-inf, or return a finite wrong value.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import tailwise
import tailwise.functional as TF
from tailwise import validation

HUGE = (1e38, 2e38, 3e38)


def _huge_logits(scale, n=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g) * scale).clamp(-3.4e38, 3.4e38).requires_grad_()


# ---------------------------------------------------------------- BMC / Balanced L1: empty batch

@pytest.mark.parametrize("fn", [TF.bmc_loss, TF.balanced_l1_loss])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(0,), (0, 1), (0, 3)])
def test_bmc_empty_batch_is_zero_with_grad(fn, reduction, shape):
    pred = torch.zeros(shape, requires_grad=True)
    sigma = torch.tensor(0.7, requires_grad=True)
    loss = fn(pred, torch.zeros(shape), sigma, reduction=reduction)
    assert loss.grad_fn is not None
    if reduction == "none":
        assert loss.shape == (0,)
        loss = loss.sum()
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.shape == pred.shape and sigma.grad.item() == 0.0


@pytest.mark.parametrize("name", ["bmc", "balanced_l1"])
def test_bmc_module_empty_batch_gives_sigma_a_grad(name):
    crit = tailwise.build_loss(name)
    crit(torch.zeros(0, 1, requires_grad=True), torch.zeros(0, 1)).backward()
    (param,) = list(crit.parameters())
    assert param.grad is not None and param.grad.item() == 0.0  # used (DDP sees it), no signal


@pytest.mark.parametrize("fn", [TF.bmc_loss, TF.balanced_l1_loss])
def test_bmc_batch_of_one_still_raises(fn):
    with pytest.raises(ValueError, match="at least 2 samples"):
        fn(torch.zeros(1, requires_grad=True), torch.zeros(1), 1.0)


# ---------------------------------------------------------------- neural_collapse: list target

def test_neural_collapse_list_target_is_type_error_naming_target():
    feats = torch.randn(2, 8, 3)
    with pytest.raises(TypeError, match="target"):
        TF.neural_collapse_loss(feats, [[0, 1, 2], [1, 2, 3]], 4)
    with pytest.raises(TypeError, match="target"):
        tailwise.build_loss("neural_collapse", num_classes=4, feat_dim=8)(feats, [[0, 1, 2], [1, 2, 3]])


def test_neural_collapse_all_ignored_with_huge_features_is_zero():
    feats = torch.full((2, 8, 3), 3e38, requires_grad=True)
    loss = TF.neural_collapse_loss(feats, torch.full((2, 3), -100), 4, reduction="sum")
    assert loss.item() == 0.0  # used to be 0 * inf = nan
    loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))


# ---------------------------------------------------------------- DCL / DCLW: batch of one

@pytest.mark.parametrize("fn", [TF.dcl_loss, TF.dclw_loss])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dcl_batch_of_one_is_zero(fn, reduction):
    f = F.normalize(torch.randn(1, 2, 8), dim=-1).requires_grad_()
    loss = fn(f, reduction=reduction)
    assert torch.isfinite(loss).all() and loss.grad_fn is not None
    assert torch.equal(loss, torch.zeros_like(loss))
    loss.sum().backward()
    assert torch.equal(f.grad, torch.zeros_like(f))


@pytest.mark.parametrize("fn", [TF.dcl_loss, TF.dclw_loss])
def test_dcl_batch_of_two_unchanged_by_the_batch_of_one_rule(fn):
    # the rule only applies with no negative: with 2 samples the loss is the usual finite value
    f = F.normalize(torch.randn(2, 2, 8), dim=-1)
    z1, z2 = f[:, 0], f[:, 1]
    t = 0.1
    # naive DCL (the positive and the anchor itself leave the denominator)
    neg = torch.stack([torch.logsumexp(torch.cat([z1[i] @ z1[[1 - i]].T, z1[i] @ z2[[1 - i]].T]) / t, 0)
                       for i in range(2)])
    neg2 = torch.stack([torch.logsumexp(torch.cat([z2[i] @ z2[[1 - i]].T, z2[i] @ z1[[1 - i]].T]) / t, 0)
                        for i in range(2)])
    pos = (z1 * z2).sum(1) / t
    if fn is TF.dcl_loss:
        expected = ((neg - pos) + (neg2 - pos)).mean()
        torch.testing.assert_close(fn(f), expected)
    else:
        assert torch.isfinite(fn(f))


# ---------------------------------------------------------------- huge logits: bounded losses stay finite

@pytest.mark.parametrize("scale", HUGE)
def test_entropy_huge_logits_finite(scale):
    z = _huge_logits(scale)
    h = TF.entropy_loss(z, reduction="none")
    assert torch.isfinite(h).all() and (h >= 0).all() and (h <= math.log(4) + 1e-6).all()
    h.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_entropy_nan_logit_still_propagates():
    z = torch.zeros(2, 3)
    z[0, 1] = float("nan")
    assert torch.isnan(TF.entropy_loss(z, reduction="none")[0])


@pytest.mark.parametrize("name", ["smooth_ap_loss", "recall_at_quantile_loss", "pauc_at_budget_loss"])
@pytest.mark.parametrize("scale", HUGE)
def test_ranking_huge_scores_finite(name, scale):
    z = _huge_logits(scale, n=12)
    y = torch.arange(12) % 4
    loss = getattr(TF, name)(z, y)
    assert torch.isfinite(loss) and 0.0 <= loss.item() <= 1.0
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("scale", HUGE)
def test_iif_huge_logits_no_nan(scale):
    z = _huge_logits(scale)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = TF.iif_loss(z, y, [10, 5, 3, 1], reduction="none")
    # the loss is unbounded: a logit gap beyond float range may give +inf, never NaN
    assert not torch.isnan(loss).any() and (loss >= 0).all()
    loss.sum().backward()
    assert not torch.isnan(z.grad).any()


def test_iif_moderate_logits_unchanged():
    z = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    w = tailwise.iif_weights([10, 5, 3, 1]).float()
    torch.testing.assert_close(TF.iif_loss(z, y, [10, 5, 3, 1]), F.cross_entropy(z * w, y))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_iif_nonfinite_logits_not_hidden(bad):
    z = torch.randn(3, 4)
    z[1, 2] = bad
    loss = TF.iif_loss(z, torch.tensor([0, 2, 1]), [10, 5, 3, 1], reduction="none")
    assert not torch.isfinite(loss[1])


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_focal_gradient_finite_at_2e38(gamma, sign):
    z = torch.tensor([[sign * 2e38, -sign * 2e38, 0.0], [2e38, -2e38, 1.0]], requires_grad=True)
    y = torch.tensor([1, 0])
    loss = TF.focal_loss(z, y, gamma=gamma)
    assert not torch.isnan(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_focal_gradient_matches_autograd_where_finite():
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (5,))
    assert torch.autograd.gradcheck(lambda z: TF.focal_loss(z, y, gamma=2.0), (z,))


# ---------------------------------------------------------------- kl_div: bad targets are not hidden

@pytest.mark.parametrize("bad", [float("nan"), -float("inf"), -0.5, 1.5, float("inf")])
def test_kl_div_bad_target_raises_naming_target(bad):
    x = torch.randn(3, 4)
    p = torch.softmax(torch.randn(3, 4), 1)
    p[0, 1] = bad
    with pytest.raises(ValueError, match="target"):
        TF.kl_div_loss(x, p)
    with validation("full"):
        with pytest.raises(ValueError, match="target"):
            TF.kl_div_loss(x, p)


@pytest.mark.parametrize("bad", [float("nan"), 0.5, float("inf")])
def test_kl_div_bad_log_target_raises(bad):
    x = torch.randn(3, 4)
    logp = torch.log_softmax(torch.randn(3, 4), 1)
    logp[2, 0] = bad
    with pytest.raises(ValueError, match="target"):
        TF.kl_div_loss(x, logp, log_target=True)


def test_kl_div_valid_targets_match_torch():
    x = torch.randn(3, 4)
    p = torch.softmax(torch.randn(3, 4), 1)
    p[0, 1] = 0.0  # zero probability is valid and contributes 0
    ref = F.kl_div(F.log_softmax(x, 1), p, reduction="batchmean")
    torch.testing.assert_close(TF.kl_div_loss(x, p), ref)
    logp = torch.log(p)  # contains -inf: valid in log space
    torch.testing.assert_close(TF.kl_div_loss(x, logp, log_target=True), ref)


def test_kl_div_check_is_a_device_assert_under_compile_and_no_host_read():
    # the traced form must not read values on the host: fullgraph compile would fail on bool(...)
    x = torch.randn(3, 4)
    p = torch.softmax(torch.randn(3, 4), 1)
    fn = torch.compile(TF.kl_div_loss, fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(x, p), TF.kl_div_loss(x, p))


# ---------------------------------------------------------------- cross_entropy soft labels

def test_cross_entropy_soft_target_out_of_range_raises():
    x = torch.randn(3, 4)
    q = torch.softmax(torch.randn(3, 4), 1)
    q[1, 1] = -0.2
    with pytest.raises(ValueError, match="target"):
        TF.cross_entropy_loss(x, q)


# ---------------------------------------------------------------- sigmoid_focal: target requiring grad

@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_target_requiring_grad_gets_exact_gradient(gamma, alpha):
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, t: TF.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="sum"), (x, t))
    # same value and input gradient as the fused path used for a plain target
    l1 = TF.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none")
    l2 = TF.sigmoid_focal_loss(x, t.detach(), alpha=alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(l1, l2)
    g1, = torch.autograd.grad(l1.sum(), x)
    g2, = torch.autograd.grad(l2.sum(), x)
    torch.testing.assert_close(g1, g2)


def test_sigmoid_focal_target_grad_reaches_the_target():
    x = torch.randn(4, 3)
    t = torch.rand(4, 3, requires_grad=True)
    TF.sigmoid_focal_loss(x, t).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 2.0])
def test_sigmoid_focal_bad_target_raises(bad):
    t = torch.rand(4, 3)
    t[0, 0] = bad
    with pytest.raises(ValueError, match="target"):
        TF.sigmoid_focal_loss(torch.randn(4, 3), t)


# ---------------------------------------------------------------- dice(from_logits=False): not a silent 1e12

@pytest.mark.parametrize("name", ["dice_loss", "tversky_loss", "focal_tversky_loss"])
def test_overlap_losses_reject_non_probabilities(name):
    logp = torch.log_softmax(torch.randn(2, 3, 4, 4), 1)
    y = torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(ValueError, match="input.*from_logits"):
        getattr(TF, name)(logp, y, from_logits=False)
    with pytest.raises(ValueError, match="input"):
        getattr(TF, name)(logp * -1 + 1.5, F.one_hot(y, 3).permute(0, 3, 1, 2).float(), from_logits=False)


def test_dice_probabilities_accepted_and_nan_propagates():
    p = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    y = torch.randint(0, 3, (2, 4, 4))
    loss = TF.dice_loss(p, y, from_logits=False)
    assert 0.0 <= loss.item() <= 1.0
    p[0, 0, 0, 0] = float("nan")  # a NaN model output propagates (model-output policy)
    assert torch.isnan(TF.dice_loss(p, y, from_logits=False))


# ---------------------------------------------------------------- found by tests/test_fuzz.py

def test_entropy_closed_form_backward_matches_autograd():
    z = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: TF.entropy_loss(z, reduction="none"), (z,))
    logp = F.log_softmax(z, 1)
    torch.testing.assert_close(TF.entropy_loss(z, reduction="none"), -(logp.exp() * logp).sum(1))


def test_iif_scaled_logits_gradient_is_exact():
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    for variant in ("raw", "rel"):  # rel has negative weights
        assert torch.autograd.gradcheck(lambda z: TF.iif_loss(z, y, [10, 5, 3, 1], variant=variant), (z,))


def test_equalized_focal_no_nan_gradient_at_huge_logits():
    crit = tailwise.build_loss("equalized_focal", num_classes=4)
    z = torch.full((2, 4), 2.93e38, requires_grad=True)
    crit(z, torch.tensor([2, 0])).backward()
    assert not torch.isnan(z.grad).any()


def test_equalized_focal_inf_logit_not_hidden():
    crit = tailwise.build_loss("equalized_focal", num_classes=4)
    z = torch.randn(3, 4)
    z[1, 2] = float("inf")  # the positive of row 1: the limit of the formula is 0, torch's BCE gives NaN
    assert not torch.isfinite(crit(z, torch.tensor([0, 2, 1])))


def test_equalized_focal_list_input_is_type_error():
    with pytest.raises(TypeError, match="input"):
        tailwise.build_loss("equalized_focal", num_classes=4)([[0.0] * 4], torch.tensor([0]))


def test_paco_module_validates_features_before_the_centre_logits():
    crit = tailwise.build_loss("paco", num_classes=4, in_features=8)
    with pytest.raises(ValueError, match="features"):
        crit(F.normalize(torch.randn(3, 2), dim=-1), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="features"):
        crit([[0.0] * 8] * 3, torch.tensor([0, 1, 2]))


def test_tsc_module_validates_before_updating_its_state():
    crit = tailwise.build_loss("tsc", num_classes=4, dim=8, targets=tailwise.simplex_etf(4, 8))
    z = F.normalize(torch.randn(3, 2, 8), dim=-1)
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    with pytest.raises(ValueError, match="labels"):
        crit(z, torch.tensor([0, 1, -7]))
    with pytest.raises(ValueError, match="labels"):
        crit(z, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="features"):
        crit(z.tolist(), torch.tensor([0, 1, 2]))
    for k, v in crit.state_dict().items():  # nothing was touched
        assert torch.equal(v, before[k]), k
    bad = z.clone()
    bad[0, 0, 0] = float("nan")
    try:
        loss = crit(bad, torch.tensor([0, 1, 2]))
    except ValueError as exc:
        assert "features" in str(exc)
    else:
        assert not torch.isfinite(loss)
    assert torch.equal(crit.class_centroid[0], before["class_centroid"][0])  # NaN kept out of the state
    assert torch.isfinite(crit.class_centroid).all()


def test_probability_check_is_a_device_assert_while_tracing():
    # no host read under torch.compile (fullgraph traces); the assert still fires on bad values
    fn = torch.compile(TF.kl_div_loss, fullgraph=True, backend="eager")
    x = torch.randn(2, 3)
    p = torch.tensor([[0.2, 0.3, 0.5], [0.1, -0.1, 1.0]])
    with pytest.raises(RuntimeError, match="target must hold values in"):
        fn(x, p)
    from tailwise._probabilities import check_probabilities
    check = torch.compile(lambda t: check_probabilities(t, "input", allow_nan=True) + 0, fullgraph=True,
                          backend="eager")
    out = check(torch.tensor([0.5, float("nan")]))  # NaN model output: passes, propagates
    assert torch.isnan(out[1])
    with pytest.raises(RuntimeError, match="input must hold values in"):
        check(torch.tensor([0.5, 1.5]))
