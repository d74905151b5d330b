"""Ranking losses: exact-metric limits (own sklearn-free references, cross-checked with sklearn),
naive references, gradcheck, queues, edge cases, errors, hypothesis sweeps."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import tailwise
import tailwise.functional as TF
from tailwise.kernels.soft_rank import _SoftRank


# ---------------------------------------------------------------- exact metrics (no sklearn)
def exact_ap(scores, labels):
    """Mean over positives of precision at the positive's rank (tie-free scores)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for r, i in enumerate(order, 1):
        if labels[i]:
            hits += 1
            total += hits / r
    return total / hits


def exact_pauc(scores, labels, alpha, beta):
    """Normalised area under the empirical ROC between FPR alpha and beta (step ROC, no ties)."""
    neg = sorted((s for s, y in zip(scores, labels) if not y), reverse=True)
    pos = [s for s, y in zip(scores, labels) if y]
    n = len(neg)
    area = 0.0
    for r, v in enumerate(neg):  # the ROC is flat at TPR(v) on FPR [r/n, (r+1)/n]
        lo, hi = max(r / n, alpha), min((r + 1) / n, beta)
        if hi > lo:
            area += (hi - lo) * sum(p > v for p in pos) / len(pos)
    return area / (beta - alpha)


def exact_recall_top(scores, labels, q):
    """Fraction of positives among the k highest scores, k = M - 1 - floor(q (M - 1))."""
    m = len(scores)
    k = m - 1 - math.floor(q * (m - 1))
    top = sorted(range(m), key=lambda i: -scores[i])[:k]
    return sum(labels[i] for i in top) / sum(labels)


def _case(seed, n=40, rate=0.25):
    g = np.random.default_rng(seed)
    y = (g.random(n) < rate).astype(int)
    y[0], y[1] = 1, 0
    s = g.normal(size=n) + 1.0 * y
    return s, y


