"""TSC (targets, assignment, loss) and ResCom pieces vs official-code transcriptions and brute force."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import tailwise
from tailwise import assign_targets, hard_pair_mining, rescom_class_weights, linear_sum_assignment, tsc_targets
from tailwise.functional import rescom_loss, tsc_loss


def unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), extra=st.integers(0, 2))
def test_assignment_is_optimal_vs_brute_force(seed, n, extra):
    rng = np.random.default_rng(seed)
    m = n + extra
    cost = rng.normal(size=(n, m))
    cols = linear_sum_assignment(cost)
    assert len(set(cols.tolist())) == n
    best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    assert cost[np.arange(n), cols].sum() == pytest.approx(best)


def test_assignment_matches_scipy_on_larger_problem():
    scipy_opt = pytest.importorskip("scipy.optimize")
    cost = np.random.default_rng(0).normal(size=(30, 40))
    r, c = scipy_opt.linear_sum_assignment(cost)
    ours = linear_sum_assignment(cost)
    assert cost[np.arange(30), ours].sum() == pytest.approx(cost[r, c].sum())
    with pytest.raises(ValueError, match="rows <= columns"):
        linear_sum_assignment(np.zeros((3, 2)))


def test_assign_targets_recovers_permutation():
    targets = unit(5, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    centers = targets[perm] + 0.05 * torch.randn(5, 8, dtype=torch.float64)
    assert assign_targets(centers, targets).tolist() == perm.tolist()


def test_tsc_targets_are_spread():
    def max_cos(x):
        return (x @ x.T)[~torch.eye(x.shape[0], dtype=torch.bool)].max().item()
    g = torch.Generator().manual_seed(0)
    start = F.normalize(torch.randn(10, 3, generator=g), dim=1)
    t = tsc_targets(10, 3, steps=300, lr=1e-2)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(10))
    assert max_cos(t) < max_cos(start) - 0.1
    # 4 targets in 3-D: optimum is the regular tetrahedron, pairwise cosine -1/3
    tet = tsc_targets(4, 3, steps=1500, lr=1e-2, temperature=0.5)
    off = (tet @ tet.T)[~torch.eye(4, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 3), atol=2e-2, rtol=0)


def naive_tsc(z, y, targets, assign, t, tw):
    """Per-anchor loop of the official KCL masking: targets appended to the keys, class positives +
    the assigned target, normalised by the positive count with the target counted once."""
    n, v, _ = z.shape
    keys = [(z[j, b], int(y[j]), ("s", b, j)) for b in range(v) for j in range(n)]
    keys += [(targets[r], None, ("t", r)) for r in range(targets.shape[0])]
    out = []
    for a in range(v):
        for i in range(n):
            rows = [(float(z[i, a] @ k) / t, lab, tag) for k, lab, tag in keys if tag != ("s", a, i)]
            logits = np.array([r[0] for r in rows])
            logp = logits - np.log(np.exp(logits).sum())
            num, cnt = 0.0, 0
            for lp, (_, lab, tag) in zip(logp, rows):
                if tag[0] == "s" and lab == int(y[i]):
                    num, cnt = num + lp, cnt + 1
                if tag[0] == "t" and tag[1] == int(assign[int(y[i])]):
                    num, cnt = num + tw * lp, cnt + 1
            out.append(-num / cnt)
    return float(np.mean(out))


@pytest.mark.parametrize("tw", [1.0, 0.5])
def test_tsc_loss_matches_naive(tw):
    z = unit(7, 2, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 1, 0])
    targets = unit(5, 4)
    assign = torch.tensor([4, 0, 2])
    ours = tsc_loss(z, y, targets, assign, temperature=0.2, target_weight=tw, chunk_size=3)
    assert ours.item() == pytest.approx(naive_tsc(z, y, targets, assign, 0.2, tw), rel=1e-9)
    zz = z.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: tsc_loss(x, y, targets, assign, temperature=0.5, target_weight=tw, normalize=True), (zz,))
    with pytest.raises(ValueError, match="assignment must be class indices"):
        tsc_loss(z, y, targets, torch.tensor([0, 1, 9]))


def test_tsc_module_assignment_and_state_dict():
    crit = tailwise.TSCLoss(num_classes=3, dim=4, target_steps=50)
    z = F.normalize(torch.randn(6, 2, 4), dim=-1)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = crit(z, y)
    assert torch.isfinite(loss) and sorted(crit.assignment.tolist()) == [0, 1, 2]
    other = tailwise.TSCLoss(num_classes=3, dim=4, targets=torch.randn(3, 4))
    other.load_state_dict(crit.state_dict())
    other.eval()
    crit.eval()
    torch.testing.assert_close(other(z, y), crit(z, y))


def official_rescom(feat, labels, queue_list, queue_size_per_cls, num_classes, kp, kn, temperature, class_weight):
    """ResCom builder._train (contrast part) + SiamBS_SPM.forward contrastive term (balsfx_n = 0)."""
    pos_index = torch.stack([torch.arange(queue_size_per_cls) + i * queue_size_per_cls for i in range(num_classes)])
    neg_index = torch.stack([torch.cat([torch.arange(queue_size_per_cls * i),
                                        torch.arange(queue_size_per_cls * (i + 1), queue_size_per_cls * num_classes)])
                             for i in range(num_classes)])
    sim_q = feat @ queue_list
    sp = -torch.topk(-torch.gather(sim_q, 1, pos_index[labels]), kp)[0]
    sn = torch.topk(torch.gather(sim_q, 1, neg_index[labels]), kn)[0]
    sb = feat @ feat.T
    mask = torch.ones_like(sb).scatter_(1, torch.arange(feat.shape[0]).unsqueeze(1), 0.0)
    sb = sb[mask.bool()].view(sb.shape[0], sb.shape[1] - 1)
    sim_con = torch.cat([sb, sp, sn], 1)
    lb = torch.eq(labels[:, None], labels[None, :]).to(feat.dtype)
    lb = lb[mask.bool()].view(lb.shape[0], lb.shape[1] - 1)
    labels_con = torch.cat([lb, torch.ones_like(sp), torch.zeros_like(sn)], 1)
    logp = torch.log_softmax(sim_con / temperature, 1)
    loss_con = torch.nn.KLDivLoss(reduction="none")(logp, labels_con)
    loss_con = loss_con.sum(1) / (labels_con.sum(1) + 1e-9)
    return (class_weight[labels] * loss_con).mean()


def test_rescom_matches_official():
    c, s, n, d = 4, 3, 6, 5
    z = unit(n, 2, d)
    y = torch.tensor([0, 1, 1, 2, 3, 0])
    q = tailwise.MemoryQueue(s, d, num_classes=c, balanced=True, dtype=torch.float64)
    q.enqueue(unit(c * s, d), torch.arange(c).repeat_interleave(s))
    counts = [100, 30, 10, 2]
    w = rescom_class_weights(counts, 0.999)
    ref = official_rescom(torch.cat([z[:, 0], z[:, 1]]), torch.cat([y, y]), q.keys.T, s, c, 2, 4, 0.1, w)
    ours = rescom_loss(z, y, q.keys, q.labels, class_counts=counts, num_positives=2, num_negatives=4,
                       chunk_size=5)
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-9)
    zz = z.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: rescom_loss(x, y, q.keys, q.labels, num_positives=2, num_negatives=4,
                                                          normalize=True), (zz,))


def test_class_balanced_weights_and_mining():
    n = np.array([100.0, 10.0, 1.0])
    eff = (1 - 0.999 ** n) / (1 - 0.999)
    torch.testing.assert_close(rescom_class_weights(n), torch.tensor(eff.mean() / eff))
    torch.testing.assert_close(rescom_class_weights(n, 0.0), torch.ones(3, dtype=torch.float64))
    sim = torch.tensor([[0.9, 0.1, 0.5, -0.2, 0.3]], dtype=torch.float64)
    pos = torch.tensor([[True, True, False, False, True]])
    hp, hn = hard_pair_mining(sim, pos, 2, 1)
    assert hp.tolist() == [[0.1, 0.3]] and hn.tolist() == [[0.5]]
    hp, _ = hard_pair_mining(sim, pos, 5, 1)  # only 3 positives exist
    assert torch.isinf(hp[0, 3:]).all() and hp[0, :3].tolist() == [0.1, 0.3, 0.9]


def test_rescom_module_queue_and_no_positive_rows():
    crit = tailwise.build_loss("rescom", num_classes=3, dim=4, queue_size_per_class=2, num_positives=1,
                               num_negatives=2)
    z = F.normalize(torch.randn(4, 2, 4), dim=-1).requires_grad_()
    y = torch.tensor([0, 1, 2, 2])
    loss = crit(z, y)  # empty queue: plain in-batch part
    loss.backward()
    assert torch.isfinite(z.grad).all() and len(crit.queue) == 4
    assert "queue.queue" in crit.state_dict()
    # V = 1, singleton classes, empty queue: no positives anywhere -> 0, finite grad
    z1 = F.normalize(torch.randn(3, 4), dim=-1).requires_grad_()
    out = rescom_loss(z1, torch.tensor([0, 1, 2]))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(z1.grad).all()
