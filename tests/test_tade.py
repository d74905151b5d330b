"""TADE: three-expert loss and test-time aggregation weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tailwise.classification.tade import TADELoss, tade_inverse_prior, tade_loss, tade_test_time_weights
from tailwise.registry import build_loss


def naive_tade(experts, y, counts, tau=2.0):
    """Per-sample float64 loops; inverse prior built by pairing sorted-ascending with sorted-descending."""
    total = sum(counts)
    prior = [c / total for c in counts]
    c = len(counts)
    asc = sorted(range(c), key=lambda j: (prior[j], j))
    inv = [0.0] * c
    for k, j in enumerate(asc):
        inv[j] = prior[asc[c - 1 - k]]
    out = []
    for i in range(experts.shape[1]):
        s = 0.0
        for e in range(3):
            row = []
            for j in range(c):
                v = float(experts[e, i, j])
                if e >= 1:
                    v += math.log(prior[j] + 1e-9)
                if e == 2:
                    v -= tau * math.log(inv[j] + 1e-9)
                row.append(v)
            m = max(row)
            s += m + math.log(sum(math.exp(r - m) for r in row)) - row[int(y[i])]
        out.append(s)
    return torch.tensor(out, dtype=torch.float64)


def test_inverse_prior_hand_values():
    torch.testing.assert_close(tade_inverse_prior(torch.tensor([0.7, 0.2, 0.1])), torch.tensor([0.1, 0.2, 0.7]))
    torch.testing.assert_close(tade_inverse_prior(torch.tensor([0.1, 0.7, 0.2])), torch.tensor([0.7, 0.1, 0.2]))
    # ties: stable ranking, and the multiset of values is preserved
    out = tade_inverse_prior(torch.tensor([0.25, 0.25, 0.5]))
    torch.testing.assert_close(out, torch.tensor([0.5, 0.25, 0.25]))


@pytest.mark.parametrize("tau", [2.0, 0.5])
def test_matches_naive(tau):
    g = torch.Generator().manual_seed(0)
    experts = torch.randn(3, 9, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 6, (9,), generator=g)
    counts = [500, 120, 40, 40, 9, 2]
    ref = naive_tade(experts, y, counts, tau)
    torch.testing.assert_close(tade_loss(experts, y, counts, tau, reduction="none"), ref)
    torch.testing.assert_close(tade_loss(list(experts), y, counts, tau), ref.mean())
    torch.testing.assert_close(TADELoss(counts, tau, reduction="sum").double()(tuple(experts), y), ref.sum())


def test_official_form_sum_of_three_batch_means():
    g = torch.Generator().manual_seed(1)
    e1, e2, e3 = (torch.randn(7, 4, generator=g) for _ in range(3))
    y = torch.randint(0, 4, (7,), generator=g)
    counts = torch.tensor([40.0, 20.0, 10.0, 5.0])
    prior = counts / counts.sum()
    inv = torch.tensor([5.0, 10.0, 20.0, 40.0]) / counts.sum()
    ref = (F.cross_entropy(e1, y) + F.cross_entropy(e2 + torch.log(prior + 1e-9), y)
           + F.cross_entropy(e3 + torch.log(prior + 1e-9) - 2 * torch.log(inv + 1e-9), y))
    torch.testing.assert_close(tade_loss([e1, e2, e3], y, counts), ref)


def test_uniform_counts_is_three_cross_entropies():
    g = torch.Generator().manual_seed(2)
    experts = torch.randn(3, 8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    ref = sum(F.cross_entropy(experts[e], y) for e in range(3))
    torch.testing.assert_close(tade_loss(experts, y, [7] * 5), ref)


def test_expert_optima_are_prior_uniform_and_inverse():
    """On a batch whose label frequencies are the training prior, a constant bias b minimises
    expert 1 at b = log(prior), expert 2 at b = 0 (uniform) and expert 3 at b = tau*log(inverse prior):
    the summed gradient w.r.t. each expert's logits vanishes there."""
    counts = torch.tensor([90.0, 9.0, 1.0], dtype=torch.float64)
    y = torch.cat([torch.full((90,), 0), torch.full((9,), 1), torch.full((1,), 2)])
    prior = counts / counts.sum()
    inv = torch.tensor([1.0, 9.0, 90.0], dtype=torch.float64) / 100
    b = torch.stack([prior.log(), torch.zeros(3, dtype=torch.float64), 2 * inv.log()])
    experts = b[:, None, :].expand(3, 100, 3).clone().requires_grad_(True)
    tade_loss(experts, y, counts).backward()
    torch.testing.assert_close(experts.grad.sum(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-7, rtol=0)
    # expert 3 then predicts the tail class most often
    assert torch.softmax(b[2], 0).argmax() == 2


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    experts = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (4,), generator=g)
    w = torch.rand(4, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda x: tade_loss(x, y, [50, 20, 5, 5, 1], sample_weight=w), (experts,))
    assert torch.autograd.gradcheck(lambda x: tade_loss(x, y, [50, 20, 5, 5, 1], reduction="none"), (experts,))


