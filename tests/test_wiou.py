"""Wise-IoU v1/v2/v3: values vs a transcription of the official IouLoss, state, distributed."""

import math

import pytest
import torch

import tailwise
import tailwise.functional as TF
from dist_harness import run_distributed, shard


class OfficialWIoU:
    """Instinct323/wiou IouLoss (ltype WIoU/IoU/GIoU/DIoU), re-expressed; eps-free like the code."""

    def __init__(self, momentum, alpha, delta, monotonous, ltype="WIoU"):
        self.m, self.alpha, self.delta, self.mono, self.ltype = momentum, alpha, delta, monotonous, ltype
        self.iou_mean = 1.0

    def __call__(self, pred, target):
        pxy, pwh = (pred[..., :2] + pred[..., 2:]) / 2, pred[..., 2:] - pred[..., :2]
        txy, twh = (target[..., :2] + target[..., 2:]) / 2, target[..., 2:] - target[..., :2]
        lo, hi = torch.minimum(pred, target), torch.maximum(pred, target)
        s_inter = torch.relu(lo[..., 2:] - hi[..., :2]).prod(-1)
        s_union = pwh.prod(-1) + twh.prod(-1) - s_inter
        wh_box = hi[..., 2:] - lo[..., :2]
        l2_box = wh_box.square().sum(-1)
        l2_center = (pxy - txy).square().sum(-1)
        l_iou = 1 - s_inter / s_union
        if self.mono is not None:
            self.iou_mean = (1 - self.m) * self.iou_mean + self.m * l_iou.detach().mean().item()
        loss = {"WIoU": torch.exp(l2_center / l2_box.detach()) * l_iou, "IoU": l_iou,
                "GIoU": l_iou + (wh_box.prod(-1) - s_union) / wh_box.prod(-1),
                "DIoU": l_iou + l2_center / l2_box}[self.ltype]
        if self.mono is not None:
            beta = l_iou.detach() / self.iou_mean
            loss = loss * (beta.sqrt() if self.mono else beta / (self.delta * torch.pow(self.alpha, beta - self.delta)))
        return loss


def _boxes(n, g, dtype=torch.float64):
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 5 + 0.5
    return torch.cat([xy, xy + wh], -1)


def test_wiou_v1_hand_value():
    p, t = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    # IoU = 2/6, rho^2 = 1, enclosing box 3 x 2 -> c^2 = 13
    assert TF.wiou_loss(p, t, version="v1").item() == pytest.approx(math.exp(1 / 13) * 2 / 3, rel=1e-6)


@pytest.mark.parametrize("version,mono", [("v1", None), ("v2", True), ("v3", False)])
@pytest.mark.parametrize("base,ltype", [("wiou", "WIoU"), ("iou", "IoU"), ("giou", "GIoU"), ("diou", "DIoU")])
@pytest.mark.parametrize("preset", ["paper", "master"])
def test_wiou_module_matches_official_over_steps(version, mono, base, ltype, preset):
    g = torch.Generator().manual_seed(0)
    alpha, delta, m = tailwise.WIOU_PRESETS[preset]
    m = 0.2  # a large momentum makes the running mean matter within a few steps
    ours = tailwise.WIoULoss(version=version, base=base, preset=preset, momentum=m, eps=1e-12, reduction="none")
    ref = OfficialWIoU(m, alpha, delta, mono, ltype)
    for _ in range(3):
        p, t = _boxes(9, g), _boxes(9, g)
        # the running mean is a float32 buffer: agreement to float32 precision
        torch.testing.assert_close(ours(p, t), ref(p, t), rtol=1e-6, atol=1e-7)
    if version != "v1":
        assert ours.iou_mean.item() == pytest.approx(ref.iou_mean, rel=1e-6)


