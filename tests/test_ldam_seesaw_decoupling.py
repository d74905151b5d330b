"""LDAM(-DRW), NormedLinear, Seesaw (plain and detector form), tau-normalisation and LWS."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tailwise
import tailwise.functional as TF
from dist_harness import run_distributed, shard


# ------------------------------------------------------------------ independent transcriptions
def ldam_official(x, target, cls_num_list, max_m=0.5, s=30.0, weight=None):
    """kaidic/LDAM-DRW LDAMLoss.forward, re-expressed step by step (numpy margins, dense one-hot)."""
    m_list = 1.0 / np.sqrt(np.sqrt(np.asarray(cls_num_list, dtype=np.float64)))
    m_list = torch.tensor(m_list * (max_m / np.max(m_list)), dtype=x.dtype)
    index = torch.zeros_like(x, dtype=torch.bool)
    index.scatter_(1, target.view(-1, 1), True)
    batch_m = (m_list[None, :] @ index.to(x.dtype).T).view(-1, 1)
    output = torch.where(index, x - batch_m, x)
    return F.cross_entropy(s * output, target, weight=weight)


def seesaw_official(cls_score, labels, cum_samples, p=0.8, q=2.0, eps=1e-2):
    """mmdetection seesaw_ce_loss with pow-based factors, reduction='none'."""
    num_classes = cls_score.shape[1]
    onehot = F.one_hot(labels, num_classes)
    w = cls_score.new_ones(onehot.shape)
    ratio = cum_samples[None, :].clamp(min=1) / cum_samples[:, None].clamp(min=1)
    index = (ratio < 1.0).to(cls_score.dtype)
    w = w * (ratio.pow(p) * index + (1 - index))[labels]
    scores = F.softmax(cls_score.detach(), dim=1)
    self_scores = scores[torch.arange(len(scores)), labels]
    score_matrix = scores / self_scores[:, None].clamp(min=eps)
    index = (score_matrix > 1.0).to(cls_score.dtype)
    w = w * (score_matrix.pow(q) * index + (1 - index))
    return F.cross_entropy(cls_score + w.log() * (1 - onehot), labels, reduction="none")


# ------------------------------------------------------------------ LDAM
def test_ldam_hand_value():
    # margins: 100^-1/4 : 10^-1/4 scaled so the rarest is 0.5 -> target logit 0.2 - 0.5
    z, y = torch.tensor([[0.5, 0.2]]), torch.tensor([1])
    expected = float(np.log(np.exp(0.5) + np.exp(-0.3)) + 0.3)
    assert TF.ldam_loss(z, y, [100, 10], s=1.0).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(tailwise.ldam_margins([10000, 16]), torch.tensor([0.1, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("with_weight", [False, True])
def test_ldam_matches_official(with_weight):
    g = torch.Generator().manual_seed(1)
    counts = [500, 120, 40, 9, 3]
    x = torch.randn(37, 5, generator=g).tanh()
    y = torch.randint(0, 5, (37,), generator=g)
    w = tailwise.drw_weights(counts, epoch=170) if with_weight else None
    torch.testing.assert_close(TF.ldam_loss(x, y, counts, class_weight=w), ldam_official(x, y, counts, weight=w))
    mod = tailwise.build_loss("ldam", class_counts=counts, class_weight=w)
    torch.testing.assert_close(mod(x, y), ldam_official(x, y, counts, weight=w))


def test_ldam_gradcheck_and_reductions():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    assert torch.autograd.gradcheck(lambda z: TF.ldam_loss(z, y, [50, 20, 5, 2], s=5.0), (x,))
    none = TF.ldam_loss(x, y, [50, 20, 5, 2], reduction="none")
    assert none.shape == (6,)
    torch.testing.assert_close(none.sum(), TF.ldam_loss(x, y, [50, 20, 5, 2], reduction="sum"))


def test_ldam_ignore_index_and_empty():
    x = torch.randn(4, 3)
    y = torch.tensor([0, -100, 2, 1])
    keep = y != -100
    torch.testing.assert_close(TF.ldam_loss(x, y, [9, 4, 1]), TF.ldam_loss(x[keep], y[keep], [9, 4, 1]))
    e = torch.zeros(0, 3, requires_grad=True)
    out = TF.ldam_loss(e, torch.zeros(0, dtype=torch.long), [9, 4, 1])
    assert out.item() == 0.0 and out.grad_fn is not None


def test_ldam_errors():
    x, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="class_counts"):
        TF.ldam_loss(x, y, [1, 2])
    with pytest.raises(ValueError, match="max_m"):
        TF.ldam_loss(x, y, [1, 2, 3], max_m=0)
    with pytest.raises(ValueError, match="target"):
        TF.ldam_loss(x, torch.tensor([0, 3]), [1, 2, 3])
    with pytest.raises(ValueError, match="input must have 2 classes"):
        tailwise.LDAMLoss([3, 1])(x, y)


def test_drw_schedule():
    counts = [1000, 100, 10]
    torch.testing.assert_close(tailwise.drw_weights(counts, 159), torch.ones(3))
    w = tailwise.drw_weights(counts, 160)
    beta = 0.9999
    ref = np.array([(1 - beta) / (1 - beta ** n) for n in counts])
    torch.testing.assert_close(w, torch.tensor(ref / ref.sum() * 3, dtype=torch.float32))
    with pytest.raises(ValueError, match="epoch"):
        tailwise.drw_weights(counts, -1)


def test_normed_linear():
    torch.manual_seed(0)
    head = tailwise.NormedLinear(8, 5)
    torch.testing.assert_close(head.weight.norm(dim=0), torch.ones(5))
    x = torch.randn(3, 8)
    z = head(x)
    ref = (x / x.norm(dim=1, keepdim=True)) @ (head.weight / head.weight.norm(dim=0, keepdim=True))
    torch.testing.assert_close(z, ref)
    # scale invariance of a cosine classifier
    torch.testing.assert_close(head(5 * x), z)
    with pytest.raises(ValueError, match="in_features"):
        tailwise.NormedLinear(0, 3)


# ------------------------------------------------------------------ Seesaw
def test_seesaw_hand_value():
    # y = 0 is the head class: negatives 1 and 2 are mitigated by (10/100)^0.8 and (1/100)^0.8
    z, y = torch.zeros(1, 3), torch.tensor([0])
    expected = np.log(1 + 0.1 ** 0.8 + 0.01 ** 0.8)
    assert TF.seesaw_loss(z, y, torch.tensor([100.0, 10.0, 1.0])).item() == pytest.approx(expected, rel=1e-6)
    # a tail sample is not mitigated; equal scores give no compensation: plain CE
    assert TF.seesaw_loss(z, torch.tensor([2]), torch.tensor([100.0, 10.0, 1.0])).item() == pytest.approx(np.log(3))


@pytest.mark.parametrize("p,q", [(0.8, 2.0), (0.0, 2.0), (0.8, 0.0), (1.3, 0.5)])
def test_seesaw_matches_mmdet(p, q):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(41, 6, generator=g) * 3
    y = torch.randint(0, 6, (41,), generator=g)
    cum = torch.tensor([0.0, 3.0, 50.0, 7.0, 1000.0, 2.0])
    ref = seesaw_official(x, y, cum, p=p, q=q)
    torch.testing.assert_close(TF.seesaw_loss(x, y, cum, p=p, q=q, reduction="none"), ref, rtol=1e-5, atol=1e-6)


def test_seesaw_gradcheck():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 3])
    cum = torch.tensor([40.0, 9.0, 3.0, 1.0], dtype=torch.float64)
    # the compensation factor uses detached scores (stop-gradient, as mmdet), so finite
    # differences only agree with autograd without it; with it, compare to the transcription
    assert torch.autograd.gradcheck(lambda z: TF.seesaw_loss(z, y, cum, q=0.0), (x,))
    g1, = torch.autograd.grad(TF.seesaw_loss(x, y, cum).sum(), x)
    g2, = torch.autograd.grad(seesaw_official(x, y, cum).mean(), x)
    torch.testing.assert_close(g1, g2)


def test_seesaw_module_accumulates_before_loss_and_state_dict():
    crit = tailwise.SeesawLoss(num_classes=3)
    x, y = torch.randn(5, 3), torch.tensor([0, 0, 1, 2, 0])
    loss = crit(x, y)
    torch.testing.assert_close(crit.cum_samples, torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(loss, TF.seesaw_loss(x, y, torch.tensor([3.0, 1.0, 1.0])))
    crit.eval()
    crit(x, y)
    assert crit.cum_samples.sum().item() == 5  # eval mode does not count
    other = tailwise.SeesawLoss(num_classes=3)
    other.load_state_dict(crit.state_dict())
    torch.testing.assert_close(other.cum_samples, crit.cum_samples)


def test_seesaw_detector_form_matches_mmdet():
    g = torch.Generator().manual_seed(3)
    C = 4
    x = torch.randn(11, C + 2, generator=g)
    y = torch.tensor([0, 4, 1, 4, 2, 3, 4, 0, 1, 4, 3])
    lw = torch.rand(11, generator=g) + 0.5
    cum = torch.tensor([9.0, 4.0, 2.0, 1.0, 30.0])
    fg = y < C
    avg = max(int((lw > 0).sum()), 1)
    cls = (seesaw_official(x[fg, :C], y[fg], cum[:C]) * lw[fg]).sum() / avg
    obj = (F.cross_entropy(x[:, C:], (y == C).long(), reduction="none") * lw).sum() / avg
    out = TF.seesaw_detection_loss(x, y, cum, sample_weight=lw)
    torch.testing.assert_close(out, cls + obj, rtol=1e-5, atol=1e-6)
    crit = tailwise.SeesawLoss(num_classes=C, detector=True)
    crit(x, y, sample_weight=lw)
    torch.testing.assert_close(crit.cum_samples, torch.tensor([2.0, 2.0, 1.0, 2.0, 4.0], dtype=torch.float64))


def test_seesaw_errors():
    with pytest.raises(ValueError, match="cum_samples"):
        TF.seesaw_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(4))
    with pytest.raises(ValueError, match="input must have 5 columns"):
        tailwise.SeesawLoss(3, detector=True)(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target"):
        tailwise.SeesawLoss(3, detector=True)(torch.randn(2, 5), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="num_classes"):
        tailwise.SeesawLoss(0)


def _seesaw_worker(rank, world, x, y):
    crit = tailwise.SeesawLoss(num_classes=4)
    xs = shard(x, rank, world).clone().requires_grad_(True)
    loss = crit(xs, shard(y, rank, world))
    loss.backward()
    return {"cum": crit.cum_samples, "loss": loss.detach(), "grad": xs.grad}


@pytest.mark.distributed
def test_seesaw_two_ranks_equal_full_batch():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(12, 4, generator=g), torch.tensor([0, 0, 0, 1, 0, 2, 0, 0, 1, 3, 0, 1])
    res = run_distributed(_seesaw_worker, 2, x, y)
    full = tailwise.SeesawLoss(num_classes=4)
    xf = x.clone().requires_grad_(True)
    full_loss = full(xf, y)
    full_loss.backward()
    for r in res:
        torch.testing.assert_close(r["cum"], full.cum_samples)
    # mean over each half, averaged over ranks == full mean (equal shards); gradients scale by 1/2
    torch.testing.assert_close((res[0]["loss"] + res[1]["loss"]) / 2, full_loss.detach())
    torch.testing.assert_close(torch.cat([r["grad"] for r in res]) / 2, xf.grad)


# ------------------------------------------------------------------ tau-norm and LWS
def test_tau_normalize_matches_pnorm():
    w = torch.randn(7, 5)
    for tau in (0.0, 0.5, 1.0, 1.7):
        norms = torch.norm(w, 2, 1)
        ref = torch.stack([w[i] / norms[i] ** tau for i in range(7)])
        torch.testing.assert_close(tailwise.tau_normalize(w, tau), ref)
    torch.testing.assert_close(tailwise.tau_normalize(w, 1.0).norm(dim=1), torch.ones(7))
    with pytest.raises(ValueError, match="weight"):
        tailwise.tau_normalize(torch.randn(3), 1.0)


def test_lws_scales_logits_and_bias():
    lin = torch.nn.Linear(4, 3)
    lws = tailwise.LearnableWeightScaling(lin)
    with torch.no_grad():
        lws.scales.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(6, 4)
    torch.testing.assert_close(lws(x), (x @ lin.weight.T + lin.bias) * torch.tensor([1.0, 2.0, 0.5]))
    lws(x).sum().backward()
    assert lin.weight.grad is None and lws.scales.grad is not None
    with pytest.raises(TypeError, match="linear"):
        tailwise.LearnableWeightScaling(torch.nn.Conv1d(1, 1, 1))