def test_errors():
    experts = torch.randn(3, 4, 5)
    y = torch.tensor([0, 1, 2, 4])
    with pytest.raises(ValueError, match=r"expert_logits must hold 3 experts \(E=3\), got 2"):
        tade_loss(experts[:2], y, [1] * 5)
    with pytest.raises(ValueError, match=r"expert_logits must be a \(E, N, C\) tensor"):
        tade_loss(experts[0], y, [1] * 5)
    with pytest.raises(ValueError, match=r"expert_logits\[2\] must be \(N, C\) logits"):
        tade_loss([experts[0], experts[1], torch.randn(4, 6)], y, [1] * 5)
    with pytest.raises(ValueError, match="class_counts must be positive"):
        tade_loss(experts, y, [3, 2, 0, 1, 1])
    with pytest.raises(ValueError, match="class_counts must be non-negative"):
        TADELoss([3, -2, 1, 1, 1])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(5\), got 4"):
        tade_loss(experts, y, [3, 2, 1, 1])
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 4\]"):
        tade_loss(experts, torch.tensor([0, 1, 2, 5]), [1] * 5)
    with pytest.raises(ValueError, match=r"target must be class indices of shape \(4,\)"):
        tade_loss(experts, torch.tensor([0, 1]), [1] * 5)
    with pytest.raises(TypeError, match="expert_logits must be a"):
        tade_loss("logits", y, [1] * 5)
    with pytest.raises(ValueError, match="expert_logits_view2 must have the shape"):
        tade_test_time_weights(experts, experts[:, :2])
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        tade_test_time_weights(experts, experts, epochs=0)


def test_registry_and_empty_batch():
    crit = build_loss("tade", class_counts=[5, 3, 1])
    assert isinstance(crit, TADELoss)
    z = torch.zeros(3, 0, 3, requires_grad=True)
    out = crit(z, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()
    assert "class_counts" in crit.state_dict()


@given(scale=st.sampled_from([1e4, -1e4]), seed=st.integers(0, 2**16))
def test_huge_logits_finite(scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(3, 5, 4, generator=g).sign() * scale).requires_grad_(True)
    y = torch.randint(0, 4, (5,), generator=g)
    out = tade_loss(z, y, [1000, 100, 10, 1])
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


@given(seed=st.integers(0, 2**16))
def test_bf16_autocast(seed):
    g = torch.Generator().manual_seed(seed)
    heads = torch.nn.Linear(6, 12)
    x = torch.randn(7, 6, generator=g) * 30
    y = torch.randint(0, 4, (7,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = heads(x).view(7, 3, 4).transpose(0, 1)
        out = TADELoss([100, 30, 5, 1])(logits, y)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(heads.weight.grad).all()


# ---------------------------------------------------------------- test-time aggregation
def _views(seed, n=512, c=10, consistent=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, generator=g) * 3
    v1 = torch.randn(3, n, c, generator=g) * 3
    v2 = torch.randn(3, n, c, generator=g) * 3
    v1[consistent] = base
    v2[consistent] = base + 0.1 * torch.randn(n, c, generator=g)
    return v1, v2


@pytest.mark.parametrize("consistent", [0, 2])
def test_test_time_weights_favour_consistent_expert(consistent):
    v1, v2 = _views(0, consistent=consistent)
    w = tade_test_time_weights(v1, v2)
    assert w.shape == (3,) and w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert int(w.argmax()) == consistent and w[consistent] > 0.6
    # deterministic
    torch.testing.assert_close(tade_test_time_weights(list(v1), list(v2)), w, rtol=0, atol=0)


def test_test_time_weights_match_naive_loop():
    """One epoch, written with nn.CosineSimilarity and explicit per-expert sums like the script."""
    v1, v2 = _views(1, n=300, c=6)
    w_raw = torch.nn.Parameter(torch.full((3,), 1 / 3))
    opt = torch.optim.SGD([w_raw], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    cos = torch.nn.CosineSimilarity(dim=1, eps=1e-6)
    for start in range(0, 300, 128):
        a = torch.softmax(w_raw, 0)
        o1 = a[0] * v1[0, start:start + 128] + a[1] * v1[1, start:start + 128] + a[2] * v1[2, start:start + 128]
        o2 = a[0] * v2[0, start:start + 128] + a[1] * v2[1, start:start + 128] + a[2] * v2[2, start:start + 128]
        loss = -cos(F.softmax(o1, 1), F.softmax(o2, 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ref = torch.softmax(w_raw.detach(), 0)
    torch.testing.assert_close(tade_test_time_weights(v1, v2, epochs=1), ref)


def test_test_time_weights_early_stop():
    v1, v2 = _views(2)
    w = tade_test_time_weights(v1, v2, epochs=50, min_weight=0.3)
    assert (w < 0.3).any()  # stopped right after the epoch where a weight crossed the threshold