def test_wiou_v3_focus_is_one_at_delta_and_gradients():
    p = _boxes(5, torch.Generator().manual_seed(1)).requires_grad_(True)
    t = _boxes(5, torch.Generator().manual_seed(2))
    l_iou = TF.wiou_loss(p, t, version="v1", base="iou", reduction="none").detach()
    # choose the running mean so that beta = delta for box 0: then r = 1
    mean = l_iou[0] / 3.0
    v3 = TF.wiou_loss(p, t, version="v3", iou_mean=mean, reduction="none")
    v1 = TF.wiou_loss(p, t, version="v1", reduction="none")
    assert v3[0].item() == pytest.approx(v1[0].item(), rel=1e-9)
    assert torch.autograd.gradcheck(lambda x: TF.wiou_loss(x, t, version="v1", base="iou"), (p,))
    # the focusing factor and the enclosing box are stop-gradient: compare with autograd of the
    # transcription instead of finite differences
    for version, mono in (("v1", None), ("v2", True), ("v3", False)):
        ref = OfficialWIoU(0.0, 1.9, 3.0, mono)
        ref.iou_mean = 0.7
        g1, = torch.autograd.grad(TF.wiou_loss(p, t, version=version, iou_mean=torch.tensor(0.7, dtype=p.dtype),
                                               eps=1e-12, reduction="sum"), p)
        g2, = torch.autograd.grad(ref(p, t).sum(), p)
        torch.testing.assert_close(g1, g2)


def test_wiou_other_bases_wrap_family_losses():
    g = torch.Generator().manual_seed(3)
    p, t = _boxes(6, g), _boxes(6, g)
    mean = torch.tensor(0.6, dtype=p.dtype)
    beta = TF.iou_loss(p, t, reduction="none") / mean
    r = beta / (3.0 * 1.9 ** (beta - 3.0))
    for base in ("ciou", "eiou"):
        fam = getattr(TF, f"{base}_loss")(p, t, reduction="none")
        torch.testing.assert_close(TF.wiou_loss(p, t, iou_mean=mean, base=base, reduction="none"), fam * r)


def test_wiou_edges_and_errors():
    z = torch.zeros(0, 4, requires_grad=True)
    out = tailwise.WIoULoss()(z, torch.zeros(0, 4))
    assert out.item() == 0.0 and out.grad_fn is not None
    deg = torch.tensor([[1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    val = TF.wiou_loss(deg, deg.detach(), version="v1")
    val.backward()
    assert torch.isfinite(val) and torch.isfinite(deg.grad).all()
    with pytest.raises(ValueError, match="iou_mean"):
        TF.wiou_loss(deg, deg, version="v3")
    with pytest.raises(ValueError, match="version"):
        TF.wiou_loss(deg, deg, version="v4")
    with pytest.raises(ValueError, match="base"):
        tailwise.WIoULoss(base="siou")
    with pytest.raises(ValueError, match="inverted box"):
        TF.wiou_loss(torch.tensor([[2.0, 0.0, 1.0, 1.0]]), deg.detach(), version="v1")
    assert tailwise.wiou_momentum(890, 34) == pytest.approx(tailwise.WIOU_PRESETS["paper"][2])


def test_wiou_state_dict_and_eval():
    crit = tailwise.WIoULoss(momentum=0.5)
    g = torch.Generator().manual_seed(4)
    crit(_boxes(4, g, torch.float32), _boxes(4, g, torch.float32))
    saved = crit.iou_mean.clone()
    assert saved.item() != 1.0
    crit.eval()
    crit(_boxes(4, g, torch.float32), _boxes(4, g, torch.float32))
    assert crit.iou_mean.item() == saved.item()
    other = tailwise.WIoULoss()
    other.load_state_dict(crit.state_dict())
    assert other.iou_mean.item() == saved.item()


def _wiou_worker(rank, world, p, t):
    crit = tailwise.WIoULoss(momentum=0.3)
    ps = shard(p, rank, world).clone().requires_grad_(True)
    loss = crit(ps, shard(t, rank, world))
    loss.backward()
    return {"mean": crit.iou_mean, "loss": loss.detach(), "grad": ps.grad}


@pytest.mark.distributed
def test_wiou_two_ranks_equal_full_batch():
    g = torch.Generator().manual_seed(5)
    p, t = _boxes(10, g, torch.float32), _boxes(10, g, torch.float32)
    res = run_distributed(_wiou_worker, 2, p, t)
    full = tailwise.WIoULoss(momentum=0.3)
    pf = p.clone().requires_grad_(True)
    loss = full(pf, t)
    loss.backward()
    for r in res:
        torch.testing.assert_close(r["mean"], full.iou_mean)
    torch.testing.assert_close((res[0]["loss"] + res[1]["loss"]) / 2, loss.detach())
    torch.testing.assert_close(torch.cat([r["grad"] for r in res]) / 2, pf.grad)
