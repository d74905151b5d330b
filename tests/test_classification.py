"""Tests of the classification family (CE/entropy/KL, focal, class-balanced, prior-based, IIF, difficulty)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tailwise
import tailwise.functional as TF

COUNTS = [500, 120, 30, 7, 2]


# ----------------------------------------------------------------------------- naive references
def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def naive_focal(z, y, alpha=None, gamma=2.0, ignore_index=-100):
    """Per-sample loop in float64 numpy; mean over non-ignored."""
    z = z.double().numpy()
    y = y.numpy()
    tot, n = 0.0, 0
    for i in range(z.shape[0]):
        if y[i] == ignore_index:
            continue
        lp = np_log_softmax(z[i])[y[i]]
        p = math.exp(lp)
        a = 1.0 if alpha is None else alpha[y[i]]
        tot += -a * (1 - p) ** gamma * lp
        n += 1
    return tot / max(n, 1)


def naive_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    x = x.double().numpy().ravel()
    t = t.double().numpy().ravel()
    out = []
    for xi, ti in zip(x, t):
        p = 1 / (1 + math.exp(-xi))
        ce = -(ti * math.log(p) + (1 - ti) * math.log(1 - p))
        pt = p * ti + (1 - p) * (1 - ti)
        a = alpha * ti + (1 - alpha) * (1 - ti) if alpha >= 0 else 1.0
        out.append(a * (1 - pt) ** gamma * ce)
    return float(np.mean(out))


def naive_cb_weights(counts, beta):
    counts = np.asarray(counts, dtype=np.float64)
    w = np.array([(1 - beta) / (1 - beta ** n) for n in counts])
    return w / w.sum() * len(counts)


def random_case(n=16, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=dtype) * 3, torch.randint(0, c, (n,), generator=g)


# ----------------------------------------------------------------------------- registry / exports
def test_registry_names_and_exports():
    names = set(tailwise.list_losses())
    for name in ["entropy", "cross_entropy", "kl_div", "focal", "sigmoid_focal", "class_balanced",
                 "balanced_softmax", "logit_adjusted", "bal_bce", "iif", "difficulty"]:
        assert name in names
    assert isinstance(tailwise.build_loss("focal", gamma=1.0), tailwise.FocalLoss)
    assert isinstance(tailwise.build_loss("balanced_softmax", class_counts=COUNTS), tailwise.BalancedSoftmaxLoss)
    for fn in ["entropy_loss", "cross_entropy_loss", "kl_div_loss", "focal_loss", "sigmoid_focal_loss",
               "class_balanced_loss", "balanced_softmax_loss", "logit_adjusted_loss", "bal_bce_loss", "iif_loss",
               "adjust_logits", "class_balanced_weights", "iif_weights"]:
        assert callable(getattr(TF, fn))


# ----------------------------------------------------------------------------- hand values
def test_hand_values():
    z = torch.tensor([[2.0, 0.0, 0.0]])
    y = torch.tensor([0])
    p0 = math.exp(2) / (math.exp(2) + 2)
    assert TF.cross_entropy_loss(z, y).item() == pytest.approx(-math.log(p0), rel=1e-6)
    assert TF.focal_loss(z, y, gamma=2).item() == pytest.approx(-(1 - p0) ** 2 * math.log(p0), rel=1e-6)
    assert TF.focal_loss(z, y, alpha=[0.5, 1, 1], gamma=1).item() == pytest.approx(
        -0.5 * (1 - p0) * math.log(p0), rel=1e-6)
    assert TF.entropy_loss(torch.zeros(2, 4)).item() == pytest.approx(math.log(4), rel=1e-6)
    # KL([0.5, 0.5] || softmax([0, log 3])) = 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75)
    kl = TF.kl_div_loss(torch.tensor([[0.0, math.log(3)]]), torch.tensor([[0.5, 0.5]]))
    assert kl.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)
    # sigmoid focal at x = 0, t = 1: p = 0.5, 0.25 * 0.25 * log 2
    assert TF.sigmoid_focal_loss(torch.zeros(1), torch.ones(1)).item() == pytest.approx(
        0.25 * 0.25 * math.log(2), rel=1e-6)
    # balanced softmax with counts [3, 1] at z = 0: softmax(log [0.75, 0.25]) -> -log 0.25 for class 1
    assert TF.balanced_softmax_loss(torch.zeros(1, 2), torch.tensor([1]), [3, 1]).item() == pytest.approx(
        math.log(4), rel=1e-6)
    assert torch.allclose(tailwise.adjust_logits(torch.zeros(1, 2), [3, 1], tau=1.0),
                          torch.tensor([[-math.log(0.75), -math.log(0.25)]]))
    assert torch.allclose(tailwise.iif_weights([3, 1]).float(), torch.tensor([math.log(4 / 3), math.log(4)]))
    # bal_bce, counts [3, 1], z = 0, label 0: BCE(logit(0.75), 1) + BCE(logit(0.25), 0) = 2 * -log 0.75
    assert TF.bal_bce_loss(torch.zeros(1, 2), torch.tensor([0]), [3, 1]).item() == pytest.approx(
        -2 * math.log(0.75), rel=1e-6)
    assert torch.allclose(tailwise.difficulty_weights([0.9, 0.5, 0.0]),
                          torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64) * 3 / 1.6)


# ----------------------------------------------------------------------------- reductions to CE
def test_focal_gamma0_equals_ce_and_grads():
    z, y = random_case(32, 7)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    a = TF.focal_loss(z1, y, gamma=0.0)
    b = F.cross_entropy(z2, y)
    a.backward()
    b.backward()
    assert torch.allclose(a, b) and torch.allclose(z1.grad, z2.grad)


def test_balanced_softmax_uniform_counts_is_ce():
    z, y = random_case(20, 5)
    assert torch.allclose(TF.balanced_softmax_loss(z, y, [7] * 5), F.cross_entropy(z, y))


def test_logit_adjusted_tau0_is_ce_and_tau1_is_balanced_softmax():
    z, y = random_case(20, 5)
    assert torch.allclose(TF.logit_adjusted_loss(z, y, COUNTS, tau=0.0), F.cross_entropy(z, y))
    assert torch.allclose(TF.logit_adjusted_loss(z, y, COUNTS, tau=1.0), TF.balanced_softmax_loss(z, y, COUNTS))
    # naive: add log prior by hand
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    assert torch.allclose(TF.logit_adjusted_loss(z, y, COUNTS, tau=0.5), F.cross_entropy(z + 0.5 * prior.log(), y))


def test_cross_entropy_matches_torch_options():
    z, y = random_case(24, 6)
    cw = torch.rand(6, dtype=torch.float64) + 0.1
    y2 = y.clone()
    y2[::4] = -100
    for kw in [dict(), dict(label_smoothing=0.2)]:
        assert torch.allclose(TF.cross_entropy_loss(z, y2, **kw), F.cross_entropy(z, y2, **kw))
        assert torch.allclose(TF.cross_entropy_loss(z, y2, class_weight=cw, **kw),
                              F.cross_entropy(z, y2, weight=cw, **kw))
    soft = torch.softmax(torch.randn(24, 6, dtype=torch.float64), 1)
    assert torch.allclose(TF.cross_entropy_loss(z, soft), F.cross_entropy(z, soft))
    # per-sample weight multiplies, mean over samples
    w = torch.rand(24, dtype=torch.float64)
    assert torch.allclose(TF.cross_entropy_loss(z, y, sample_weight=w), (F.cross_entropy(z, y, reduction="none") * w).mean())


def test_kl_div_matches_torch_batchmean_and_entropy_naive():
    z, _ = random_case(10, 4)
    p = torch.softmax(torch.randn(10, 4, dtype=torch.float64), 1)
    p[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # zeros contribute 0
    ref = F.kl_div(F.log_softmax(z, 1), p, reduction="batchmean")
    assert torch.allclose(TF.kl_div_loss(z, p), ref)
    assert torch.allclose(TF.kl_div_loss(z, p.log(), log_target=True), ref)
    lp = np_log_softmax(z.numpy())
    ent = -(np.exp(lp) * lp).sum(1).mean()
    assert TF.entropy_loss(z).item() == pytest.approx(ent, rel=1e-10)


# ----------------------------------------------------------------------------- naive agreement
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.3])
def test_focal_matches_naive(gamma):
    z, y = random_case(30, 6, seed=int(gamma * 10))
    y[3] = -100
    alpha = [0.1, 0.5, 1.0, 2.0, 0.3, 1.5]
    got = TF.focal_loss(z, y, alpha=alpha, gamma=gamma)
    assert got.item() == pytest.approx(naive_focal(z, y, alpha, gamma), rel=1e-10)


def test_focal_backward_matches_autograd_textbook():
    z, y = random_case(40, 9, seed=3)
    y[5] = -100
    alpha = torch.rand(9, dtype=torch.float64) + 0.5
    for gamma in [0.3, 2.0]:
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        TF.focal_loss(z1, y, alpha=alpha, gamma=gamma).backward()
        valid = y != -100
        lp = F.log_softmax(z2, 1)[valid].gather(1, y[valid, None]).squeeze(1)
        (-(alpha[y[valid]] * (1 - lp.exp()) ** gamma * lp).sum() / valid.sum()).backward()
        assert torch.allclose(z1.grad, z2.grad, atol=1e-12)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.6, 0.0), (0.25, 0.7), (0.4, 3.0)])
def test_sigmoid_focal_matches_naive_and_torchvision_formula(alpha, gamma):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    t = (torch.rand(7, 5, generator=g) > 0.6).double()
    t[0] = torch.rand(5, generator=g, dtype=torch.float64)  # soft targets
    got = TF.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
    assert got.item() == pytest.approx(naive_sigmoid_focal(x, t, alpha, gamma), rel=1e-10)
    # gradient vs autograd through the textbook (torchvision) formulation
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    TF.sigmoid_focal_loss(x1, t, alpha=alpha, gamma=gamma).backward()
    textbook_sigmoid_focal(x2, t, alpha, gamma).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-12)


def textbook_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def test_class_balanced_weights_match_official_formula():
    for beta in [0.0, 0.9, 0.99, 0.9999]:
        got = tailwise.class_balanced_weights(COUNTS, beta).numpy()
        if beta == 0.0:
            assert np.allclose(got, 1.0)
        else:
            assert np.allclose(got, naive_cb_weights(COUNTS, beta), rtol=1e-10)
        assert got.sum() == pytest.approx(len(COUNTS))


def test_class_balanced_loss_types_naive():
    z, y = random_case(12, 5, seed=4)
    w = naive_cb_weights(COUNTS, 0.999)
    zn, yn = z.numpy(), y.numpy()
    ce = np.mean([-w[yi] * np_log_softmax(zi)[yi] for zi, yi in zip(zn, yn)])
    assert TF.class_balanced_loss(z, y, COUNTS, beta=0.999).item() == pytest.approx(ce, rel=1e-10)
    tot_s, tot_f = 0.0, 0.0
    for zi, yi in zip(zn, yn):
        for c in range(5):
            t = 1.0 if c == yi else 0.0
            p = 1 / (1 + math.exp(-zi[c]))
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            pt = p if t else 1 - p
            tot_s += w[yi] * bce
            tot_f += w[yi] * (1 - pt) ** 2 * bce
    assert TF.class_balanced_loss(z, y, COUNTS, beta=0.999, loss_type="sigmoid").item() == pytest.approx(
        tot_s / 12, rel=1e-10)
    assert TF.class_balanced_loss(z, y, COUNTS, beta=0.999, loss_type="focal", gamma=2.0).item() == pytest.approx(
        tot_f / 12, rel=1e-10)
    # beta = 0: plain CE
    assert torch.allclose(TF.class_balanced_loss(z, y, COUNTS, beta=0.0), F.cross_entropy(z, y))


def test_bal_bce_naive_smoothing_and_soft_targets():
    z, y = random_case(9, 5, seed=5)
    pi = np.array(COUNTS, dtype=np.float64) / sum(COUNTS)
    s = 0.1
    tot = 0.0
    for zi, yi in zip(z.numpy(), y.numpy()):
        for c in range(5):
            t = (1 - s + s / 5) if c == yi else s / 5
            x = zi[c] + math.log(pi[c] / (1 - pi[c]))
            p = 1 / (1 + math.exp(-x))
            tot += -(t * math.log(p) + (1 - t) * math.log(1 - p))
    assert TF.bal_bce_loss(z, y, COUNTS, label_smoothing=s).item() == pytest.approx(tot / 9, rel=1e-10)
    # official C * mean(BCE) form
    bias = torch.tensor(np.log(pi) - np.log1p(-pi))
    onehot = F.one_hot(y, 5).double()
    assert torch.allclose(TF.bal_bce_loss(z, y, COUNTS), 5 * F.binary_cross_entropy_with_logits(z + bias, onehot))
    soft = torch.softmax(torch.randn(9, 5, dtype=torch.float64), 1)
    assert torch.allclose(TF.bal_bce_loss(z, soft, COUNTS), 5 * F.binary_cross_entropy_with_logits(z + bias, soft))
    thr = TF.bal_bce_loss(z, soft, COUNTS, target_threshold=0.3)
    assert torch.allclose(thr, 5 * F.binary_cross_entropy_with_logits(z + bias, (soft > 0.3).double()))


def test_iif_variants_and_train_test_weights():
    n = np.array(COUNTS, dtype=np.float64)
    N = n.sum()
    from statistics import NormalDist
    expect = {"raw": np.log(N / n), "smooth": np.log((N + 1) / (n + 1)) + 1, "rel": np.log((N - n) / n),
              "normit": np.array([-NormalDist().inv_cdf(v) for v in n / N]),
              "gombit": -np.log(-np.log(1 - n / N)), "base2": np.log2(N / n), "base10": np.log10(N / n)}
    for variant, ref in expect.items():
        assert np.allclose(tailwise.iif_weights(COUNTS, variant).numpy(), ref, rtol=1e-9), variant
    w = tailwise.iif_weights(COUNTS, "raw", norm=2).numpy()
    assert np.allclose(w, expect["raw"] / np.linalg.norm(expect["raw"]))
    z, y = random_case(10, 5, seed=6)
    ww = torch.tensor(expect["smooth"])
    assert torch.allclose(TF.iif_loss(z, y, COUNTS, variant="smooth"), F.cross_entropy(z * ww, y))
    crit = tailwise.IIFLoss(COUNTS, variant="smooth")
    assert torch.allclose(crit(z, y), F.cross_entropy(z * ww, y), rtol=1e-6)
    assert torch.allclose(crit.inference_logits(z), z * ww, rtol=1e-6)


def test_difficulty_module_weights_buffers_and_state_dict():
    crit = tailwise.DifficultyWeightedLoss(num_classes=4, tau=2.0)
    z, y = random_case(16, 4, seed=7)
    assert torch.allclose(crit(z, y), F.cross_entropy(z, y))  # before any update: plain CE
    acc = torch.tensor([0.9, 0.6, 0.3, 1.0])
    w = crit.update_accuracies(acc)
    ref = (1 - acc.double()) ** 2
    ref = ref / ref.sum() * 4
    assert torch.allclose(w.double(), ref, atol=1e-6)
    per = F.cross_entropy(z, y, reduction="none") * ref[y]
    assert torch.allclose(crit(z, y), per.mean(), rtol=1e-6)
    crit_w = tailwise.DifficultyWeightedLoss(4, tau=2.0, normalize_by_weight=True)
    crit_w.update_accuracies(acc)
    assert torch.allclose(crit_w(z, y), F.cross_entropy(z, y, weight=ref), rtol=1e-6)
    other = tailwise.DifficultyWeightedLoss(num_classes=4, tau=2.0)
    other.load_state_dict(crit.state_dict())
    assert torch.equal(other.class_weight, crit.class_weight) and int(other.num_updates) == 1
    assert torch.allclose(other(z, y), crit(z, y))
    # NaN (class without held-out samples) keeps the previous accuracy; first time: mean of the known ones
    crit.update_accuracies(torch.tensor([0.5, float("nan"), 0.3, 1.0]))
    assert torch.allclose(crit.per_class_acc, torch.tensor([0.5, 0.6, 0.3, 1.0]))
    fresh = tailwise.DifficultyWeightedLoss(num_classes=3)
    fresh.update_accuracies([0.2, float("nan"), 0.6])
    assert torch.allclose(fresh.per_class_acc, torch.tensor([0.2, 0.4, 0.6]))
    with pytest.raises(ValueError, match="at least one finite accuracy"):
        fresh.update_accuracies([float("nan")] * 3)
    # all classes perfect -> uniform weights, dynamic tau is finite
    assert torch.allclose(tailwise.difficulty_weights([1.0, 1.0]), torch.ones(2, dtype=torch.float64))
    wd = tailwise.difficulty_weights([0.9, 0.2, 0.5], tau="dynamic")
    tau = 1 / (1 + math.exp(-(0.9 / (0.2 + 0.01))))
    ref = np.array([0.1, 0.8, 0.5]) ** tau
    assert np.allclose(wd.numpy(), ref / ref.sum() * 3)


def test_difficulty_functional_matches_module_and_naive():
    z, y = random_case(20, 4, seed=3)
    z = z.double().requires_grad_()
    acc = torch.tensor([0.95, 0.5, 0.2, 0.7], dtype=torch.float64)
    # naive: explicit per-sample loop with (1 - acc)^tau weights normalised to mean 1
    raw = [(1 - a) ** 1.5 for a in acc.tolist()]
    w = [r / sum(raw) * 4 for r in raw]
    naive = sum(w[int(y[i])] * -torch.log_softmax(z[i], 0)[int(y[i])] for i in range(20)) / 20
    out = TF.difficulty_loss(z, y, acc, tau=1.5)
    assert torch.allclose(out, naive)
    crit = tailwise.DifficultyWeightedLoss(4, tau=1.5).double()
    crit.update_accuracies(acc)
    assert torch.allclose(crit(z, y), out)
    assert torch.autograd.gradcheck(lambda x: TF.difficulty_loss(x, y, acc, tau=1.5), (z,))
    with pytest.raises(ValueError, match="per_class_acc"):
        TF.difficulty_loss(z, y, torch.tensor([0.5, 0.5]))


def test_state_dict_round_trip_of_prior_modules():
    for cls, kw in [(tailwise.BalancedSoftmaxLoss, {}), (tailwise.LogitAdjustedLoss, {"tau": 0.5}),
                    (tailwise.BalBCELoss, {}), (tailwise.ClassBalancedLoss, {"beta": 0.99}),
                    (tailwise.IIFLoss, {"variant": "smooth"})]:
        a = cls(COUNTS, **kw)
        b = cls([1] * 5, **kw)
        b.load_state_dict(a.state_dict())
        z, y = random_case(8, 5, seed=8, dtype=torch.float32)
        assert torch.allclose(a(z, y), b(z, y)), cls


# ----------------------------------------------------------------------------- N-d inputs, ignore_index, reductions
def test_nd_inputs_match_flattening():
    g = torch.Generator().manual_seed(9)
    z = torch.randn(3, 5, 4, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (3, 4, 2), generator=g)
    y[0, 1, 1] = -100
    flat_z = z.movedim(1, -1).reshape(-1, 5)
    flat_y = y.reshape(-1)
    alpha = [1.0, 2.0, 0.5, 1.0, 3.0]
    fns = [lambda a, b: TF.focal_loss(a, b, alpha=alpha, gamma=2.0),
           lambda a, b: TF.cross_entropy_loss(a, b, label_smoothing=0.1),
           lambda a, b: TF.balanced_softmax_loss(a, b, COUNTS),
           lambda a, b: TF.logit_adjusted_loss(a, b, COUNTS, tau=0.7),
           lambda a, b: TF.iif_loss(a, b, COUNTS),
           lambda a, b: TF.class_balanced_loss(a, b, COUNTS)]
    for fn in fns:
        assert torch.allclose(fn(z, y), fn(flat_z, flat_y))
        zz = z.clone().requires_grad_()
        fn(zz, y).backward()
        zf = flat_z.clone().requires_grad_()
        fn(zf, flat_y).backward()
        assert torch.allclose(zz.grad.movedim(1, -1).reshape(-1, 5), zf.grad)
    none = TF.focal_loss(z, y, reduction="none")
    assert none.shape == (3, 4, 2) and none[0, 1, 1] == 0


def test_ignore_index_gives_no_gradient_and_all_ignored_is_zero():
    z, y = random_case(6, 4)
    y[:3] = -100
    zz = z.clone().requires_grad_()
    TF.focal_loss(zz, y).backward()
    assert torch.all(zz.grad[:3] == 0)
    allign = torch.full((6,), -100)
    for fn in [TF.focal_loss, TF.cross_entropy_loss]:
        zz = z.clone().requires_grad_()
        out = fn(zz, allign)
        out.backward()
        assert out.item() == 0 and torch.all(zz.grad == 0)


def test_empty_batch():
    # every registry loss's default form is checked in tests/test_contract.py::test_empty_batch;
    # here the variants the contract specs do not build
    z = torch.zeros(0, 5, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    for fn in [lambda a, b: TF.class_balanced_loss(a, b, COUNTS, loss_type="focal"),
               lambda a, b: TF.class_balanced_loss(a, b, COUNTS, loss_type="sigmoid"),
               lambda a, b: TF.sigmoid_focal_loss(a, F.one_hot(b, 5).float())]:
        out = fn(z, y)
        assert out.item() == 0 and out.requires_grad
        out.backward()


# ----------------------------------------------------------------------------- gradcheck
def test_gradcheck_float64():
    z, y = random_case(6, 4, seed=11)
    y[2] = -100
    t = torch.rand(6, 4, dtype=torch.float64)
    p = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    yy = y.clamp_min(0)
    fns = [lambda a: TF.focal_loss(a, y, alpha=[1, 2, 0.5, 1], gamma=2.0),
           lambda a: TF.focal_loss(a, y, gamma=0.5),
           lambda a: TF.sigmoid_focal_loss(a, t, gamma=2.0),
           lambda a: TF.sigmoid_focal_loss(a, (t > 0.5).double(), gamma=1.5),
           lambda a: TF.entropy_loss(a),
           lambda a: TF.kl_div_loss(a, p),
           lambda a: TF.cross_entropy_loss(a, y, label_smoothing=0.1),
           lambda a: TF.class_balanced_loss(a, yy, [5, 3, 2, 1], loss_type="focal", gamma=2.0),
           lambda a: TF.bal_bce_loss(a, yy, [5, 3, 2, 1]),
           lambda a: TF.iif_loss(a, yy, [5, 3, 2, 1], variant="gombit"),
           lambda a: TF.logit_adjusted_loss(a, y, [5, 3, 2, 1], tau=1.5)]
    for fn in fns:
        assert torch.autograd.gradcheck(fn, (z.clone().requires_grad_(),))


# ----------------------------------------------------------------------------- errors
def test_errors_are_clear():
    z, y = random_case(4, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="class_counts must be positive"):
        TF.balanced_softmax_loss(z, y, [1, 0, 2, 3, 4])
    with pytest.raises(ValueError, match="class_counts must be non-negative"):
        TF.logit_adjusted_loss(z, y, [1, -1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(5\)"):
        TF.bal_bce_loss(z, y, [1, 2, 3])
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 4\]"):
        TF.focal_loss(z, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        TF.iif_loss(z, torch.tensor([0, 1, 0, 1]).bool(), COUNTS)
    with pytest.raises(ValueError, match=r"target must be int64 class indices of shape \(4,\)"):
        TF.cross_entropy_loss(z, torch.rand(4))
    with pytest.raises(ValueError, match=r"target must be class indices of shape \(4,\)"):
        TF.focal_loss(z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input must be logits of shape \(N, C\)"):
        TF.focal_loss(torch.randn(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"alpha must have shape \(5,\)"):
        TF.focal_loss(z, y, alpha=[1, 2])
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        TF.focal_loss(z, y, gamma=-1)
    with pytest.raises(ValueError, match="target must have the same shape as input"):
        TF.sigmoid_focal_loss(z, torch.ones(4, 4))
    with pytest.raises(ValueError, match="loss_type must be one of"):
        TF.class_balanced_loss(z, y, COUNTS, loss_type="hinge")
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        tailwise.class_balanced_weights(COUNTS, beta=1.0)
    with pytest.raises(ValueError, match="variant must be one of"):
        tailwise.iif_weights(COUNTS, "cubic")
    with pytest.raises(ValueError, match=r"per_class_acc must have shape \(5,\)"):
        tailwise.DifficultyWeightedLoss(5).update_accuracies([0.5, 0.5])
    with pytest.raises(ValueError, match=r"per_class_acc must be finite accuracies in \[0, 1\]"):
        tailwise.DifficultyWeightedLoss(2).update_accuracies([0.5, 1.5])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        TF.cross_entropy_loss(z, y, label_smoothing=1.5)
    with pytest.raises(TypeError, match="target must be a floating tensor of probabilities"):
        TF.kl_div_loss(z, y)
    with pytest.raises(ValueError, match="reduction must be one of"):
        TF.focal_loss(z, y, reduction="avg")


# ----------------------------------------------------------------------------- numerics: huge logits, bf16
def _all_losses(z, y):
    onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
    return [TF.focal_loss(z, y), TF.focal_loss(z, y, gamma=0.5, alpha=[1.0] * z.shape[1]),
            TF.sigmoid_focal_loss(z, onehot), TF.cross_entropy_loss(z, y, label_smoothing=0.1),
            TF.entropy_loss(z), TF.kl_div_loss(z, torch.softmax(z.detach().flip(1).float(), 1).to(z.dtype)),
            TF.balanced_softmax_loss(z, y, COUNTS), TF.logit_adjusted_loss(z, y, COUNTS, tau=2.0),
            TF.bal_bce_loss(z, y, COUNTS), TF.iif_loss(z, y, COUNTS),
            TF.class_balanced_loss(z, y, COUNTS, loss_type="focal"),
            TF.class_balanced_loss(z, y, COUNTS, loss_type="sigmoid")]


@given(st.lists(st.sampled_from([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4]), min_size=15, max_size=15),
       st.lists(st.integers(0, 4), min_size=3, max_size=3))
def test_huge_logits_finite(vals, labels):
    z = torch.tensor(vals, dtype=torch.float32).view(3, 5).requires_grad_()
    y = torch.tensor(labels)
    for loss in _all_losses(z, y):
        assert torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(g).all()


@given(st.integers(0, 2**31 - 1), st.floats(0.0, 4.0))
def test_bf16_autocast_finite_and_close(seed, gamma):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(6, 5)
    x = torch.randn(8, 6, generator=g) * 10
    y = torch.randint(0, 5, (8,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = lin(x)
        assert z.dtype == torch.bfloat16
        losses = _all_losses(z, y) + [TF.focal_loss(z, y, gamma=gamma)]
    for loss in losses:
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
    losses[0].backward()
    assert torch.isfinite(lin.weight.grad).all()
    # close to the float32 value on the same bf16 logits
    assert TF.focal_loss(z.float(), y, gamma=gamma).item() == pytest.approx(losses[-1].item(), rel=1e-5, abs=1e-6)


@given(st.integers(0, 2**31 - 1), st.floats(0.0, 3.0), st.floats(0.0, 5.0))
def test_focal_bounded_by_alpha_ce(seed, gamma, scale):
    """(1 - p)^gamma <= 1: focal <= alpha-weighted CE, equality at gamma = 0; larger gamma never increases it."""
    z, y = random_case(10, 4, seed=seed % 1000)
    z = z * scale
    ce = F.cross_entropy(z, y, reduction="none")
    f = TF.focal_loss(z, y, gamma=gamma, reduction="none")
    assert torch.all(f <= ce + 1e-12)
    assert torch.all(TF.focal_loss(z, y, gamma=gamma + 0.5, reduction="none") <= f + 1e-12)


@given(st.integers(0, 2**31 - 1), st.floats(-5.0, 5.0))
def test_prior_losses_invariant_to_count_scale_and_logit_shift(seed, shift):
    z, y = random_case(8, 5, seed=seed % 1000)
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    a = TF.balanced_softmax_loss(z, y, counts)
    assert torch.allclose(a, TF.balanced_softmax_loss(z + shift, y, counts * 7))
    assert torch.allclose(TF.logit_adjusted_loss(z, y, counts, tau=0.3),
                          TF.logit_adjusted_loss(z + shift, y, counts * 3, tau=0.3))
    # post-hoc adjustment + CE == logit-adjusted loss with -tau (adjust_logits subtracts)
    assert torch.allclose(F.cross_entropy(tailwise.adjust_logits(z, counts, tau=0.4), y),
                          TF.logit_adjusted_loss(z, y, counts, tau=-0.4))


def test_sigmoid_focal_module_index_targets_and_modules_match_functionals():
    z, y = random_case(6, 5, seed=12, dtype=torch.float32)
    assert torch.allclose(tailwise.SigmoidFocalLoss()(z, y), TF.sigmoid_focal_loss(z, F.one_hot(y, 5).float()))
    assert torch.allclose(tailwise.FocalLoss(alpha=[1, 2, 3, 4, 5])(z, y), TF.focal_loss(z, y, alpha=[1, 2, 3, 4, 5]))
    assert torch.allclose(tailwise.CrossEntropyLoss(label_smoothing=0.1)(z, y),
                          F.cross_entropy(z, y, label_smoothing=0.1))
    assert torch.allclose(tailwise.KLDivLoss()(z, torch.softmax(z, 1)), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(tailwise.EntropyLoss()(z, y), TF.entropy_loss(z))
    assert torch.allclose(tailwise.ClassBalancedLoss(COUNTS, loss_type="sigmoid")(z, y),
                          TF.class_balanced_loss(z, y, COUNTS, loss_type="sigmoid"))