@pytest.mark.parametrize("seed", range(4))
def test_exact_helpers_match_sklearn(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    s, y = _case(seed)
    assert exact_ap(list(s), list(y)) == pytest.approx(average_precision_score(y, s))
    for beta in (0.1, 0.3, 1.0):
        raw = beta * exact_pauc(list(s), list(y), 0.0, beta)
        mc = 0.5 * (1 + (raw - 0.5 * beta ** 2) / (beta - 0.5 * beta ** 2))  # McClish standardisation
        want = roc_auc_score(y, s, max_fpr=beta) if beta < 1 else roc_auc_score(y, s)
        assert (mc if beta < 1 else raw) == pytest.approx(want)


@pytest.mark.parametrize("seed", range(3))
def test_smooth_ap_tends_to_exact_ap(seed):
    s, y = _case(seed)
    exact = exact_ap(list(s), list(y))
    x = torch.tensor(s, dtype=torch.float64)
    errs = [abs(1 - TF.smooth_ap_loss(x, torch.tensor(y), temperature=t).item() - exact) for t in (1.0, 0.1, 1e-8)]
    assert errs[0] > errs[2] and errs[1] > errs[2] and errs[2] < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_pauc_tends_to_exact(seed):
    s, y = _case(seed, n=60)
    x = torch.tensor(s, dtype=torch.float64)
    for alpha, beta in ((0.0, 0.1), (0.05, 0.33), (0.0, 1.0)):
        exact = exact_pauc(list(s), list(y), alpha, beta)
        errs = [abs(1 - TF.pauc_at_budget_loss(x, torch.tensor(y), alpha=alpha, beta=beta, temperature=t).item()
                    - exact) for t in (1.0, 1e-5)]
        assert errs[1] < 1e-6 and errs[0] > errs[1]


@pytest.mark.parametrize("seed", range(3))
def test_recall_tends_to_exact(seed):
    s, y = _case(seed, n=101)
    x = torch.tensor(s, dtype=torch.float64)
    for q in (0.905, 0.755, 0.513):  # q (M - 1) not an integer: t_q between two scores
        exact = exact_recall_top(list(s), list(y), q)
        errs = [abs(1 - TF.recall_at_quantile_loss(x, torch.tensor(y), quantile=q, temperature=t).item() - exact)
                for t in (1.0, 1e-6)]
        assert errs[1] < 1e-6 and errs[0] > errs[1]


def test_hand_values():
    # AP of ranking [+, -, +, -] = (1/1 + 2/3) / 2
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert TF.smooth_ap_loss(s, torch.tensor([1, 0, 1, 0]), temperature=1e-4).item() == pytest.approx(1 / 6, abs=1e-6)
    # tau = 1: R(k) = 1 + sum_{j != k} sigma(s_j - s_k) on two items
    s = torch.tensor([1.0, 0.0])
    # positives {0}: R+(0) = 1, R(0) = 1 + sigma(0 - 1)
    want = 1 - 1 / (1 + torch.sigmoid(torch.tensor(-1.0)).item())
    assert TF.smooth_ap_loss(s, torch.tensor([1, 0]), temperature=1.0).item() == pytest.approx(want, rel=1e-6)
    # pAUC band [0, 0.5] of 4 negatives = top 2 negatives (1.0, 0.0); 0.5 beats one of them
    s = torch.tensor([2.0, 0.5, 1.0, 0.0, -1.0, -2.0])
    y = torch.tensor([1, 1, 0, 0, 0, 0])
    assert TF.pauc_at_budget_loss(s, y, beta=0.5, temperature=1e-4).item() == pytest.approx(0.25, abs=1e-6)
    # fractional band edge: beta = 0.375 of 4 negatives covers rank 0 fully and half of rank 1
    # positive 0.5: (0.25*0 + 0.125*1)/0.375 = 1/3; positive 2.0: 1 -> pAUC = 2/3
    assert TF.pauc_at_budget_loss(s, y, beta=0.375, temperature=1e-4).item() == pytest.approx(1 / 3, abs=1e-6)
    # squared hinge: margin 1, positive 2.0 vs band {1.0, 0.0}: (1-1)^2, (1-2)_+ = 0 ; positive 0.5: (1.5)^2, (0.5)^2
    val = TF.pauc_at_budget_loss(s, y, beta=0.5, surrogate="squared_hinge").item()
    assert val == pytest.approx(0.5 * (0.0 + 0.5 * 2.25 + 0.5 * 0.25))


def _naive_smooth_ap(s, y, tau):
    """Independent float64 loop: per class, every positive ranked against all other rows."""
    s = s.detach().double().numpy()
    total, count = 0.0, 0
    for c in range(s.shape[1]):
        pos = [i for i in range(len(y)) if y[i] == c]
        if not pos or len(pos) == len(y):
            continue
        ap = 0.0
        for i in pos:
            r_all = 1 + sum(1 / (1 + math.exp(-(s[j, c] - s[i, c]) / tau)) for j in range(len(y)) if j != i)
            r_pos = 1 + sum(1 / (1 + math.exp(-(s[j, c] - s[i, c]) / tau)) for j in pos if j != i)
            ap += r_pos / r_all
        total += 1 - ap / len(pos)
        count += 1
    return total / count


def test_smooth_ap_multiclass_matches_naive_and_multihot():
    x = torch.randn(30, 4)
    y = torch.randint(0, 4, (30,))
    got = TF.smooth_ap_loss(x, y, temperature=0.3)
    assert got.item() == pytest.approx(_naive_smooth_ap(x, y.tolist(), 0.3), rel=1e-5)
    onehot = torch.nn.functional.one_hot(y, 4)
    assert TF.smooth_ap_loss(x, onehot, temperature=0.3).item() == pytest.approx(got.item(), rel=1e-6)
    # a binary column equals the one-vs-rest class
    col = TF.smooth_ap_loss(x[:, 2], (y == 2).long(), temperature=0.3, reduction="none")
    assert col.item() == pytest.approx(TF.smooth_ap_loss(x, y, temperature=0.3, reduction="none")[2].item(), rel=1e-6)


def test_ignore_index_equals_dropping_rows():
    x = torch.randn(20, 3)
    y = torch.randint(0, 3, (20,))
    y[1:4] = torch.arange(3)  # every class keeps a positive after dropping rows 0, 4, 8...
    y2 = y.clone()
    y2[::4] = -100
    keep = y2 != -100
    for fn in (TF.smooth_ap_loss, TF.recall_at_quantile_loss, TF.pauc_at_budget_loss):
        kw = {"quantile": 0.7} if fn is TF.recall_at_quantile_loss else {}
        assert fn(x, y2, **kw).item() == pytest.approx(fn(x[keep], y[keep], **kw).item(), rel=1e-6)


@pytest.mark.parametrize("fn", [TF.smooth_ap_loss, TF.recall_at_quantile_loss, TF.pauc_at_budget_loss])
def test_gradcheck_float64(fn):
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2] * 4)
    w = torch.rand(12, dtype=torch.float64) + 0.5
    kw = {"temperature": 0.7, "sample_weight": w}
    if fn is TF.recall_at_quantile_loss:
        # the detached threshold is a stop-gradient by design; the full gradient is checked
        kw.update(quantile=0.63, detach_threshold=False)
    if fn is TF.pauc_at_budget_loss:
        kw["beta"] = 0.4
    qs, ql = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    assert torch.autograd.gradcheck(lambda t: fn(t, y, **kw), (x,))
    assert torch.autograd.gradcheck(lambda t: fn(t, y, queue_scores=qs, queue_labels=ql, **kw), (x,))


