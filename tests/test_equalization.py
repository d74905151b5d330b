"""Equalization Losses: EQLv2, Softmax-EQL, Equalized Focal Loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tailwise.classification.eqlv2 import EQLv2Loss, eqlv2_grad_stats, eqlv2_loss, eqlv2_weights
from tailwise.classification.equalized_focal import (EqualizedFocalLoss, equalized_focal_grad_stats,
                                                     equalized_focal_loss)
from tailwise.classification.softmax_eql import SoftmaxEQLLoss, softmax_eql_grad_stats, softmax_eql_loss
from tailwise.registry import build_loss


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


# ---------------------------------------------------------------- naive float64 references (loops)
def naive_eqlv2(z, y, pos_grad, neg_grad, gamma=12.0, mu=0.8, alpha=4.0, bg=False):
    n, c = z.shape
    c_stats = c - 1 if bg else c
    total = []
    for i in range(n):
        s = 0.0
        for j in range(c):
            if pos_grad is None or j >= c_stats:
                q, r = 1.0, 1.0
            else:
                g = float(pos_grad[j]) / (float(neg_grad[j]) + 1e-10)
                q = 1.0 / (1.0 + math.exp(-gamma * (g - mu)))
                r = 1.0 + alpha * (1.0 - q)
            zij = float(z[i, j])
            if j == int(y[i]):
                s += r * _softplus(-zij)
            else:
                s += q * _softplus(zij)
        total.append(s)
    return torch.tensor(total, dtype=torch.float64)


def naive_efl(z, y, pos_grad, neg_grad, gamma_b=2.0, s=8.0, alpha=0.25):
    n, c = z.shape
    out = []
    for i in range(n):
        acc = 0.0
        for j in range(c):
            g = 1.0 if pos_grad is None else min(max(float(pos_grad[j]) / (float(neg_grad[j]) + 1e-10), 0.0), 1.0)
            gam = gamma_b + s * (1 - g)
            p = _sig(float(z[i, j]))
            pos = j == int(y[i])
            pt = p if pos else 1 - p
            at = alpha if pos else 1 - alpha
            acc += -at * gam / gamma_b * (1 - pt) ** gam * math.log(pt)
        out.append(acc)
    return torch.tensor(out, dtype=torch.float64)


def naive_softmax_eql_official(z, y, G, tau=1.0, eps=1e-4):
    """The official form: add tau*log(G_j / G_y) to the negative logits only."""
    n, c = z.shape
    out = []
    for i in range(n):
        yi = int(y[i])
        row = []
        for j in range(c):
            adj = 0.0 if j == yi else tau * math.log(max(float(G[j]), eps) / max(float(G[yi]), eps))
            row.append(float(z[i, j]) + adj)
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        out.append(lse - row[yi])
    return torch.tensor(out, dtype=torch.float64)


def _data(n=7, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=dtype) * 2
    y = torch.randint(0, c, (n,), generator=g)
    pg = torch.rand(c, generator=g, dtype=dtype) * 2
    ng = torch.rand(c, generator=g, dtype=dtype) * 2 + 0.1
    return z, y, pg, ng


# ---------------------------------------------------------------- EQLv2
def test_eqlv2_hand_value():
    z = torch.zeros(2, 2)
    y = torch.tensor([0, 1])
    pos, neg = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])  # g = [1, 0]
    q0, q1 = _sig(12 * 0.2), _sig(-12 * 0.8)
    r0, r1 = 1 + 4 * (1 - q0), 1 + 4 * (1 - q1)
    expected = ((r0 + q1) + (q0 + r1)) * math.log(2) / 2
    assert eqlv2_loss(z, y, pos, neg).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("bg", [False, True])
def test_eqlv2_matches_naive(bg):
    z, y, pg, ng = _data()
    if bg:
        pg, ng = pg[:-1], ng[:-1]
    ref = naive_eqlv2(z, y, pg, ng, bg=bg)
    torch.testing.assert_close(eqlv2_loss(z, y, pg, ng, use_background_column=bg, reduction="none"), ref)
    torch.testing.assert_close(eqlv2_loss(z, y, pg, ng, use_background_column=bg), ref.mean())
    torch.testing.assert_close(eqlv2_loss(z, y, pg, ng, use_background_column=bg, reduction="sum"), ref.sum())
    w = torch.rand(7, dtype=torch.float64)
    torch.testing.assert_close(eqlv2_loss(z, y, pg, ng, use_background_column=bg, sample_weight=w), (ref * w).mean())


def test_eqlv2_fresh_equals_official_bce():
    # official first iteration: all weights 1 -> sum(BCE with one-hot) / N
    z, y, _, _ = _data(n=9, c=6)
    ref = F.binary_cross_entropy_with_logits(z, F.one_hot(y, 6).double(), reduction="sum") / 9
    torch.testing.assert_close(eqlv2_loss(z, y), ref)
    crit = EQLv2Loss(6).double()
    torch.testing.assert_close(crit(z, y), ref)


def test_eqlv2_paper_behaviour_after_update():
    """A class that only receives negative gradients gets a tiny negative weight, a positive weight
    ~1+alpha; a class with balanced gradients keeps negative weight close to 1."""
    torch.manual_seed(1)
    crit = EQLv2Loss(3)
    z = torch.randn(64, 3)
    y = torch.zeros(64, dtype=torch.long)
    y[32:] = 1  # class 2 never appears: only negative gradients
    crit(z, y)
    pos_w, neg_w = crit.current_weights()
    assert crit.pos_grad[2] == 0 and crit.neg_grad[2] > 0
    assert neg_w[2].item() == pytest.approx(_sig(-12 * 0.8), rel=1e-5)
    assert pos_w[2].item() == pytest.approx(1 + 4 * (1 - _sig(-9.6)), rel=1e-5)
    # manual balanced statistics: g = 1 > mu -> negative weight sigmoid(12 * 0.2)
    pw, nw = eqlv2_weights(torch.tensor([2.0]), torch.tensor([2.0]))
    assert nw.item() == pytest.approx(_sig(2.4), rel=1e-5)
    # monotone: a rarer-positive class (smaller g) gets smaller negative weight
    pw, nw = eqlv2_weights(torch.tensor([0.1, 0.5, 0.9]), torch.ones(3))
    assert nw[0] < nw[1] < nw[2] and pw[0] > pw[1] > pw[2]


def test_eqlv2_statistics_naive_and_weights_used():
    z, y, pg, ng = _data(n=10, c=4)
    pos_inc, neg_inc = eqlv2_grad_stats(z, y, pg, ng)
    pos_w, neg_w = eqlv2_weights(pg, ng)
    p_ref = torch.zeros(4, dtype=torch.float64)
    n_ref = torch.zeros(4, dtype=torch.float64)
    for i in range(10):
        for j in range(4):
            s = _sig(float(z[i, j]))
            if j == int(y[i]):
                p_ref[j] += abs(s - 1) * pos_w[j]
            else:
                n_ref[j] += s * neg_w[j]
    torch.testing.assert_close(pos_inc, p_ref)
    torch.testing.assert_close(neg_inc, n_ref)
    # the module's fused update equals the pure function (fresh weights first, then the stats)
    crit = EQLv2Loss(4).double()
    crit(z, y)
    pi0, ni0 = eqlv2_grad_stats(z, y)
    torch.testing.assert_close(crit.pos_grad, pi0)
    torch.testing.assert_close(crit.neg_grad, ni0)
    crit(z, y)
    pi1, ni1 = eqlv2_grad_stats(z, y, pi0, ni0)
    torch.testing.assert_close(crit.pos_grad, pi0 + pi1)
    torch.testing.assert_close(crit.neg_grad, ni0 + ni1)
    assert int(crit.num_updates) == 2


def test_eqlv2_background_column_stats():
    z, y, _, _ = _data(n=12, c=5)
    y[:4] = 4  # background label
    crit = EQLv2Loss(4, use_background_column=True).double()
    crit(z, y)
    pos_inc, neg_inc = eqlv2_grad_stats(z, y, use_background_column=True)
    assert pos_inc.shape == (4,)
    torch.testing.assert_close(crit.pos_grad, pos_inc)
    torch.testing.assert_close(crit.neg_grad, neg_inc)
    # background column weights stay 1 whatever the statistics
    ref = naive_eqlv2(z, y, crit.pos_grad, crit.neg_grad, bg=True).mean()
    torch.testing.assert_close(crit(z, y), ref)


def test_eqlv2_fused_backward_matches_autograd_reference():
    z, y, pg, ng = _data(n=11, c=6)
    pos_w, neg_w = eqlv2_weights(pg, ng)
    Y = F.one_hot(y, 6).double()
    for red in ("mean", "sum", "none"):
        a = z.clone().requires_grad_(True)
        b = z.clone().requires_grad_(True)
        out_a = eqlv2_loss(a, y, pg, ng, reduction=red)
        ref = (F.binary_cross_entropy_with_logits(b, Y, reduction="none") * (Y * pos_w + (1 - Y) * neg_w)).sum(1)
        out_b = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[red]
        g = torch.randn_like(out_a)
        out_a.backward(g)
        out_b.backward(g)
        torch.testing.assert_close(a.grad, b.grad)


def test_gradcheck_all_losses():
    z, y, pg, ng = _data(n=5, c=4)
    z.requires_grad_(True)
    w = torch.rand(5, dtype=torch.float64)
    for red in ("mean", "none"):
        assert torch.autograd.gradcheck(lambda x: eqlv2_loss(x, y, pg, ng, reduction=red), (z,))
        assert torch.autograd.gradcheck(lambda x: eqlv2_loss(x, y, pg, ng, sample_weight=w, reduction=red), (z,))
        assert torch.autograd.gradcheck(lambda x: softmax_eql_loss(x, y, pg, reduction=red), (z,))
        assert torch.autograd.gradcheck(lambda x: equalized_focal_loss(x, y, pg, ng, reduction=red), (z,))
    zb = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    yb = torch.tensor([4, 0, 1, 4, 2])
    assert torch.autograd.gradcheck(lambda x: eqlv2_loss(x, yb, pg, ng, use_background_column=True), (zb,))


# ---------------------------------------------------------------- Softmax-EQL
def test_softmax_eql_official_form_and_fresh_ce():
    z, y, pg, _ = _data(n=8, c=5)
    pg[2] = 0.0  # below eps -> clamped
    ref = naive_softmax_eql_official(z, y, pg, tau=1.5)
    torch.testing.assert_close(softmax_eql_loss(z, y, pg, tau=1.5, reduction="none"), ref)
    torch.testing.assert_close(softmax_eql_loss(z, y), F.cross_entropy(z, y))
    crit = SoftmaxEQLLoss(5).double()
    torch.testing.assert_close(crit(z, y), F.cross_entropy(z, y))  # zero stats -> CE


def test_softmax_eql_hand_value_and_scale_invariance():
    z, y = torch.zeros(1, 2), torch.tensor([0])
    assert softmax_eql_loss(z, y, torch.tensor([1.0, 3.0])).item() == pytest.approx(math.log(4))
    zz, yy, pg, _ = _data()
    torch.testing.assert_close(softmax_eql_loss(zz, yy, pg + 1), softmax_eql_loss(zz, yy, 10 * (pg + 1)))


def test_softmax_eql_increments_are_logit_gradients():
    z, y, pg, _ = _data(n=9, c=4)
    x = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(softmax_eql_loss(x, y, pg, reduction="sum"), x)
    Y = F.one_hot(y, 4).double()
    pos_inc, neg_inc = softmax_eql_grad_stats(z, y, pg)
    torch.testing.assert_close(pos_inc, (g.abs() * Y).sum(0))
    torch.testing.assert_close(neg_inc, (g.abs() * (1 - Y)).sum(0))
    crit = SoftmaxEQLLoss(4, indicator="neg").double()
    crit(z, y)
    p0, n0 = softmax_eql_grad_stats(z, y)
    crit(z, y)
    p1, n1 = softmax_eql_grad_stats(z, y, n0)  # indicator="neg" uses neg_grad
    torch.testing.assert_close(crit.neg_grad, n0 + n1)
    torch.testing.assert_close(crit.pos_grad, p0 + p1)


# ---------------------------------------------------------------- EFL
def test_efl_matches_naive_and_fresh_is_focal():
    z, y, pg, ng = _data(n=6, c=4)
    torch.testing.assert_close(equalized_focal_loss(z, y, pg, ng, reduction="none"), naive_efl(z, y, pg, ng))
    # fresh statistics: sigmoid focal loss (torchvision's formula) summed / N
    Y = F.one_hot(y, 4).double()
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, Y, reduction="none")
    p_t = p * Y + (1 - p) * (1 - Y)
    focal = (0.25 * Y + 0.75 * (1 - Y)) * ce * (1 - p_t) ** 2
    torch.testing.assert_close(equalized_focal_loss(z, y), focal.sum() / 6)
    torch.testing.assert_close(EqualizedFocalLoss(4).double()(z, y), focal.sum() / 6)
    # dense 0/1 targets (a background row of zeros) are accepted
    Yd = Y.clone()
    Yd[0] = 0
    dense = equalized_focal_loss(z, Yd, pg, ng, reduction="none")
    torch.testing.assert_close(dense[1:], naive_efl(z, y, pg, ng)[1:])


def test_efl_increments_are_logit_gradients_and_rare_class_focuses_harder():
    z, y, pg, ng = _data(n=9, c=4)
    x = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(equalized_focal_loss(x, y, pg, ng, reduction="sum"), x)
    Y = F.one_hot(y, 4).double()
    pos_inc, neg_inc = equalized_focal_grad_stats(z, y, pg, ng)
    torch.testing.assert_close(pos_inc, (g.abs() * Y).sum(0))
    torch.testing.assert_close(neg_inc, (g.abs() * (1 - Y)).sum(0))
    # a class with g=0 uses gamma = 2 + 8 and weight 5: an easy negative is suppressed more
    zn, yn = torch.tensor([[-1.0, -1.0]]), torch.tensor([0])
    per = equalized_focal_loss(zn, torch.tensor([[0.0, 0.0]]), torch.tensor([1.0, 0.0]),
                               torch.tensor([1.0, 1.0]), reduction="none")
    p = _sig(-1.0)
    expected = 0.75 * (p ** 2 * _softplus(-1.0) + 5 * p ** 10 * _softplus(-1.0))
    assert per.item() == pytest.approx(expected, rel=1e-5)
    del yn


# ---------------------------------------------------------------- module state
@pytest.mark.parametrize("make", [lambda: EQLv2Loss(5), lambda: SoftmaxEQLLoss(5), lambda: EqualizedFocalLoss(5)])
def test_train_updates_eval_freezes_and_state_dict_round_trip(make):
    torch.manual_seed(3)
    crit = make()
    for _ in range(3):
        crit(torch.randn(16, 5), torch.randint(0, 5, (16,)))
    assert int(crit.num_updates) == 3 and crit.neg_grad.sum() > 0
    z, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    crit.eval()
    before = crit.pos_grad.clone(), crit.neg_grad.clone()
    l1 = crit(z, y)
    torch.testing.assert_close(crit.pos_grad, before[0])
    torch.testing.assert_close(crit.neg_grad, before[1])
    assert int(crit.num_updates) == 3
    sd = crit.state_dict()
    assert set(sd) >= {"pos_grad", "neg_grad", "num_updates"}
    other = make()
    other.load_state_dict(sd)
    other.eval()
    torch.testing.assert_close(other(z, y), l1)
    crit.train(), other.train()
    crit(z, y), other(z, y)
    torch.testing.assert_close(other.pos_grad, crit.pos_grad)
    crit.reset_statistics()
    assert int(crit.num_updates) == 0 and crit.pos_grad.abs().sum() == 0


def test_registry_names():
    assert isinstance(build_loss("eqlv2", num_classes=3), EQLv2Loss)
    assert isinstance(build_loss("softmax_eql", num_classes=3), SoftmaxEQLLoss)
    assert isinstance(build_loss("equalized_focal", num_classes=3), EqualizedFocalLoss)


# ---------------------------------------------------------------- errors and edge cases
def test_bad_inputs_raise_clear_errors():
    z = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"input must be 2-D logits of shape \(N, C\)"):
        eqlv2_loss(torch.randn(4), y)
    with pytest.raises(ValueError, match=r"target must be class indices of shape \(4,\)"):
        eqlv2_loss(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 2\]"):
        eqlv2_loss(z, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        softmax_eql_loss(z, y.float())
    with pytest.raises(ValueError, match=r"pos_grad must be a 1-D tensor of per-class statistics \(3,\)"):
        eqlv2_loss(z, y, torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="pos_grad and neg_grad must be given together"):
        equalized_focal_loss(z, y, torch.ones(3), None)
    with pytest.raises(ValueError, match=r"input must have 4 columns \(N, 4\)"):
        EQLv2Loss(3, use_background_column=True)(z, y)
    with pytest.raises(ValueError, match=r"input must have shape \(N, 5\)"):
        EqualizedFocalLoss(5)(z, y)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        EQLv2Loss(0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        eqlv2_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="indicator must be one of"):
        SoftmaxEQLLoss(3, indicator="both")
    with pytest.raises(ValueError, match="target given as a matrix must hold only 0 and 1"):
        equalized_focal_loss(z, torch.full((4, 3), 0.5))


# the empty batch (0 with a grad_fn, functional and module) is checked for every registry loss in
# tests/test_contract.py::test_empty_batch


@given(scale=st.sampled_from([1e4, -1e4, 3e3]), seed=st.integers(0, 2**16))
def test_huge_logits_finite(scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(6, 4, generator=g).sign() * scale).requires_grad_(True)
    y = torch.randint(0, 4, (6,), generator=g)
    pg, ng = torch.rand(4, generator=g), torch.rand(4, generator=g)
    for fn in (lambda x: eqlv2_loss(x, y, pg, ng), lambda x: softmax_eql_loss(x, y, pg),
               lambda x: equalized_focal_loss(x, y, pg, ng), lambda x: equalized_focal_loss(x, y)):
        z.grad = None
        out = fn(z)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    for crit in (EQLv2Loss(4), SoftmaxEQLLoss(4), EqualizedFocalLoss(4)):
        for _ in range(2):
            assert torch.isfinite(crit(z.detach(), y))
        assert torch.isfinite(crit.pos_grad).all() and torch.isfinite(crit.neg_grad).all()


@given(seed=st.integers(0, 2**16))
def test_bf16_autocast_finite_float32(seed):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(8, 5)
    x = torch.randn(10, 8, generator=g) * 50
    y = torch.randint(0, 5, (10,), generator=g)
    for crit in (EQLv2Loss(5), SoftmaxEQLLoss(5), EqualizedFocalLoss(5)):
        lin.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = lin(x)
            assert logits.dtype == torch.bfloat16
            out = crit(logits, y)
            out = out + crit(logits, y)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        out.backward()
        assert torch.isfinite(lin.weight.grad).all()
        assert crit.pos_grad.dtype == torch.float32 and torch.isfinite(crit.neg_grad).all()


# ------------------------------------------------------------------ ignore_index (F.cross_entropy's rule)
@pytest.mark.parametrize("name", ["eqlv2", "softmax_eql", "equalized_focal"])
def test_ignore_index_equals_dropping_the_rows(name):
    import tailwise
    import tailwise.functional as TFN

    torch.manual_seed(5)
    c = 4
    z = torch.randn(10, c, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, -100, 2, 3, -100, 1, 0, 2, -100])
    keep = y != -100
    fn = {"eqlv2": TFN.eqlv2_loss, "softmax_eql": TFN.softmax_eql_loss,
          "equalized_focal": TFN.equalized_focal_loss}[name]
    for reduction in ("mean", "sum"):
        full = fn(z, y, reduction=reduction)
        ref = fn(z[keep], y[keep], reduction=reduction)
        assert torch.allclose(full, ref)
    per = fn(z, y, reduction="none")
    assert per.shape == (10,) and torch.all(per[~keep] == 0)
    assert torch.allclose(per[keep], fn(z[keep], y[keep], reduction="none"))
    per.sum().backward()
    assert torch.all(z.grad[~keep] == 0) and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="target must be class indices"):
        fn(z, y, ignore_index=None)
    # every row ignored: 0 that still backpropagates
    z2 = torch.randn(3, c, requires_grad=True)
    out = fn(z2, torch.full((3,), -100))
    out.backward()
    assert out.item() == 0.0 and torch.all(z2.grad == 0)

    # modules: the statistics only see the kept rows
    cls = {"eqlv2": tailwise.EQLv2Loss, "softmax_eql": tailwise.SoftmaxEQLLoss,
           "equalized_focal": tailwise.EqualizedFocalLoss}[name]
    a, b = cls(num_classes=c).double(), cls(num_classes=c).double()
    for _ in range(2):
        la = a(z.detach(), y)
        lb = b(z.detach()[keep], y[keep])
        assert torch.allclose(la, lb)
    assert torch.allclose(a.pos_grad, b.pos_grad) and torch.allclose(a.neg_grad, b.neg_grad)
    with pytest.raises(TypeError, match="ignore_index must be an int or None"):
        cls(num_classes=c, ignore_index=1.5)