def test_gradcheck_soft_rank_and_hinge():
    x = torch.randn(9, dtype=torch.float64, requires_grad=True)
    a = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, v: _SoftRank.apply(u, v, 0.4), (x, a))
    y = torch.tensor([1, 0, 0, 1, 0, 0, 0, 0, 1])
    assert torch.autograd.gradcheck(lambda u: TF.pauc_at_budget_loss(u, y, beta=0.5, surrogate="squared_hinge"), (x,))


@pytest.mark.parametrize("fn", [TF.smooth_ap_loss, TF.recall_at_quantile_loss, TF.pauc_at_budget_loss])
def test_no_positive_batch_is_finite_with_zero_grad(fn):
    x = torch.randn(16, 2, requires_grad=True)
    y = torch.zeros(16, 2, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = fn(x, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all() and (x.grad == 0).all()
    e = torch.zeros(0, 3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(e, torch.zeros(0, dtype=torch.long))
    out.backward()
    assert out.item() == 0.0


@pytest.mark.parametrize("fn", [TF.smooth_ap_loss, TF.recall_at_quantile_loss, TF.pauc_at_budget_loss])
def test_huge_constant_and_bf16(fn):
    y = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0])
    for x in (torch.tensor([1e6, -1e6, 3e5, 0, -4e5, 2e6, 0, 1.0]), torch.zeros(8)):
        x = x.requires_grad_(True)
        loss = fn(x, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    xb = torch.randn(8).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(xb, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(xb.grad.float()).all()


def test_pauc_warns_once_and_skips():
    m = tailwise.PAUCAtBudgetLoss(beta=0.5)
    x = torch.randn(6, 2)
    y = torch.tensor([0, 0, 0, 0, 0, 0])
    with pytest.warns(UserWarning, match="skipped"):
        m(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x, y)  # second time silent
    out, valid = m(x, torch.tensor([1, 1, 0, 0, 0, 0]), return_valid=True)
    assert valid.tolist() == [True, True]


def test_queue_matches_functional_and_wraps():
    torch.manual_seed(1)
    batches = [(torch.randn(5, 3), torch.randint(0, 3, (5,))) for _ in range(4)]
    for cls, fn, kw in ((tailwise.SmoothAPLoss, TF.smooth_ap_loss, {"temperature": 0.2}),
                        (tailwise.RecallAtQuantileLoss, TF.recall_at_quantile_loss, {"quantile": 0.8}),
                        (tailwise.PAUCAtBudgetLoss, TF.pauc_at_budget_loss, {"beta": 0.3})):
        m = cls(num_classes=3, queue_size=7, **kw)
        history = []
        for x, y in batches:
            qs = torch.cat([h[0] for h in history])[-7:] if history else None
            ql = torch.cat([h[1] for h in history])[-7:] if history else None
            want = fn(x, y, queue_scores=qs, queue_labels=ql, **kw)
            xg = x.clone().requires_grad_(True)
            got = m(xg, y)
            assert got.item() == pytest.approx(want.item(), rel=1e-5)
            history.append((x, y))
        assert len(m.queue) == 7  # 20 rows through a 7-slot ring: wrapped twice
        # queue rows carry no gradient: queued scores are stored detached
        assert not m.queue.queue.requires_grad
        # state_dict round trip keeps the queue
        m2 = cls(num_classes=3, queue_size=7, **kw)
        m2.load_state_dict(m.state_dict())
        x, y = batches[0]
        assert m2(x, y).item() == pytest.approx(m(x, y).item())
        m.eval()
        before = m.queue.queue.clone()
        m(x, y)
        assert torch.equal(before, m.queue.queue)  # frozen in eval
        m.reset_queue()
        assert len(m.queue) == 0


def test_queue_uses_memory_queue():
    from tailwise.contrastive.queue import MemoryQueue

    assert isinstance(tailwise.SmoothAPLoss(num_classes=2, queue_size=4).queue, MemoryQueue)


def test_errors():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="input"):
        TF.smooth_ap_loss(x.long(), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have 4 rows"):
        TF.smooth_ap_loss(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        TF.smooth_ap_loss(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="binary target"):
        TF.smooth_ap_loss(x[:, 0], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="multi-hot"):
        TF.smooth_ap_loss(x, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        TF.smooth_ap_loss(x, torch.zeros(4, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="quantile"):
        TF.recall_at_quantile_loss(x, torch.zeros(4, dtype=torch.long), quantile=1.0)
    with pytest.raises(ValueError, match="alpha < beta"):
        TF.pauc_at_budget_loss(x, torch.zeros(4, dtype=torch.long), alpha=0.3, beta=0.2)
    with pytest.raises(ValueError, match="surrogate"):
        TF.pauc_at_budget_loss(x, torch.zeros(4, dtype=torch.long), surrogate="hinge")
    with pytest.raises(ValueError, match="input must be finite"):
        TF.smooth_ap_loss(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
        TF.smooth_ap_loss(x, torch.zeros(4, dtype=torch.long), sample_weight=torch.ones(3))
    with pytest.raises(ValueError, match=r"queue_scores must have shape \(K, 3\)"):
        TF.smooth_ap_loss(x, torch.zeros(4, dtype=torch.long), queue_scores=torch.zeros(2, 2),
                          queue_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        tailwise.SmoothAPLoss(queue_size=3)
    with pytest.raises(ValueError, match="2 column"):
        tailwise.SmoothAPLoss(num_classes=2)(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        tailwise.SmoothAPLoss(reduction="avg")


def test_registry():
    assert isinstance(tailwise.build_loss("smooth_ap"), tailwise.SmoothAPLoss)
    assert isinstance(tailwise.build_loss("recall_at_quantile", quantile=0.99), tailwise.RecallAtQuantileLoss)
    assert isinstance(tailwise.build_loss("pauc_at_budget", beta=0.05), tailwise.PAUCAtBudgetLoss)


def test_weights_scale_positive_contributions():
    x = torch.randn(10, 1)
    y = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    a = TF.smooth_ap_loss(x, y, temperature=0.5, reduction="none")
    w = torch.ones(10)
    w[1] = 0.0
    only0 = TF.smooth_ap_loss(x, y, temperature=0.5, sample_weight=w)
    # with positive 1 weighted out, AP = precision of positive 0 alone (ranks still include 1)
    r_all = 1 + torch.sigmoid((x[1:, 0] - x[0, 0]) / 0.5).sum()
    r_pos = 1 + torch.sigmoid((x[1, 0] - x[0, 0]) / 0.5)
    assert only0.item() == pytest.approx(1 - (r_pos / r_all).item(), rel=1e-5)
    assert a.shape == (1,)


@given(st.integers(0, 10_000), st.integers(2, 30), st.floats(0.01, 2.0), st.integers(1, 4))
def test_hypothesis_bounds_and_invariances(seed, n, tau, c):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n, c), generator=g)
    for fn, kw in ((TF.smooth_ap_loss, {}), (TF.recall_at_quantile_loss, {"quantile": 0.7}),
                   (TF.pauc_at_budget_loss, {"beta": 0.5})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = fn(x, y, temperature=tau, **kw)
            assert 0.0 <= v.item() <= 1.0 and math.isfinite(v.item())
            # shift invariance and temperature/scale equivalence
            assert fn(x + 3.0, y, temperature=tau, **kw).item() == pytest.approx(v.item(), abs=1e-9)
            assert fn(2 * x, y, temperature=2 * tau, **kw).item() == pytest.approx(v.item(), abs=1e-9)
            # permutation invariance
            perm = torch.randperm(n, generator=g)
            assert fn(x[perm], y[perm], temperature=tau, **kw).item() == pytest.approx(v.item(), abs=1e-9)


@given(st.integers(0, 10_000))
def test_hypothesis_perfect_ranking(seed):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(25, generator=g) < 0.3).long()
    y[0], y[1] = 1, 0
    x = torch.randn(25, generator=g, dtype=torch.float64) + 100.0 * y
    assert TF.smooth_ap_loss(x, y).item() == pytest.approx(0.0, abs=1e-9)
    assert TF.pauc_at_budget_loss(x, y, beta=0.3, temperature=0.01).item() == pytest.approx(0.0, abs=1e-9)


def test_detached_threshold_moves_only_positives():
    x = torch.randn(50, requires_grad=True)
    y = (torch.arange(50) % 7 == 0).long()
    TF.recall_at_quantile_loss(x, y, quantile=0.8, temperature=1.0).backward()
    assert (x.grad[y == 0] == 0).all() and (x.grad[y == 1] < 0).all()
    x.grad = None
    TF.recall_at_quantile_loss(x, y, quantile=0.8, temperature=1.0, detach_threshold=False).backward()
    assert (x.grad[y == 0] > 0).sum() in (1, 2)  # the rows that define t_q are pushed down


def test_warmup_blend_schedule_hooks_state():
    bce = torch.nn.BCEWithLogitsLoss()
    ap = tailwise.SmoothAPLoss(temperature=0.5)
    blend = tailwise.WarmupBlend(bce, ap, warmup_steps=2, blend_steps=4)
    x, y = torch.randn(12), (torch.arange(12) % 3 == 0).float()
    lams = []
    for t in range(8):
        lam = min(1.0, max(0.0, (t - 2) / 4))
        want = (1 - lam) * bce(x, y) + lam * ap(x, y)
        assert blend(x, y).item() == pytest.approx(want.item(), rel=1e-6)
        lams.append(blend.blend_weight)
        blend.on_train_batch_end(None, None, 0)
        blend.on_train_epoch_end()  # ignored with step_per="batch"
    assert lams == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    fresh = tailwise.WarmupBlend(bce, ap, warmup_steps=2, blend_steps=4)
    fresh.load_state_dict(blend.state_dict())
    assert int(fresh.step_count) == 8 and fresh.blend_weight == 1.0
    ep = tailwise.WarmupBlend(bce, ap, warmup_steps=1, step_per="epoch")
    ep.on_train_batch_end()
    assert ep.blend_weight == 0.0
    ep.on_train_epoch_end()
    assert ep.blend_weight == 1.0


def test_warmup_blend_registry_temperature_and_errors():
    b = tailwise.build_loss("warmup_blend", first="smooth_ap", second="pauc_at_budget", warmup_steps=1,
                            second_kwargs={"beta": 0.5}, temperature_start=1.0, temperature_end=0.01,
                            temperature_steps=2)
    assert isinstance(b.second, tailwise.PAUCAtBudgetLoss) and b.second.beta == 0.5
    temps = []
    for _ in range(5):
        temps.append(b.second.temperature)
        b.step()
    assert temps[1:] == pytest.approx([1.0, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="warmup_steps"):
        tailwise.WarmupBlend(torch.nn.MSELoss(), torch.nn.MSELoss(), warmup_steps=-1)
    with pytest.raises(ValueError, match="step_per"):
        tailwise.WarmupBlend(torch.nn.MSELoss(), torch.nn.MSELoss(), step_per="iter")
    with pytest.raises(ValueError, match="temperature attribute"):
        tailwise.WarmupBlend(torch.nn.MSELoss(), torch.nn.MSELoss(), temperature_start=1.0, temperature_end=0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        tailwise.WarmupBlend("nope", "smooth_ap")


def test_warmup_blend_prefill_fills_queue():
    ap = tailwise.SmoothAPLoss(num_classes=1, queue_size=10)
    b = tailwise.WarmupBlend(torch.nn.BCEWithLogitsLoss(), ap, warmup_steps=5, prefill=True)
    x, y = torch.randn(4, requires_grad=True), torch.tensor([1.0, 0, 0, 0])
    b(x, y).backward()
    assert len(ap.queue) == 4
